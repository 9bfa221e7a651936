"""The result of a comparison: one versioned JSON document. Reports and CI gates read only this.

Schema (``schema_version`` 4; documented in docs/schema.md and checked by tests/schema.py):
``{"schema_version", "created", "complete", "versions", "machine", "config", "cells": [Cell...],
"comparisons": [Comparison...]}``.
A cell always has ``task``, ``backend``, ``device`` (``kind``, ``name``), ``status`` (ok / diverged / unsupported /
error)
and ``error`` (None when ok); measurements are None when they were not taken, never zero. Its parts are typed
(:class:`Timing`, :class:`Memory`, :class:`Parity`), each with ``to_dict`` / ``from_dict``; the timing keeps every
raw timed block (:class:`Turn`), so intervals, paired tests and plots can be recomputed from the file.

Older documents are migrated on load (:func:`migrate`), never refused: a schema 1 file reads with no raw samples
and no comparisons, a schema 2 file with no training curves, a schema 3 file with no nodes (every cell ran here).
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

SCHEMA_VERSION = 4
STATUSES = ("ok", "diverged", "unsupported", "error")
FAILED = ("error", "diverged")  # statuses that fail a run (exit code 1) and its gates
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
    """One timing turn of one worker process: untimed steps, then ``block_ms`` (ms per step of each synced
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
    untimed_steps: int | None = None
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

    def blocks(self) -> list[float]:
        """Every timed block's ms per step, over all turns of all processes (what ``step_ms`` summarizes)."""
        return [value for turn in self.turns for value in turn.block_ms]

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
    # the optimizer formula this backend follows ("spec", or "keras": Adam's epsilon before the bias correction),
    # the formula of every backend compared, and (for a formula other than the spec's) the distance from the spec
    optimizer_formula: str = "spec"
    formulas: dict[str, str] = field(default_factory=dict)
    params_vs_spec_reference: dict[str, TensorDiff] = field(default_factory=dict)
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
        values["params_vs_spec_reference"] = _diffs(values.get("params_vs_spec_reference", {}))
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
class Node:
    """The machine a cell ran on when another machine than the driver's ran it (a Ray node); None for local runs,
    whose machine is the result's ``machine``."""

    id: str
    hostname: str | None = None
    address: str | None = None
    cpu: str | None = None
    cores: int | None = None
    usable_cores: int | None = None
    gpus: int = 0
    memory_gb: float | None = None
    labels: dict[str, str] = field(default_factory=dict)
    ray_version: str | None = None
    agent_pid: int | None = None

    @property
    def name(self) -> str:
        """How tables name the machine: its hostname and the start of its node id (hostnames may repeat)."""
        return f"{self.hostname or 'node'} [{self.id[:8]}]"


@dataclass
class Cell:
    """One task on one backend and device (and, on a cluster, one node)."""

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
    node: Node | None = None
    lost: bool = False  # an error of the placement, not the backend (its node or node agent failed): resume reruns it

    def __post_init__(self) -> None:
        if isinstance(self.node, dict):
            self.node = Node(**_pick(Node, self.node))
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
    def node_id(self) -> str | None:
        """The Ray node it ran on (None: this machine)."""
        return self.node.id if self.node else None

    @property
    def machine(self) -> str | None:
        """The node's display name (None: the result's machine)."""
        return self.node.name if self.node else None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def failed(self) -> bool:
        """It errored or diverged: the run (and any gate) fails; ``unsupported`` is not a failure."""
        return self.status in FAILED

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
        data["node"] = asdict(self.node) if self.node else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cell:
        values = _pick(cls, data)
        device = values.get("device") or {}
        values["device"] = Device(**_pick(Device, device)) if isinstance(device, dict) else Device(str(device))
        values["timing"] = Timing.from_dict(values.get("timing") or {})
        values["memory"] = Memory(**_pick(Memory, values.get("memory") or {}))
        values["parity"] = Parity.from_dict(values["parity"]) if values.get("parity") else None
        return cls(**values)  # __post_init__ types the curve and the node


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
    """Step-time ratios of every ok backend of one task and device (on one node), relative to ``reference``."""

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
    node: str | None = None

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

    def cell(self, task: str, backend: str, device: str = "cpu", node: str | None = None) -> Cell:
        """The cell for (task, backend, device kind); ``node``: a node id (or its start) where the same matrix ran
        on several nodes (``--on-each``)."""
        found = [cell for cell in self.cells if cell.key == (task, backend, device)
                 and (node is None or (cell.node_id or "").startswith(node))]
        if len(found) > 1:
            raise XfbenchError(f"task {task!r} on {backend!r}/{device} ran on {len(found)} nodes; choose one with "
                               f"node=: {', '.join(cell.node_id or 'local' for cell in found)}")
        if found:
            return found[0]
        raise XfbenchError(f"no cell for task {task!r}, backend {backend!r}, device {device!r}"
                           f"{f', node {node!r}' if node else ''} in this result")

    def nodes(self) -> list[Node]:
        """The distinct nodes the cells ran on, in order (empty for a local run)."""
        seen: dict[str, Node] = {}
        for cell in self.cells:
            if cell.node is not None:
                seen.setdefault(cell.node.id, cell.node)
        return list(seen.values())

    def comparison(self, task: str, device: str = "cpu", node: str | None = None) -> Comparison | None:
        """The step-time ratios of (task, device) on ``node`` (a node id; None: the local run, or the one node
        the task ran on), or None when fewer than one backend measured."""
        found = [item for item in self.comparisons if (item.task, item.device) == (task, device)]
        if node is not None:
            found = [item for item in found if item.node == node]
        else:
            found = [item for item in found if item.node is None] or found
        return found[0] if len(found) == 1 else None

    def compare(self, relative_to: str | None = None) -> None:
        """(Re)compute ``comparisons`` from the cells' raw timed turns; ``relative_to`` names the reference
        backend (default: the fastest of each task and device). Backends are compared only within one node: cells
        timed on different machines are never paired."""
        from xfbench.compare.stats import compare_cells

        groups: dict[tuple[str, str, str | None], list[Cell]] = {}
        for cell in self.cells:
            groups.setdefault((cell.task, cell.device.kind, cell.node_id), []).append(cell)
        self.comparisons = []
        for (_, _, node), cells in groups.items():
            comparison = compare_cells(cells, relative_to)
            if comparison is not None:
                comparison.node = node
                self.comparisons.append(comparison)

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
        """A result from its JSON document; a malformed document is one :class:`XfbenchError` naming the field."""
        if not isinstance(data, dict):
            raise XfbenchError(f"a result is a JSON object, got {type(data).__name__}")
        data = migrate(data)
        check_document(data)
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
        4
    """
    version = data.get("schema_version")
    if version == SCHEMA_VERSION:
        return data
    if version not in (1, 2, 3):
        raise XfbenchError(f"result schema_version {version!r} is not one this xfbench reads (1 to {SCHEMA_VERSION}); "
                           "a newer xfbench wrote it, or it is not an xfbench result")
    data = dict(data)
    cells = data.get("cells") or []
    if not isinstance(cells, list) or not all(isinstance(cell, dict) for cell in cells):
        raise XfbenchError("malformed result: cells must be a list of objects")
    if version == 1:  # 1 -> 2: raw turns, processes, software versions and comparisons appeared
        cells = [{**cell, "timing": {**(cell.get("timing") or {}), "turns": [], "processes": []}} for cell in cells]
        data.setdefault("versions", {})
        data.setdefault("comparisons", [])
    if version in (1, 2):  # 2 -> 3: training curves appeared
        cells = [{**cell, "curve": cell.get("curve") or []} for cell in cells]
    # 3 -> 4: cells and comparisons name the Ray node they ran on (None: the result's machine)
    data["cells"] = [{**cell, "node": cell.get("node"), "lost": bool(cell.get("lost", False))} for cell in cells]
    data["schema_version"] = SCHEMA_VERSION
    return data


NUMERIC_TIMING = ("import_s", "build_s", "first_step_s", "train_s", "eval_s", "samples_per_s", "block_steps",
                  "untimed_steps", "timed_steps", "recompiles", "page_faults_per_step")


def _expect(ok: bool, where: str, what: str, value: Any) -> None:
    if not ok:
        shown = repr(value)
        raise XfbenchError(f"malformed result: {where} must be {what}, got {shown[:60]}{'...' if len(shown) > 60 else ''}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numbers(mapping: Any, keys: tuple[str, ...], where: str) -> None:
    _expect(isinstance(mapping, dict), where, "an object", mapping)
    for key in keys:
        value = mapping.get(key)
        _expect(value is None or _is_number(value), f"{where}.{key}", "a number or null", value)


def check_document(data: dict[str, Any]) -> None:
    """The types every reader relies on (names are strings, measurements numbers or null, lists are lists), so a
    truncated, edited or hostile file is one clear error at load time instead of a crash in a renderer."""
    for key in ("machine", "config", "versions"):
        _expect(isinstance(data.get(key, {}), dict), key, "an object", data.get(key))
    cells = data.get("cells", [])
    _expect(isinstance(cells, list), "cells", "a list", cells)
    for index, cell in enumerate(cells):
        where = f"cells[{index}]"
        _expect(isinstance(cell, dict), where, "an object", cell)
        for key in ("task", "backend"):
            _expect(isinstance(cell.get(key), str) and bool(cell.get(key)), f"{where}.{key}", "a non-empty string",
                    cell.get(key))
        _expect(cell.get("status") in STATUSES, f"{where}.status", f"one of {', '.join(STATUSES)}", cell.get("status"))
        _expect(cell.get("error") is None or isinstance(cell.get("error"), str), f"{where}.error", "a string or null",
                cell.get("error"))
        device = cell.get("device")
        _expect(isinstance(device, (dict, str)), f"{where}.device", "an object", device)
        if isinstance(device, dict):
            _expect(isinstance(device.get("kind"), str), f"{where}.device.kind", "a string", device.get("kind"))
            _expect(device.get("name") is None or isinstance(device.get("name"), str), f"{where}.device.name",
                    "a string or null", device.get("name"))
        for key in ("versions", "fingerprint", "metrics"):
            _expect(isinstance(cell.get(key, {}), dict), f"{where}.{key}", "an object", cell.get(key))
        _numbers(cell.get("metrics", {}), tuple(cell.get("metrics", {})), f"{where}.metrics")
        _expect(isinstance(cell.get("seed_metrics", []), list), f"{where}.seed_metrics", "a list", None)
        for number, metrics in enumerate(cell.get("seed_metrics", [])):
            _numbers(metrics, tuple(metrics) if isinstance(metrics, dict) else (), f"{where}.seed_metrics[{number}]")
        timing = cell.get("timing") or {}
        _numbers(timing, NUMERIC_TIMING, f"{where}.timing")
        if timing.get("step_ms") is not None:
            _numbers(timing["step_ms"], ("median", "iqr", "min", "n"), f"{where}.timing.step_ms")
        for key in ("turns", "processes"):
            _expect(isinstance(timing.get(key, []), list), f"{where}.timing.{key}", "a list", timing.get(key))
        for number, turn in enumerate(timing.get("turns") or []):
            _numbers(turn, ("process", "round", "position", "start_s"), f"{where}.timing.turns[{number}]")
            blocks = turn.get("block_ms")
            _expect(isinstance(blocks, list) and bool(blocks) and all(_is_number(v) and v > 0 for v in blocks),
                    f"{where}.timing.turns[{number}].block_ms", "a list of positive numbers", blocks)
        _numbers(cell.get("memory") or {}, ("peak_rss_mb", "device_peak_mb"), f"{where}.memory")
        _expect(isinstance(cell.get("curve", []), list), f"{where}.curve", "a list", cell.get("curve"))
        for number, point in enumerate(cell.get("curve") or []):
            _numbers(point, ("epoch", "train_s", "train_loss"), f"{where}.curve[{number}]")
            test = point.get("test", {})
            _numbers(test, tuple(test) if isinstance(test, dict) else (), f"{where}.curve[{number}].test")
        node = cell.get("node")
        _expect(node is None or (isinstance(node, dict) and isinstance(node.get("id"), str)), f"{where}.node",
                "null or an object with an id", node)
        if node is not None:
            _numbers(node, ("cores", "usable_cores", "gpus", "memory_gb", "agent_pid"), f"{where}.node")
            _expect(isinstance(node.get("labels", {}), dict), f"{where}.node.labels", "an object", node.get("labels"))
    comparisons = data.get("comparisons", [])
    _expect(isinstance(comparisons, list), "comparisons", "a list", comparisons)
    for index, comparison in enumerate(comparisons):
        where = f"comparisons[{index}]"
        _expect(isinstance(comparison, dict), where, "an object", comparison)
        for key in ("task", "device", "reference", "fastest"):
            _expect(isinstance(comparison.get(key), str), f"{where}.{key}", "a string", comparison.get(key))
        _expect(isinstance(comparison.get("ratios", []), list), f"{where}.ratios", "a list", None)
        for number, item in enumerate(comparison.get("ratios", [])):
            _numbers(item, ("ratio", "low", "high", "rounds"), f"{where}.ratios[{number}]")
            _expect(isinstance(item.get("backend"), str), f"{where}.ratios[{number}].backend", "a string", None)


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
