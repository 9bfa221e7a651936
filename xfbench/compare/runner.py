"""Run a plan: train every cell in its own worker process, then time the backends of each task in rounds.

Interleaved (the default), per device and task:
1. every backend's worker processes (``processes`` per backend, started once and kept for the run) prepare the
   task: process 0 of each backend, one at a time, trains and evaluates it (the cell's metrics and phase times),
   warms up and estimates its time per step; then the further processes, all at once (nothing of theirs is
   reported), build it, run one priming epoch and warm up;
2. the scheduler (``compare.schedule``) gives every live worker one timing turn per round, for ``rounds``
   rounds, one worker at a time, in a rotating order, with the same ``block_steps`` for every process of a backend;
3. each worker releases the task; the task's cells are complete and handed to ``on_cell`` (the journal writes them).
Sequential (``--sequential``): one backend's process at a time, all tasks, its turns back to back; for models that
don't fit in memory several times over, and to show what interleaving buys.

Isolation rules: a worker that crashes, hangs past ``timeout`` (per command) or raises makes its cell ``error`` (with
the training results it already had) and the other cells go on; a new worker takes its place for the next task;
a framework that is not installed gives ``unsupported`` cells without starting a process.
"""

from __future__ import annotations

import statistics
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from xfbench import backends
from xfbench.compare.cells import CellKey, CellState, assemble, summary
from xfbench.compare.engine.timing import block_steps_for
from xfbench.compare.plan import Plan
from xfbench.compare.platforms.base import Executor, PlanExecutor, WorkerError, request
from xfbench.compare.platforms.job import WorkerSpec
from xfbench.compare.platforms.local import LocalExecutor
from xfbench.compare.results.cell import Cell
from xfbench.compare.workers import Slot, Workers
from xfbench.machine import usable_cores
from xfbench.progress import Progress, as_progress


def unavailable(backend: str) -> tuple[str, str] | None:
    """Why ``backend`` cannot run here at all, as (status, reason): its framework is missing (``unsupported``) or its
    adapter module is broken (``error``); None when it can."""
    try:
        reason = backends.get(backend).unavailable_reason()
    except Exception as error:  # a broken adapter module: error cells, the other backends still run
        return "error", f"cannot load the adapter: {error}"
    return ("unsupported", reason) if reason else None


def fix_block(state: CellState, seconds_per_step: float, plan: Plan) -> None:
    """Fix the cell's timed block (and untimed start) from an estimate of its time per step: the same in every
    process of the cell."""
    state.block_steps = block_steps_for(seconds_per_step, plan.timing.min_block_s)
    state.untimed_steps = plan.timing.untimed_steps(seconds_per_step, state.block_steps)


class Runner:
    """Runs one plan through an executor; every finished cell goes to ``on_cell`` as soon as it is complete."""

    def __init__(self, plan: Plan, executor: Executor, progress: Progress, on_cell: Callable[[Cell], None],
                 done: Iterable[CellKey] = ()) -> None:
        self.plan = plan
        self.progress = progress
        self.on_cell = on_cell
        self.done = set(done)
        self.options = plan.timing
        self.workers = Workers(executor, plan.timeout, progress)

    def _slot(self, backend: str, device: str, process: int) -> Slot:
        plan = self.plan
        return Slot(WorkerSpec(backend, device, plan.threads, plan.tasks, plan.malloc), process, (backend, process))

    def _message(self, slot: Slot, task_index: int) -> dict[str, Any]:
        return {"op": "prepare", "task": task_index, "process": slot.process, "seeds": self.plan.seeds,
                "measure": self.plan.measure, "parity": self.plan.parity, "warmup_s": self.options.warmup_s}

    def _prepare(self, slot: Slot, state: CellState, task_index: int) -> None:
        what = "training" if slot.process == 0 else "priming"
        suffix = f" (process {slot.process + 1}/{self.options.processes})" if self.options.processes > 1 else ""
        self.progress(f"{state.task.name} on {slot.label}: {what}{suffix}")
        self.workers.prepare(slot, state, self._message(slot, task_index))

    def _time(self, pairs: list[tuple[Slot, CellState]]) -> None:
        """Timing rounds over every (slot, cell) whose cell is still ok; each cell's block is fixed once, from its
        process 0's estimate (timed alone; the others primed together)."""
        for _, state in pairs:
            if state.status != "ok" or state.block_steps is not None:
                continue
            first = state.prepared.get(0, {}).get("seconds_per_step")
            estimates = [first] if first else [reply["seconds_per_step"] for reply in state.prepared.values()
                                               if reply.get("seconds_per_step")]
            fix_block(state, statistics.median(estimates), self.plan)
        self.workers.time(pairs, self.options)

    def _finish(self, state: CellState) -> None:
        cell = assemble(state, self.plan)
        self.progress(f"{cell.task} on {cell.backend}/{cell.device.kind}: {summary(cell)}")
        self.progress.advance()
        self.on_cell(cell)

    def run(self) -> None:
        for device in self.plan.devices:
            runnable = []
            for backend in self.plan.backends:
                missing = unavailable(backend)
                if missing is None:
                    runnable.append(backend)
                    continue
                for task in self.plan.tasks:
                    if (task.name, backend, device) not in self.done:
                        state = CellState(task, backend, device)
                        state.fail(*missing)
                        self._finish(state)
            if self.options.schedule == "sequential":
                self._sequential(device, runnable)
            else:
                self._interleaved(device, runnable)

    def _interleaved(self, device: str, runnable: list[str]) -> None:
        slots = [self._slot(backend, device, process) for process in range(self.options.processes)
                 for backend in runnable]
        try:
            for index, task in enumerate(self.plan.tasks):
                todo = [backend for backend in runnable if (task.name, backend, device) not in self.done]
                if not todo:
                    continue
                session = uuid.uuid4().hex[:12]
                states = {backend: CellState(task, backend, device, session=session) for backend in todo}
                pairs = [(slot, states[slot.backend]) for slot in slots if slot.backend in states]
                for slot, state in pairs:
                    if slot.process == 0 and state.status == "ok":
                        self._prepare(slot, state, index)  # alone: its phase times are the cell's
                others = [(slot, state) for slot, state in pairs if slot.process > 0 and state.status == "ok"]
                if others:
                    self.workers.start_together(others)  # the first time: they import together
                    others = [(slot, state) for slot, state in others if state.status == "ok"]
                    if others:
                        self.progress(f"{task.name} on {device}: priming {len(others)} more processes together")
                        self.workers.prepare_together(others, lambda slot, index=index: self._message(slot, index))
                if self.plan.measure:
                    self.progress(f"{task.name} on {device}: timing {len(pairs)} workers in "
                                  f"{self.options.rounds} rounds")
                    self._time(pairs)
                for slot, state in pairs:
                    self.workers.release(slot, state)
                for backend in todo:
                    self._finish(states[backend])
        except BaseException:
            for slot in slots:
                self.workers.close(slot, graceful=False)
            raise
        for slot in slots:
            self.workers.close(slot)

    def _sequential(self, device: str, runnable: list[str]) -> None:
        for backend in runnable:
            states = {index: CellState(task, backend, device, session=uuid.uuid4().hex[:12])
                      for index, task in enumerate(self.plan.tasks) if (task.name, backend, device) not in self.done}
            for process in range(self.options.processes):
                slot = self._slot(backend, device, process)
                try:
                    for index, state in states.items():
                        if state.status != "ok":
                            continue
                        self._prepare(slot, state, index)
                        if self.plan.measure:
                            self._time([(slot, state)])
                        self.workers.release(slot, state)
                except BaseException:
                    self.workers.close(slot, graceful=False)
                    raise
                self.workers.close(slot)
            for state in states.values():
                self._finish(state)


def run_plan(plan: Plan, progress: Progress | Callable[[str], Any] | None = None,
             on_cell: Callable[[Cell], None] | None = None, done: Iterable[CellKey] = (),
             executor: Executor | None = None) -> list[Cell]:
    """Run every cell of the plan not in ``done``; returns the cells in plan order (task, device, backend).

    ``on_cell`` sees each cell as soon as it is complete. Every worker is stopped when this returns or raises
    (Ctrl-C included).
    """
    cells: list[Cell] = []

    def keep(cell: Cell) -> None:
        cells.append(cell)
        if on_cell is not None:
            on_cell(cell)

    with executor or LocalExecutor() as running:
        Runner(plan, running, as_progress(progress), keep, done).run()
    return sorted(cells, key=plan.order)


class LocalPlanExecutor(PlanExecutor):
    """Every cell on this machine, in worker processes of a :class:`LocalExecutor` (the default executor)."""

    kind = "local"

    def run(self, plan: Plan, progress: Progress | None, on_cell: Callable[[Cell], None] | None,
            done: list[Cell]) -> None:
        run_plan(plan, progress, on_cell, done=[cell.key for cell in done])


def probe_backends(timeout: float = 120.0) -> list[list[str]]:
    """Rows (backend, what, status, versions, devices) for ``xfbench list``; each framework imported in a worker of its
    own, all at once (an import is mostly one thread)."""
    rows: list[list[str] | str] = []  # a row, or the probe key a row waits for
    probes: dict[str, Any] = {}
    with LocalExecutor() as executor:
        for name in backends.backend_names():
            try:
                backend = backends.get(name)
            except Exception as error:  # a broken adapter module: say so, list the others
                rows.append([name, backends.describe(name), "broken", "-", f"cannot load the adapter: {error}"])
                continue
            reason = backend.unavailable_reason()
            if reason:
                rows.append([name, backends.describe(name), "not installed", "-", reason])
                continue
            key = f"{backend.module} {sorted(backend.process_env().items())}"  # Keras: one probe per Keras backend
            if key not in probes:
                probes[key] = executor.start(WorkerSpec(name, "cpu", usable_cores()))  # not pinned to one core
            rows.append(f"{name}\n{key}")
        seen: dict[str, dict[str, Any] | str] = {}
        for key, worker in probes.items():
            try:
                seen[key] = request(worker, None, "ready", timeout, "importing the framework")
                worker.close()
            except WorkerError as error:
                seen[key] = str(error)
    out = []
    for row in rows:
        if isinstance(row, list):
            out.append(row)
            continue
        name, key = row.split("\n", 1)
        info = seen[key]
        if isinstance(info, str):
            out.append([name, backends.describe(name), "broken", "-", info])
            continue
        versions = ", ".join(f"{item} {value}" for item, value in info["versions"].items())
        devices = "; ".join(f"{d['kind']}: {d['name']}" for d in info["devices"])
        out.append([name, backends.describe(name), "installed", versions, devices])
    return out
