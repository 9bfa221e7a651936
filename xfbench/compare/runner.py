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
from dataclasses import dataclass, field
from typing import Any

from xfbench import backends
from xfbench.compare.executor import (
    ChannelClosedError,
    Executor,
    LocalExecutor,
    PlanExecutor,
    WorkerError,
    WorkerHandle,
    WorkerSpec,
    request,
)
from xfbench.compare.plan import Plan
from xfbench.compare.result import Cell, Device, Memory, Parity, ProcessPhases, StepStats, Timing, Turn
from xfbench.compare.schedule import TurnError, TurnRecord, run_rounds
from xfbench.compare.timing import block_steps_for
from xfbench.tasks import Task

Progress = Callable[[str], None]
CellKey = tuple[str, str, str]


@dataclass
class Slot:
    """Process number ``process`` of one backend on one device, and its worker while it runs."""

    backend: str
    device: str
    process: int
    worker: WorkerHandle | None = None
    ready: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.backend}/{self.device}"


@dataclass
class CellState:
    """What is known of one cell while it runs: per process, the worker's ``ready``, ``prepared`` and ``released``
    messages, the turns timed so far, and the first failure."""

    task: Task
    backend: str
    device: str
    status: str = "ok"
    error: str | None = None
    ready: dict[int, dict[str, Any]] = field(default_factory=dict)
    prepared: dict[int, dict[str, Any]] = field(default_factory=dict)
    released: dict[int, dict[str, Any]] = field(default_factory=dict)
    turns: list[Turn] = field(default_factory=list)
    turn_replies: list[dict[str, Any]] = field(default_factory=list)
    block_steps: int | None = None
    untimed_steps: int | None = None
    session: str | None = None

    def fail(self, status: str, error: str) -> None:
        if self.status == "ok":
            self.status, self.error = status, error


def _summary(cell: Cell) -> str:
    if not cell.ok:
        return f"{cell.status}: {cell.error}"
    metrics = ", ".join(f"{name} {value:.4g}" for name, value in cell.metrics.items()
                        if name in ("accuracy", "r2") and value is not None)
    step = cell.step_ms()
    return f"ok ({metrics}{f', {step:.3g} ms/step' if step is not None else ''})"


class Runner:
    """Runs one plan through an executor; every finished cell goes to ``on_cell`` as soon as it is complete."""

    def __init__(self, plan: Plan, executor: Executor, progress: Progress, on_cell: Callable[[Cell], None],
                 done: Iterable[CellKey] = ()) -> None:
        self.plan = plan
        self.executor = executor
        self.progress = progress
        self.on_cell = on_cell
        self.done = set(done)
        self.options = plan.timing

    # ------------------------------------------------------------------------------------------- workers
    def _request(self, slot: Slot, message: dict[str, Any] | None, expect: str, doing: str) -> dict[str, Any]:
        """One command to the slot's worker and its answer; a worker that fails is dropped (:class:`WorkerError`)."""
        assert slot.worker is not None
        try:
            return request(slot.worker, message, expect, self.plan.timeout, doing)
        except WorkerError:
            slot.worker = None
            raise

    def _launch(self, slot: Slot) -> None:
        """Start the slot's worker (it imports its framework meanwhile; ``ready`` says when it is done)."""
        slot.worker = self.executor.start(WorkerSpec(slot.backend, slot.device, self.plan.threads, self.plan.tasks,
                                                     self.plan.malloc))

    def _start(self, slot: Slot) -> None:
        """The slot's worker started, if it is not yet, and its framework imported."""
        if slot.worker is None:
            self._launch(slot)
        if not slot.ready:
            slot.ready = self._request(slot, None, "ready", "importing the framework")

    def _start_together(self, pairs: list[tuple[Slot, CellState]]) -> None:
        """Start the workers of every slot not yet running at once and wait until each has imported its framework.

        Only processes after the first of each backend: their import times are not the ones reported (each
        backend's process 0 imports alone), and nothing is measured while they import. An import is mostly one
        thread, so on this 2-core machine the four default backends' second processes start in about half the time
        (the default run was 8 s shorter). A worker that cannot start fails its cell, as in :meth:`_prepare`."""
        waiting = []
        for slot, state in pairs:
            if slot.worker is not None:
                continue
            try:
                self._launch(slot)
            except OSError as error:
                state.fail("error", f"cannot start the worker: {error}")
                continue
            waiting.append((slot, state))
        for slot, state in waiting:
            try:
                slot.ready = self._request(slot, None, "ready", "importing the framework")
            except WorkerError as failure:
                state.fail("error", str(failure))

    def _close(self, slot: Slot, graceful: bool = True) -> None:
        """End the slot's worker: asked to exit (``graceful``), or killed at once (an interruption: it may be hung)."""
        if slot.worker is not None:
            if graceful:
                slot.worker.close()
            else:
                slot.worker.kill()
            slot.worker = None

    # ------------------------------------------------------------------------------------------- phases
    def _prepare(self, slot: Slot, state: CellState, task_index: int) -> None:
        what = "training" if slot.process == 0 else "priming"
        suffix = f" (process {slot.process + 1}/{self.options.processes})" if self.options.processes > 1 else ""
        self.progress(f"{state.task.name} on {slot.label}: {what}{suffix}")
        try:
            self._start(slot)
            reply = self._request(slot, self._prepare_message(slot, task_index), "prepared", "running")
        except WorkerError as failure:
            state.fail("error", str(failure))
            return
        self._keep_prepared(slot, state, reply)

    def _prepare_message(self, slot: Slot, task_index: int) -> dict[str, Any]:
        return {"op": "prepare", "task": task_index, "process": slot.process, "seeds": self.plan.seeds,
                "measure": self.plan.measure, "parity": self.plan.parity, "warmup_s": self.options.warmup_s}

    def _keep_prepared(self, slot: Slot, state: CellState, reply: dict[str, Any]) -> None:
        state.ready[slot.process] = slot.ready
        state.prepared[slot.process] = reply
        if reply.get("status") != "ok":
            state.fail(reply.get("status", "error"), reply.get("error") or "the worker gave no reason")

    def _prime_together(self, pairs: list[tuple[Slot, CellState]], task_index: int) -> None:
        """Prepare the timing-only processes (after the first of each backend) all at once: each builds the task,
        runs its priming epoch and warms up while the others do. Nothing of theirs is reported but when they ran
        (``block_steps`` comes from process 0's estimate, timed alone), and on this 2-core machine the four
        default backends' second processes prime in about half the time, as their imports do. A worker that fails
        fails its cell, as in :meth:`_prepare`."""
        if not pairs:
            return
        self.progress(f"{pairs[0][1].task.name} on {pairs[0][0].device}: priming {len(pairs)} more processes "
                      "together")
        sent = []
        for slot, state in pairs:
            try:
                self._start(slot)
            except WorkerError as failure:
                state.fail("error", str(failure))
                continue
            try:
                slot.worker.send(self._prepare_message(slot, task_index))  # type: ignore[union-attr]
            except ChannelClosedError:
                pass  # the worker is gone: awaiting its answer below describes it, as for any command
            sent.append((slot, state))
        for slot, state in sent:
            try:
                self._keep_prepared(slot, state, self._request(slot, None, "prepared", "priming"))
            except WorkerError as failure:
                state.fail("error", str(failure))

    def _participant(self, slot: Slot, state: CellState) -> Callable[[], dict[str, Any]]:
        def turn() -> dict[str, Any]:
            if state.status != "ok":
                raise TurnError(state.error or "failed")
            try:
                reply = self._request(slot, {"op": "turn", "block_steps": state.block_steps,
                                             "untimed_steps": state.untimed_steps, "turn_s": self.options.turn_s,
                                             "min_blocks": self.options.min_blocks},
                                       "turn", "timing")
            except WorkerError as failure:
                state.fail("error", f"during timing: {failure}")
                raise TurnError(str(failure)) from None
            if reply.get("event") == "error":
                state.fail("error", f"during timing: {reply.get('error')}")
                raise TurnError(str(reply.get("error")))
            return reply
        return turn

    def _time(self, pairs: list[tuple[Slot, CellState]]) -> None:
        """Timing rounds over every (slot, cell) whose cell is still ok."""
        live = [(slot, state) for slot, state in pairs if state.status == "ok" and slot.worker is not None]
        for state in {id(state): state for _, state in live}.values():
            if state.block_steps is not None:  # fixed once per cell: the same for every process (sequential too)
                continue
            first = state.prepared.get(0, {}).get("seconds_per_step")  # timed alone (the others primed together)
            estimates = [first] if first else [state.prepared[p]["seconds_per_step"] for p in state.prepared
                                               if state.prepared[p].get("seconds_per_step")]
            seconds_per_step = statistics.median(estimates)
            state.block_steps = block_steps_for(seconds_per_step, self.options.min_block_s)
            state.untimed_steps = self.options.untimed_steps(seconds_per_step, state.block_steps)
        participants = {(slot.backend, slot.process): self._participant(slot, state) for slot, state in live}
        states = {(slot.backend, slot.process): state for slot, state in live}

        def record(turn: TurnRecord) -> None:
            _, process = turn.key  # type: ignore[misc]
            state = states[turn.key]
            state.turns.append(Turn(process, turn.round, turn.position, round(turn.start_s, 4),
                                    turn.value["block_ms"]))
            state.turn_replies.append(turn.value)

        run_rounds(participants, self.options.rounds, self.options.order, on_turn=record,
                   warmup_rounds=self.options.warmup_rounds)

    def _release(self, slot: Slot, state: CellState) -> None:
        if slot.worker is None:
            return
        try:
            state.released[slot.process] = self._request(slot, {"op": "release"}, "released", "releasing the task")
        except WorkerError:
            pass  # the measurement is complete; the worker is replaced for the next task

    # -------------------------------------------------------------------------------------------- cells
    def _finish(self, state: CellState) -> None:
        cell = assemble(state, self.plan)
        self.progress(f"{cell.task} on {cell.backend}/{cell.device.kind}: {_summary(cell)}")
        advance = getattr(self.progress, "advance", None)
        if advance is not None:
            advance()
        self.on_cell(cell)

    def _unavailable(self, backend: str) -> tuple[str, str] | None:
        try:
            reason = backends.get(backend).unavailable_reason()
        except Exception as error:  # a broken adapter module: error cells, the other backends still run
            return "error", f"cannot load the adapter: {error}"
        return ("unsupported", reason) if reason else None

    def run(self) -> None:
        for device in self.plan.devices:
            runnable = []
            for backend in self.plan.backends:
                missing = self._unavailable(backend)
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
        slots = [Slot(backend, device, process) for process in range(self.options.processes) for backend in runnable]
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
                    self._start_together(others)  # the first time: they import together
                    self._prime_together([(slot, state) for slot, state in others if state.status == "ok"], index)
                if self.plan.measure:
                    self.progress(f"{task.name} on {device}: timing {len(pairs)} workers in "
                                  f"{self.options.rounds} rounds")
                    self._time(pairs)
                for slot, state in pairs:
                    self._release(slot, state)
                for backend in todo:
                    self._finish(states[backend])
        except BaseException:
            for slot in slots:
                self._close(slot, graceful=False)
            raise
        for slot in slots:
            self._close(slot)

    def _sequential(self, device: str, runnable: list[str]) -> None:
        for backend in runnable:
            states = {index: CellState(task, backend, device, session=uuid.uuid4().hex[:12])
                      for index, task in enumerate(self.plan.tasks) if (task.name, backend, device) not in self.done}
            for process in range(self.options.processes):
                slot = Slot(backend, device, process)
                try:
                    for index, state in states.items():
                        if state.status != "ok":
                            continue
                        self._prepare(slot, state, index)
                        if self.plan.measure:
                            self._time([(slot, state)])
                        self._release(slot, state)
                except BaseException:
                    self._close(slot, graceful=False)
                    raise
                self._close(slot)
            for state in states.values():
                self._finish(state)


def assemble(state: CellState, plan: Plan) -> Cell:
    """The cell from what its workers sent: process 0's training results, every process's timed turns."""
    first = state.prepared.get(0, {})
    ready = state.ready.get(0, {})
    cell = Cell(task=state.task.name, backend=state.backend, device=Device(state.device, first.get("device_name")),
                status=state.status, error=state.error, task_hash=state.task.spec_hash,
                versions=ready.get("versions", {}), threads=plan.threads if first else None,
                fingerprint=first.get("fingerprint", {}), metrics=first.get("metrics", {}),
                seed_metrics=first.get("seed_metrics", []) if plan.seeds > 1 else [], curve=first.get("curve", []))
    if first.get("parity"):
        cell.parity = Parity.from_worker(first["parity"])
    timing = Timing(import_s=ready.get("import_s"), protocol=plan.timing.describe() if plan.measure else {},
                    session=state.session if plan.measure else None)
    phases = first.get("phases", {})
    for name in ("build_s", "first_step_s", "train_s", "eval_s"):
        setattr(timing, name, phases.get(name))
    for process, prepared in sorted(state.prepared.items()):
        released = state.released.get(process, {})
        timing.processes.append(ProcessPhases(
            process=process, pid=state.ready.get(process, {}).get("pid"),
            import_s=state.ready.get(process, {}).get("import_s"),
            **{name: prepared.get("phases", {}).get(name) for name in ("build_s", "first_step_s", "train_s", "eval_s")},
            trained_epochs=prepared.get("phases", {}).get("trained_epochs", 0),
            peak_rss_mb=released.get("peak_rss_mb", prepared.get("peak_rss_mb")),
        ))
    if state.turns:
        timing.turns = state.turns
        timing.step_ms = StepStats.of(timing.blocks())
        timing.block_steps = state.block_steps
        timing.untimed_steps = state.untimed_steps
        timing.timed_steps = sum(reply["steps"] for reply in state.turn_replies)
        timing.samples_per_s = state.task.batch_size / (timing.step_ms.median / 1e3)
        faults = [reply.get("page_faults") for reply in state.turn_replies]
        if None not in faults and timing.timed_steps:
            timing.page_faults_per_step = sum(faults) / timing.timed_steps  # type: ignore[arg-type]
        timing.recompiles = _recompiles(state)
    released = state.released.get(0, {})
    cell.memory = Memory(peak_rss_mb=released.get("peak_rss_mb", first.get("peak_rss_mb")),
                         device_peak_mb=released.get("device_peak_mb", first.get("device_peak_mb")))
    cell.timing = timing
    return cell


def _recompiles(state: CellState) -> int | None:
    """Traces/compiles during the timed turns, over every process (None where the backend does not compile)."""
    total = 0
    for process, prepared in state.prepared.items():
        before = prepared.get("compiles")
        after = [reply.get("compiles") for reply, turn in zip(state.turn_replies, state.turns, strict=True)
                 if turn.process == process]
        if before is None or not after or after[-1] is None:
            return None
        total += after[-1] - before
    return total


def run_plan(plan: Plan, progress: Progress | None = None, on_cell: Callable[[Cell], None] | None = None,
             done: Iterable[CellKey] = (), executor: Executor | None = None) -> list[Cell]:
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
        Runner(plan, running, progress or (lambda message: None), keep, done).run()
    return sorted(cells, key=plan.order)


class LocalPlanExecutor(PlanExecutor):
    """Every cell on this machine, in worker processes of a :class:`LocalExecutor` (the default executor)."""

    kind = "local"

    def run(self, plan: Plan, progress: Progress | None, on_cell: Callable[[Cell], None] | None,
            done: list[Cell]) -> None:
        run_plan(plan, progress, on_cell, done=[cell.key for cell in done])


def probe_backends(timeout: float = 120.0) -> list[list[str]]:
    """Rows (backend, what, status, versions, devices) for ``xfbench list``; each framework imported in a worker."""
    rows = []
    seen: dict[str, dict[str, Any] | str] = {}
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
            if key not in seen:
                worker = executor.start(WorkerSpec(name, "cpu", 1))
                try:
                    seen[key] = request(worker, None, "ready", timeout, "importing the framework")
                    worker.close()
                except WorkerError as error:
                    seen[key] = str(error)
            info = seen[key]
            if isinstance(info, str):
                rows.append([name, backends.describe(name), "broken", "-", info])
                continue
            versions = ", ".join(f"{key} {value}" for key, value in info["versions"].items())
            devices = "; ".join(f"{d['kind']}: {d['name']}" for d in info["devices"])
            rows.append([name, backends.describe(name), "installed", versions, devices])
    return rows
