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

import json
import os
import statistics
import subprocess
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from xfbench.compare.cells import CellState, assemble
from xfbench.compare.engine.timing import SLOWDOWN_ENV, injected_slowdown
from xfbench.compare.plan import Plan
from xfbench.compare.platforms.base import Executor
from xfbench.compare.platforms.job import WorkerSpec, common_version
from xfbench.compare.platforms.local import LocalExecutor
from xfbench.compare.protocol import TimingOptions
from xfbench.compare.results.ab import AbResult
from xfbench.compare.results.result import Result
from xfbench.compare.runner import fix_block, unavailable
from xfbench.compare.stats.gate import AB_METHOD, ALPHA, MIN_EFFECT, ab_verdicts
from xfbench.compare.stats.ratios import compare_result
from xfbench.compare.workers import Slot, Workers
from xfbench.errors import XfbenchError
from xfbench.progress import Progress, as_progress

DEFAULT_PAIRS = 6  # even: each arm starts first, and times first, in half of the pairs
# Turns of one cell's two workers are 10 to 35% apart on this shared machine (2 cores, measured Dec 2026), so a
# pair needs many rounds for its ratio to settle; 30 rounds of 0.1 s keep one task x four backends within minutes.
DEFAULT_TIMING = TimingOptions(rounds=30, turn_s=0.1, min_blocks=2, untimed_s=None,
                               imports="each pair's base and head workers together")
# Runs in the other environment: works with every xfbench version (the job versions its worker reads: version 0
# where xfbench.compare.worker has no JOB_VERSIONS)
PROBE = ("import json, platform, sys\n"
         "import xfbench\n"
         "import xfbench.compare.worker as worker\n"
         "from xfbench.machine import git_commit\n"
         "print(json.dumps({'xfbench': xfbench.__version__, 'location': xfbench.__file__, 'commit': git_commit(),\n"
         "                  'python_version': platform.python_version(), 'executable': sys.executable,\n"
         "                  'job_versions': list(getattr(worker, 'JOB_VERSIONS', [0]))}))\n")


@dataclass
class Arm:
    """One side of the comparison: an interpreter (its environment's xfbench and frameworks) and extra variables."""

    name: str
    python: str
    env: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"python": self.python, "env": self.env, **self.info}

    @property
    def job_version(self) -> int:
        """The job format this arm's worker reads (found by :func:`probe_arm`)."""
        return int(self.info.get("job_version", 0))


def probe_arm(name: str, python: str, env: dict[str, str] | None = None, timeout: float = 120.0) -> Arm:
    """Check that ``python`` runs and imports xfbench (before any work starts); the arm with what it found."""
    flag = f"--{name}-python"
    if not python or not isinstance(python, str):
        raise XfbenchError(f"{flag} is empty; give the interpreter of a virtual environment, e.g. base-env/bin/python")
    if not os.path.isfile(python) or not os.access(python, os.X_OK):
        raise XfbenchError(f"{flag} {python!r} is not an executable file; give e.g. base-env/bin/python")
    python = os.path.abspath(python)  # the probe and the workers run elsewhere; a symlink stays one (a venv's python)
    try:
        out = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
                             cwd=tempfile.gettempdir())  # not this folder: ``-c`` puts it first on sys.path
    except (OSError, subprocess.SubprocessError) as error:
        raise XfbenchError(f"{flag} {python!r} does not run: {error}") from None
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise XfbenchError(f"{flag} {python!r} cannot import xfbench ({last}); install it into that environment: "
                           f"{python} -m pip install 'xfbench[all]'")
    info = json.loads(lines[-1])
    version = common_version(info.get("job_versions", [0]))
    if version is None:
        raise XfbenchError(f"{flag} {python!r} runs xfbench {info.get('xfbench')}, whose worker reads job versions "
                           f"{info.get('job_versions')}, none of which this xfbench writes; install one xfbench in both")
    return Arm(name, python, dict(env or {}), {**info, "job_version": version})


def check_slowdown(value: str | None) -> str | None:
    """The ``--inject-slowdown`` value (``0.2`` or ``torch=0.2,jax=0.1``), or the one-line error."""
    if value is None:
        return None
    try:
        names = [item.partition("=")[0].strip() for item in value.split(",")] if "=" in value else []
        fractions = [injected_slowdown(name, value) for name in names] if names else [injected_slowdown("", value)]
    except ValueError:
        raise XfbenchError(f"--inject-slowdown {value!r}: give a fraction such as 0.2, or BACKEND=FRACTION,...") from None
    if any(not 0 <= fraction <= 10 for fraction in fractions):
        raise XfbenchError(f"--inject-slowdown {value!r}: each fraction must be between 0 and 10")
    return value


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




def ab_request(base_python: str, head_python: str, tasks: Any = None, backends: Any = None,
               threads: int | None = None, epochs: int | None = None, pairs: int | None = None,
               rounds: int | None = None, turn_s: float | None = None, min_effect: float = MIN_EFFECT,
               alpha: float = ALPHA, timeout: float = 600.0, inject_slowdown: str | None = None
               ) -> tuple[Plan, Arm, Arm, int]:
    """Validate an ``ab`` request (CLI and Python API alike) and probe both interpreters, before any work starts;
    returns the plan, the two arms and the number of pairs."""
    from xfbench.compare.plan import make_plan
    from xfbench.compare.stats.gate import check_settings

    pairs = DEFAULT_PAIRS if pairs is None else pairs
    if isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 2:
        raise XfbenchError(f"--pairs must be at least 2 (the process pair is the unit of replication), got {pairs!r}")
    check_settings(min_effect, alpha)
    slowdown = check_slowdown(inject_slowdown)
    plan = make_plan(tasks, backends, "cpu", threads, epochs, timeout,
                     timing=DEFAULT_TIMING.changed(rounds=rounds, turn_s=turn_s, processes=pairs))
    base = probe_arm("base", base_python)
    head = probe_arm("head", head_python, {SLOWDOWN_ENV: slowdown} if slowdown else None)
    return plan, base, head, pairs


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
