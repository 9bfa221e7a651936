"""``xfbench ab``: the same matrix in two environments (base and head), timed together, gated by a paired test.

For every cell (task, backend, device) and every one of ``pairs`` fresh *process pairs*:
1. a base worker (``--base-python``) and a head worker (``--head-python``) start together (they import their
   frameworks at the same time), then prepare the cell one after the other: in the first pair each trains and
   evaluates it (its accuracy is in the result), in the others each builds it and runs one priming epoch;
2. the two take alternating timing turns (``compare.schedule`` with two participants: base-head, head-base, ...),
   with the same ``block_steps`` in both arms and every pair (fixed from the first pair's estimates);
3. both exit. The process pair is the unit of replication (``compare.stats.gate``), and the pairs are taken
   *pair-major*: pair 1 of every cell, then pair 2 of every cell, and so on, so a cell's pairs are spread over
   the whole run instead of back to back (a shift of the machine lasting a minute or two then reaches one pair of
   several cells, not every pair of one). The default number of pairs is even, so each arm starts first in half.
Then ``compare.stats.gate`` gives each cell a verdict. Nothing is shared between the arms but the task: each worker
runs its own environment's xfbench and frameworks. The job each worker reads is written in a format its xfbench
knows (``compare.platforms.job``, probed before any work starts), so the arms may be xfbench versions apart.

Only the steady-state step time is gated. Training and phase times are recorded per arm but not compared: each
arm's import ran beside the other's.
"""

from __future__ import annotations

import statistics
import uuid
from collections.abc import Callable
from typing import Any

from xfbench.compare.arms import DEFAULT_PAIRS, Arm
from xfbench.compare.cells import CellState, assemble
from xfbench.compare.engine.timing import SLOWDOWN_ENV
from xfbench.compare.plan import Plan
from xfbench.compare.platforms.base import Executor
from xfbench.compare.platforms.job import WorkerSpec
from xfbench.compare.platforms.local import LocalExecutor
from xfbench.compare.results.ab import AbResult
from xfbench.compare.results.result import Result
from xfbench.compare.runner import fix_block, unavailable
from xfbench.compare.stats.gate import AB_METHOD, ALPHA, MIN_EFFECT, ab_verdicts
from xfbench.compare.stats.ratios import compare_result
from xfbench.compare.workers import Slot, Workers
from xfbench.progress import Progress, as_progress


class AbRunner:
    """Runs every cell of ``plan`` in both arms, pair by pair, with a :class:`~xfbench.compare.workers.Workers`;
    ``on_pair`` sees every (base cell, head cell) measured so far after each process pair."""

    def __init__(self, plan: Plan, executor: Executor, progress: Progress, arms: tuple[Arm, Arm], pairs: int,
                 on_pair: Callable[[list[tuple[Any, Any]]], None]) -> None:
        self.plan = plan
        self.progress = progress
        self.options = plan.timing
        self.arms = arms
        self.pairs = pairs
        self.on_pair = on_pair
        self.workers = Workers(executor, plan.timeout, progress)

    def _slot(self, arm: Arm, backend: str, device: str, pair: int) -> Slot:
        plan = self.plan
        spec = WorkerSpec(backend, device, plan.threads, plan.tasks, plan.malloc, python=arm.python, env=arm.env,
                          job_version=arm.job_version)
        return Slot(spec, pair, key=arm.name, name=arm.name)

    def _prepare_both(self, slots: list[Slot], states: dict[str, CellState], task_index: int, pair: int) -> None:
        """Both workers import at once (an import is mostly one thread), then prepare one after the other: two
        frameworks training at once on the same cores oversubscribe them (torch's tiny MLP trained 20x slower),
        and the warm-up estimates the time per step that fixes the block size."""
        what = "training" if pair == 0 else "priming"
        self.progress(f"{states['base'].task.name} on {slots[0].backend}/{slots[0].device}: {what} base and head "
                      f"(pair {pair + 1}/{self.pairs})")
        message = {"op": "prepare", "task": task_index, "process": pair, "seeds": 1, "measure": True,
                   "parity": None, "warmup_s": self.options.warmup_s}
        self.workers.start_together([(slot, states[slot.name]) for slot in slots])
        for slot in slots:
            state = states[slot.name]
            if slot.worker is not None and state.status == "ok":
                self.workers.prepare(slot, state, message)

    def _time_pair(self, slots: list[Slot], states: dict[str, CellState]) -> None:
        base, head = states["base"], states["head"]
        if base.block_steps is None:  # the same block size in both arms and every pair, from the first pair
            seconds_per_step = statistics.mean(states[slot.name].prepared[slot.process]["seconds_per_step"]
                                               for slot in slots)
            fix_block(base, seconds_per_step, self.plan)
            fix_block(head, seconds_per_step, self.plan)
        self.workers.time([(slot, states[slot.name]) for slot in slots], self.options, order="rotate")

    def _pair(self, device: str, task_index: int, backend: str, states: dict[str, CellState], pair: int) -> None:
        """Process pair ``pair`` of one cell: both workers start, prepare, take their alternating turns and exit."""
        task = self.plan.tasks[task_index]
        order = self.arms if pair % 2 == 0 else self.arms[::-1]  # who starts, and who times first, alternates
        slots = [self._slot(arm, backend, device, pair) for arm in order]
        try:
            self._prepare_both(slots, states, task_index, pair)
            if all(state.status == "ok" for state in states.values()):
                self._time_pair(slots, states)
            for slot in slots:
                self.workers.release(slot, states[slot.name])
        except BaseException:  # Ctrl-C, SIGTERM: the workers may be mid-command; kill them now
            for slot in slots:
                self.workers.close(slot, graceful=False)
            raise
        for slot in slots:
            self.workers.close(slot)
        base, head = (states[arm.name] for arm in self.arms)
        self.progress(f"{task.name} on {backend}/{device}, pair {pair + 1}/{self.pairs}: "
                      + (f"head/base {self._pair_ratio(base, head, pair)}" if base.status == head.status == "ok"
                         else f"failed ({base.error or head.error})"))
        self.progress.advance()

    @staticmethod
    def _pair_ratio(base: CellState, head: CellState, pair: int) -> str:
        def median(state: CellState) -> float:
            return statistics.median(value for turn in state.turns if turn.process == pair for value in turn.block_ms)

        try:
            return f"{median(head) / median(base):.3f}"
        except (statistics.StatisticsError, ZeroDivisionError):
            return "not measured"

    def run(self) -> None:
        """Pair-major: the first process pair of every cell, then the second of every cell, and so on.

        A shift of the machine that lasts a minute or two (measured here: both arms' processes of one cell 3-13%
        apart for all five of its back-to-back pairs, an A/A false alarm) then falls on one pair of many cells
        instead of on every pair of one cell, where the test over pairs sees it as the between-pair variance it is.
        ``on_pair`` gets every cell's (base, head) so far after each pair (the document is saved then)."""
        cells: list[tuple[str, int, str, dict[str, CellState]]] = []
        finished: list[tuple[Any, Any]] = []  # cells that cannot run: final from the start
        for device in self.plan.devices:
            for index, task in enumerate(self.plan.tasks):
                for backend in self.plan.backends:
                    missing = unavailable(backend)
                    if missing is not None:
                        state = CellState(task, backend, device)
                        state.fail(*missing)
                        finished.append((assemble(state, self.plan), assemble(state, self.plan)))
                        continue
                    session = uuid.uuid4().hex[:12]
                    cells.append((device, index, backend, {arm.name: CellState(task, backend, device, session=session)
                                                           for arm in self.arms}))
        started: dict[int, dict[str, CellState]] = {}  # by position in ``cells``: the order of the first pair

        def report() -> None:
            self.on_pair(finished + [(assemble(states["base"], self.plan), assemble(states["head"], self.plan))
                                     for states in started.values()])

        if finished:
            report()
        for pair in range(self.pairs):
            for position, (device, index, backend, states) in enumerate(cells):
                if any(state.status != "ok" for state in states.values()):
                    continue  # failed in an earlier pair: kept as it is
                self._pair(device, index, backend, states, pair)
                started.setdefault(position, states)
                report()




def run_ab(plan: Plan, base: Arm, head: Arm, pairs: int = DEFAULT_PAIRS, min_effect: float = MIN_EFFECT,
           alpha: float = ALPHA, progress: Progress | Callable[[str], Any] | None = None, output: str | None = None,
           allow_missing: bool = False, executor: Executor | None = None) -> AbResult:
    """Run ``plan`` in both arms and decide every cell. With ``output``, the document so far is rewritten
    (atomically) after every process pair, so an interrupted comparison keeps what it measured."""
    config = {**plan.describe(), "pairs": pairs, "min_effect": min_effect, "alpha": alpha, "allow_missing": allow_missing,
              "inject_slowdown": head.env.get(SLOWDOWN_ENV) or base.env.get(SLOWDOWN_ENV)}
    arms = {arm.name: arm.describe() for arm in (base, head)}
    outcome = AbResult(base=Result(config={**config, "arm": "base", "arm_info": arms["base"]}),
                       head=Result(config={**config, "arm": "head", "arm_info": arms["head"]}),
                       arms=arms, config=config, complete=False, method=AB_METHOD)

    def decide() -> None:
        outcome.verdicts = ab_verdicts(outcome.base, outcome.head, min_effect, alpha)

    def keep(cells: list[tuple[Any, Any]]) -> None:
        outcome.base.cells = [base_cell for base_cell, _ in cells]
        outcome.head.cells = [head_cell for _, head_cell in cells]
        if output:
            decide()
            outcome.save(output)

    with executor or LocalExecutor() as running:
        AbRunner(plan, running, as_progress(progress), (base, head), pairs, keep).run()
    outcome.complete = True
    for result in (outcome.base, outcome.head):
        result.cells.sort(key=plan.order)
        compare_result(result, plan.relative_to)
    decide()
    if output:
        outcome.save(output)
    return outcome
