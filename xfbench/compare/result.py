"""The result of a comparison: one versioned JSON document. Reports and CI gates read only this.

Schema (``schema_version`` 3; documented in docs/schema.md and checked by tests/schema.py):
``{"schema_version", "created", "complete", "versions", "machine", "config", "cells": [Cell...],
"comparisons": [Comparison...]}``.
A cell always has ``task``, ``backend``, ``device`` (``kind``, ``name``), ``status`` (ok / unsupported / error)
and ``error`` (None when ok); measurements are None when they were not taken, never zero. Its parts are typed
(:class:`Timing`, :class:`Memory`, :class:`Parity`), each with ``to_dict`` / ``from_dict``; the timing keeps every
raw timed block (:class:`Turn`), so intervals, paired tests and plots can be recomputed from the file.

Older documents are migrated on load (:func:`migrate`), never refused: a schema 1 file reads with no raw samples
and no comparisons, a schema 2 file with no training curves.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from xfbench.errors import XfbenchError
from xfbench.machine import machine_info

SCHEMA_VERSION = 3
STATUSES = ("ok", "unsupported", "error")
PHASES = ("import_s", "build_s", "first_step_s", "train_s", "eval_s")


def software_versions() -> dict[str, str]:
    """xfbench's, NumPy's, SciPy's and Python's versions, recorded in every result (frameworks are per cell)."""
    import numpy
    import scipy

    from xfbench import __version__

    return {"xfbench": __version__, "numpy": numpy.__version__, "scipy": scipy.__version__,
            "python": platform.python_version()}


def _pick(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``data`` that are fields of dataclass ``cls`` (unknown keys from newer files are dropped)."""
    names = {item.name for item in fields(cls)}
    return {key: value for key, value in data.items() if key in names}


# ------------------------------------------------------------------------------------------------ timing
@dataclass
class StepStats:
    """Per-step milliseconds over every timed block of a cell: median, IQR (q75 - q25), min, number of blocks."""

    median: float
    iqr: float
    min: float
    n: int

    @classmethod
    def of(cls, samples_ms: list[float]) -> StepStats:
        """Example:
        >>> StepStats.of([1.0, 2.0, 3.0, 4.0, 100.0])
        StepStats(median=3.0, iqr=2.0, min=1.0, n=5)
        """
        import numpy as np

        values = np.asarray(samples_ms, dtype=np.float64)
        q25, median, q75 = np.percentile(values, [25, 50, 75])
        return cls(float(median), float(q75 - q25), float(values.min()), int(values.size))


@dataclass
class Turn:
    """One timing turn of one worker process: an untimed block, then ``block_ms`` (ms per step of each synced
    block of ``block_steps`` steps). ``round`` and ``position`` place it in the schedule (position 0 ran first in its
    round); ``start_s`` is seconds since the task's timing session began, for plots of drift."""

    process: int
    round: int
    position: int
    start_s: float
    block_ms: list[float]

    @property
    def value_ms(self) -> float:
        """The turn's per-step time: the median of its blocks."""
        import statistics

        return statistics.median(self.block_ms)


@dataclass
class ProcessPhases:
    """What one worker process of a cell did before timing. Process 0 trains and evaluates the task (its numbers
    are the cell's); further processes exist for timing only: they build and run one priming epoch."""

    process: int
    pid: int | None = None
    import_s: float | None = None
    build_s: float | None = None
    first_step_s: float | None = None
    train_s: float | None = None
    eval_s: float | None = None
    trained_epochs: int = 0
    peak_rss_mb: float | None = None


@dataclass
class Timing:
    """Phase times (of process 0), steady-state step statistics over all processes' timed blocks, the raw blocks."""

    import_s: float | None = None
    build_s: float | None = None
    first_step_s: float | None = None
    train_s: float | None = None
    eval_s: float | None = None
    step_ms: StepStats | None = None
    samples_per_s: float | None = None
    block_steps: int | None = None
    timed_steps: int | None = None
    recompiles: int | None = None
    page_faults_per_step: float | None = None
    session: str | None = None
    protocol: dict[str, Any] = field(default_factory=dict)
    processes: list[ProcessPhases] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)

    @property
    def measured(self) -> bool:
        return self.step_ms is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Timing:
        values = _pick(cls, data)
        if values.get("step_ms") is not None:
            values["step_ms"] = StepStats(**_pick(StepStats, values["step_ms"]))
        values["processes"] = [ProcessPhases(**_pick(ProcessPhases, item)) for item in values.get("processes") or []]
        values["turns"] = [Turn(**_pick(Turn, item)) for item in values.get("turns") or []]
        return cls(**values)


@dataclass
class Memory:
    """``peak_rss_mb``: process 0's peak resident memory (MiB, includes the framework import); ``device_peak_mb``:
    the framework's own accelerator peak counter (None on CPU)."""

    peak_rss_mb: float | None = None
    device_peak_mb: float | None = None


# ------------------------------------------------------------------------------------------------ parity
@dataclass
class TensorDiff:
    """Relative difference in norm (‖a − b‖ / ‖b‖) and element-wise max abs difference of one tensor."""

    rel: float
    max_abs: float


def _diffs(data: dict[str, Any]) -> dict[str, TensorDiff]:
    return {name: TensorDiff(**_pick(TensorDiff, value)) for name, value in (data or {}).items()}


@dataclass
class Parity:
    """A cell's distance from the float64 reference and from the other backends (see ``compare.parity``)."""

    forward_max_abs: float
    forward_max_rel: float
    forward_rel: float
    loss_abs: float
    loss_rel: float
    grads: dict[str, TensorDiff]
    steps: int
    params_vs_reference: dict[str, TensorDiff] = field(default_factory=dict)
    params_vs_backends: dict[str, dict[str, TensorDiff]] = field(default_factory=dict)
    tolerances: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    passed: bool | None = None
    # the weights after ``steps`` steps, from the worker to the parent's comparison; never written to a file
    weights_after_steps: dict[str, Any] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("weights_after_steps")
        return data

    @classmethod
    def from_worker(cls, data: dict[str, Any]) -> Parity:
        """A worker's parity message, keeping its weights after ``steps`` steps for the comparison between backends."""
        parity = cls.from_dict(data)
        parity.weights_after_steps = data.get("weights_after_steps")
        return parity

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Parity:
        values = _pick(cls, data)
        values.pop("weights_after_steps", None)
        values["grads"] = _diffs(values.get("grads", {}))
        values["params_vs_reference"] = _diffs(values.get("params_vs_reference", {}))
        values["params_vs_backends"] = {other: _diffs(diffs)
                                        for other, diffs in (values.get("params_vs_backends") or {}).items()}
        return cls(**values)


# -------------------------------------------------------------------------------------------------- curve
@dataclass
class EpochPoint:
    """One epoch of a cell's training curve: ``train_s`` is the cumulative training time at the end of the epoch
    (evaluation off the clock), ``train_loss`` the mean loss of the epoch's steps, ``test`` the test-split metrics
    (and loss) after the epoch."""

    epoch: int
    train_s: float
    train_loss: float | None
    test: dict[str, float | None] = field(default_factory=dict)


# -------------------------------------------------------------------------------------------------- cell
@dataclass
class Device:
    kind: str
    name: str | None = None


@dataclass
class Cell:
    """One task on one backend and device."""

    task: str
    backend: str
    device: Device
    status: str
    error: str | None = None
    task_hash: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    threads: int | None = None
    fingerprint: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)
    seed_metrics: list[dict[str, float | None]] = field(default_factory=list)
    curve: list[EpochPoint] = field(default_factory=list)
    timing: Timing = field(default_factory=Timing)
    memory: Memory = field(default_factory=Memory)
    parity: Parity | None = None

    def __post_init__(self) -> None:
        if isinstance(self.device, str):
            self.device = Device(self.device)
        elif isinstance(self.device, dict):
            self.device = Device(**_pick(Device, self.device))
        if isinstance(self.parity, dict):
            self.parity = Parity.from_worker(self.parity)
        self.curve = [EpochPoint(**_pick(EpochPoint, point)) if isinstance(point, dict) else point
                      for point in self.curve]

    @property
    def key(self) -> tuple[str, str, str]:
        return self.task, self.backend, self.device.kind

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def step_ms(self) -> float | None:
        """Median steady-state step time in ms, or None when not measured."""
        return self.timing.step_ms.median if self.timing.step_ms else None

    def to_dict(self) -> dict[str, Any]:
        data = {item.name: getattr(self, item.name) for item in fields(self)}
        data["device"] = asdict(self.device)
        data["curve"] = [asdict(point) for point in self.curve]
        data["timing"] = self.timing.to_dict()
        data["memory"] = asdict(self.memory)
        data["parity"] = self.parity.to_dict() if self.parity else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cell:
        values = _pick(cls, data)
        device = values.get("device") or {}
        values["device"] = Device(**_pick(Device, device)) if isinstance(device, dict) else Device(str(device))
        values["timing"] = Timing.from_dict(values.get("timing") or {})
        values["memory"] = Memory(**_pick(Memory, values.get("memory") or {}))
        values["parity"] = Parity.from_dict(values["parity"]) if values.get("parity") else None
        values["curve"] = [EpochPoint(**_pick(EpochPoint, point)) for point in values.get("curve") or []
                           if isinstance(point, dict)]
        return cls(**values)


# ------------------------------------------------------------------------------------------ comparisons
@dataclass
class Ratio:
    """One backend's step time relative to the comparison's reference backend, with its 95% interval.

    ``per_process``: the ratio of each process pair alone (process p of this backend vs process p of the reference).
    ``resolved``: the interval excludes 1.0, i.e. the difference is real at the 95% level.
    """

    backend: str
    ratio: float
    low: float | None = None
    high: float | None = None
    per_process: list[float] = field(default_factory=list)
    rounds: int = 0
    resolved: bool | None = None


@dataclass
class Comparison:
    """Step-time ratios of every ok backend of one task and device, relative to ``reference``."""

    task: str
    device: str
    reference: str
    ratios: list[Ratio]
    fastest: str
    runner_up: str | None = None
    resolved: bool | None = None
    paired: bool = True
    method: str = ""
    workers_peak_rss_mb: float | None = None
    note: str | None = None

    def ratio(self, backend: str) -> Ratio | None:
        return next((item for item in self.ratios if item.backend == backend), None)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Comparison:
        values = _pick(cls, data)
        values["ratios"] = [Ratio(**_pick(Ratio, item)) for item in values.get("ratios", [])]
        return cls(**values)


# ------------------------------------------------------------------------------------------------ result
@dataclass
class Result:
    """All cells of one run plus the machine they ran on. ``save``/``load`` round-trip through JSON.

    Example:
        >>> result = Result(cells=[Cell("mlp", "torch", Device("cpu", "x"), "ok")])
        >>> Result.from_json(result.to_json()).cells[0].backend
        'torch'
    """

    cells: list[Cell] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=machine_info)
    created: str = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat())
    versions: dict[str, str] = field(default_factory=software_versions)
    comparisons: list[Comparison] = field(default_factory=list)
    complete: bool = True
    schema_version: int = SCHEMA_VERSION

    def cell(self, task: str, backend: str, device: str = "cpu") -> Cell:
        """The cell for (task, backend, device kind)."""
        for cell in self.cells:
            if cell.key == (task, backend, device):
                return cell
        raise XfbenchError(f"no cell for task {task!r}, backend {backend!r}, device {device!r} in this result")

    def comparison(self, task: str, device: str = "cpu") -> Comparison | None:
        """The step-time ratios of (task, device), or None when fewer than one backend measured."""
        return next((item for item in self.comparisons if (item.task, item.device) == (task, device)), None)

    def compare(self, relative_to: str | None = None) -> None:
        """(Re)compute ``comparisons`` from the cells' raw timed turns; ``relative_to`` names the reference
        backend (default: the fastest of each task and device)."""
        from xfbench.compare.stats import compare_cells

        groups: dict[tuple[str, str], list[Cell]] = {}
        for cell in self.cells:
            groups.setdefault((cell.task, cell.device.kind), []).append(cell)
        self.comparisons = [comparison for cells in groups.values()
                            if (comparison := compare_cells(cells, relative_to)) is not None]

    def _repr_html_(self) -> str:
        """The tables as HTML, for Jupyter (the one place a Result reaches into ``reports``, lazily)."""
        from xfbench.reports.html import tables

        return tables(self)

    def plot(self, kinds: str | list[str] | None = None, task: str | None = None, target: float | None = None
             ) -> list[Any]:
        """matplotlib figures of this result: per task and device, ``kinds`` of ``step-time``, ``throughput``,
        ``quality``, ``phases``, ``curves``, ``distribution`` (default: all that have data).

        Example:
            >>> Result().plot()
            []
        """
        from xfbench.reports import plots
        from xfbench.reports.model import groups

        wanted = [kinds] if isinstance(kinds, str) else kinds
        known = ("step-time", "throughput", "quality", "phases", "curves", "distribution")
        for kind in wanted or []:
            if kind not in known:
                from xfbench.errors import unknown_name

                raise unknown_name("plot kind", kind, known)
        try:
            import matplotlib.pyplot  # noqa: F401  (lets Jupyter's inline backend display the figures)
        except ImportError:  # pragma: no cover - matplotlib is a dependency
            pass
        return [figure for group in groups(self, target) if task is None or group.task == task
                for kind, figure in plots.figures(group) if wanted is None or kind in wanted]

    def to_dict(self) -> dict[str, Any]:
        return _finite({
            "schema_version": self.schema_version, "created": self.created, "complete": self.complete,
            "versions": self.versions, "machine": self.machine, "config": self.config,
            "cells": [cell.to_dict() for cell in self.cells],
            "comparisons": [asdict(comparison) for comparison in self.comparisons],
        })

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=False, default=_jsonable)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        if not isinstance(data, dict):
            raise XfbenchError(f"a result is a JSON object, got {type(data).__name__}")
        data = migrate(data)
        return cls(cells=[Cell.from_dict(cell) for cell in data.get("cells", [])], config=data.get("config", {}),
                   machine=data.get("machine", {}), created=data.get("created", ""),
                   versions=data.get("versions", {}),
                   comparisons=[Comparison.from_dict(item) for item in data.get("comparisons", [])],
                   complete=bool(data.get("complete", True)), schema_version=SCHEMA_VERSION)

    @classmethod
    def from_json(cls, text: str) -> Result:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the result as JSON, atomically: a temporary file in the same folder, flushed to disk, renamed over
        ``path`` (parent folders are created). A crash mid-write leaves the previous file as it was."""
        from xfbench.compare.journal import write_atomic

        write_atomic(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Result:
        """Read a result file, or the partial file of an interrupted run (``PATH.partial``)."""
        from xfbench.compare.journal import read_result

        return read_result(path)


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Bring an older result document to the current schema (it is not modified in place).

    Example:
        >>> migrate({"schema_version": 1, "cells": []})["schema_version"]
        3
    """
    version = data.get("schema_version")
    if version == SCHEMA_VERSION:
        return data
    if version not in (1, 2):
        raise XfbenchError(f"result schema_version {version!r} is not one this xfbench reads (1 to {SCHEMA_VERSION}); "
                           "a newer xfbench wrote it, or it is not an xfbench result")
    data = dict(data)
    cells = [cell for cell in data.get("cells") or [] if isinstance(cell, dict)]
    if version == 1:  # 1 -> 2: raw turns, processes, software versions and comparisons appeared
        cells = [{**cell, "timing": {**(cell.get("timing") or {}), "turns": [], "processes": []}} for cell in cells]
        data.setdefault("versions", {})
        data.setdefault("comparisons", [])
    # 2 -> 3: training curves appeared
    data["cells"] = [{**cell, "curve": cell.get("curve") or []} for cell in cells]
    data["schema_version"] = SCHEMA_VERSION
    return data


def _finite(value: Any) -> Any:
    """Replace NaN / infinity (a diverged loss, say) with None: the JSON stays standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _jsonable(value: Any) -> Any:
    """JSON fallback for NumPy scalars and arrays."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
