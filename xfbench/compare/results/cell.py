"""The typed model of one cell of a result (task x backend x device, and on a cluster x node) and of its parts:
:class:`Timing` with every raw timed block (:class:`Turn`), :class:`Memory`, :class:`Parity`, the training curve
(:class:`EpochPoint`), the :class:`Device` and the :class:`Node` it ran on. Each part has ``to_dict`` /
``from_dict`` (unknown keys from newer files are dropped), so intervals, paired tests and plots can be recomputed
from the file. Pure data: the statistics over these live in ``compare.stats``.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from xfbench.compare.results.schema import FAILED


def known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
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
        values = known_fields(cls, data)
        if values.get("step_ms") is not None:
            values["step_ms"] = StepStats(**known_fields(StepStats, values["step_ms"]))
        values["processes"] = [ProcessPhases(**known_fields(ProcessPhases, item)) for item in values.get("processes") or []]
        values["turns"] = [Turn(**known_fields(Turn, item)) for item in values.get("turns") or []]
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
    """Relative difference in norm (‖a − b‖ / ‖b‖) and element-wise max abs difference of one tensor.

    ``float32_rel``: the same measure of the float64 reference computed in float32 (the same formulas, float32
    rounding): how many digits any float32 evaluation of this tensor loses. A gradient summed from terms that
    cancel loses more; parity's limit for the tensor grows with it (``ParityOptions.float32_factor``)."""

    rel: float
    max_abs: float
    float32_rel: float | None = None


def _diffs(data: dict[str, Any]) -> dict[str, TensorDiff]:
    return {name: TensorDiff(**known_fields(TensorDiff, value)) for name, value in (data or {}).items()}


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
    # evaluation after ``steps`` steps (a BatchNorm on its running statistics): the outputs on the first batch
    # against the reference's at the reference's weights, relative in norm, and the float32 reference's own distance
    eval_after_steps_rel: float | None = None
    eval_float32_rel: float | None = None
    # the weights and evaluation outputs after ``steps`` steps, from the worker to the parent's comparisons: kept in
    # the partial file of a run in progress (so a resumed run judges every cell), never in a result file
    weights_after_steps: dict[str, Any] | None = field(default=None, repr=False)
    outputs_after_steps: list[Any] | None = field(default=None, repr=False)

    def to_dict(self, with_weights: bool = False) -> dict[str, Any]:
        data = asdict(self)
        for raw in ("weights_after_steps", "outputs_after_steps"):
            if not with_weights or data[raw] is None:
                data.pop(raw)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Parity:
        """A worker's parity message, a line of a partial file (both with the weights after ``steps`` steps) or a
        result's parity (without them)."""
        values = known_fields(cls, data)
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
QUALITY = ("accuracy", "token_accuracy", "r2")  # the metric a cell's quality is read from, first found


def quality_metric(cell: Cell) -> str | None:
    """The name of the cell's quality metric (accuracy or R²), or None.

    Example:
        >>> quality_metric(Cell("regression", "jax", Device("cpu"), "ok", metrics={"mse": 0.2, "r2": 0.98}))
        'r2'
    """
    return next((name for name in QUALITY if name in cell.metrics), None)


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
            self.node = Node(**known_fields(Node, self.node))
        if isinstance(self.device, str):
            self.device = Device(self.device)
        elif isinstance(self.device, dict):
            self.device = Device(**known_fields(Device, self.device))
        if isinstance(self.parity, dict):
            self.parity = Parity.from_dict(self.parity)
        self.curve = [EpochPoint(**known_fields(EpochPoint, point)) if isinstance(point, dict) else point
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

    def to_dict(self, with_weights: bool = False) -> dict[str, Any]:
        """The cell's document; ``with_weights``: with parity's weights after K steps (for the partial file)."""
        data = {item.name: getattr(self, item.name) for item in fields(self)}
        data["device"] = asdict(self.device)
        data["curve"] = [asdict(point) for point in self.curve]
        data["timing"] = self.timing.to_dict()
        data["memory"] = asdict(self.memory)
        data["parity"] = self.parity.to_dict(with_weights) if self.parity else None
        data["node"] = asdict(self.node) if self.node else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cell:
        values = known_fields(cls, data)
        device = values.get("device") or {}
        values["device"] = Device(**known_fields(Device, device)) if isinstance(device, dict) else Device(str(device))
        values["timing"] = Timing.from_dict(values.get("timing") or {})
        values["memory"] = Memory(**known_fields(Memory, values.get("memory") or {}))
        values["parity"] = Parity.from_dict(values["parity"]) if values.get("parity") else None
        return cls(**values)  # __post_init__ types the curve and the node
