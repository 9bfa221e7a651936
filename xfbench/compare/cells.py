"""The cells of a result, from what their workers sent: :class:`CellState` gathers one cell's messages while it runs,
:func:`assemble` turns them into a :class:`~xfbench.compare.results.cell.Cell` (process 0's training results,
every process's timed turns).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from xfbench.compare.plan import Plan
from xfbench.compare.results.cell import QUALITY, Cell, Device, Memory, Parity, ProcessPhases, Timing, Turn
from xfbench.compare.stats.summary import step_stats
from xfbench.tasks import Task

CellKey = tuple[str, str, str]
PHASES = ("build_s", "first_step_s", "train_s", "eval_s")


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

    @property
    def key(self) -> CellKey:
        return self.task.name, self.backend, self.device

    def fail(self, status: str, error: str) -> None:
        if self.status == "ok":
            self.status, self.error = status, error


def summary(cell: Cell) -> str:
    """One line of progress for a finished cell: its status, quality and step time."""
    if not cell.ok:
        return f"{cell.status}: {cell.error}"
    metrics = ", ".join(f"{name} {value:.4g}" for name, value in cell.metrics.items()
                        if name in QUALITY and value is not None)
    step = cell.step_ms()
    return f"ok ({metrics}{f', {step:.3g} ms/step' if step is not None else ''})"


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
        cell.parity = Parity.from_dict(first["parity"])
    timing = Timing(import_s=ready.get("import_s"), protocol=plan.timing.describe() if plan.measure else {},
                    session=state.session if plan.measure else None)
    phases = first.get("phases", {})
    for name in PHASES:
        setattr(timing, name, phases.get(name))
    for process, prepared in sorted(state.prepared.items()):
        released = state.released.get(process, {})
        timing.processes.append(ProcessPhases(
            process=process, pid=state.ready.get(process, {}).get("pid"),
            import_s=state.ready.get(process, {}).get("import_s"),
            **{name: prepared.get("phases", {}).get(name) for name in PHASES},
            trained_epochs=prepared.get("phases", {}).get("trained_epochs", 0),
            peak_rss_mb=released.get("peak_rss_mb", prepared.get("peak_rss_mb")),
        ))
    if state.turns:
        timing.turns = state.turns
        timing.step_ms = step_stats(timing.blocks())
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
