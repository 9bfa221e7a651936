"""The timing protocol of a run: how long and how finely the steady state is timed (``TimingOptions``), checked
by ``compare.plan`` and recorded in every cell (``timing.protocol``). The harness that carries it out in each worker
is ``compare.engine.timing``; the scheduler that gives the turns, ``compare.schedule``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from xfbench.compare.engine.timing import block_steps_for

SCHEDULES = ("interleaved", "sequential")
ORDERS = ("rotate", "shuffle")
IMPORTS = {"interleaved": "process 0 of each backend imports and trains alone (its times are the ones reported), "
                          "then the other processes import together and prime together",
           "sequential": "one worker at a time"}


@dataclass(frozen=True)
class TimingOptions:
    """How long and how finely to time the steady state. ``quick()`` is for tests.

    The defaults (``xfbench run``'s) are many short turns: a 10 ms untimed start and one timed block of >= 30 ms
    (``turn_s`` is below a block's length: a second block only when the machine runs three times faster than the
    warm-up estimate), in 20 rounds. On this project's 2-core machine the noise of a turn is mostly the turn's own
    (its blocks agree with each other more than with the next turn's, 50 ms later), so a turn's first block alone
    estimated the between-backend ratios nearly as well as its three blocks (between-run sd 7.1% vs 6.3%, five
    runs of mlp and cnn28), at a third of the time: shorter turns and more rounds buy more precision per second."""

    warmup_s: float = 0.3
    min_block_s: float = 0.03
    turn_s: float = 0.01
    min_blocks: int = 1
    rounds: int = 20
    warmup_rounds: int = 1
    processes: int = 2
    order: str = "rotate"
    schedule: str = "interleaved"
    imports: str | None = None  # how the workers' imports overlapped, in words; None: what the schedule does
    untimed_s: float | None = 0.01  # untimed seconds at the start of each turn; None: one block of block_steps

    @classmethod
    def quick(cls, **changes: Any) -> TimingOptions:
        """Short turns and few rounds, for tests: numbers, not good measurements."""
        values = {"warmup_s": 0.02, "min_block_s": 0.005, "turn_s": 0.01, "min_blocks": 2, "rounds": 3,
                  "warmup_rounds": 0, "processes": 1, "untimed_s": 0.002, **changes}
        return cls(**values)

    def changed(self, **values: Any) -> TimingOptions:
        """A copy with the given fields changed; a value of None leaves its field as it is (a flag not given).

        Example:
            >>> TimingOptions().changed(rounds=20, processes=None).rounds
            20
        """
        return replace(self, **{key: value for key, value in values.items() if value is not None})

    def describe(self) -> dict[str, Any]:
        """The measurement settings, recorded in each cell."""
        imports = self.imports or IMPORTS[self.schedule if self.processes > 1 else "sequential"]
        untimed = "one untimed block" if self.untimed_s is None else f"{self.untimed_s:g} s of untimed steps"
        return {"sync": "one device sync per block", "turn": f"{untimed}, then timed blocks",
                **asdict(self), "imports": imports}

    def untimed_steps(self, seconds_per_step: float, block_steps: int) -> int:
        """Untimed steps at the start of each turn: ``untimed_s`` seconds' worth (at least one), or one block.

        Example:
            >>> TimingOptions(untimed_s=0.01).untimed_steps(0.001, 30), TimingOptions(untimed_s=None).untimed_steps(0.001, 30)
            (10, 30)
        """
        if self.untimed_s is None:
            return block_steps
        return min(block_steps, block_steps_for(seconds_per_step, self.untimed_s))
