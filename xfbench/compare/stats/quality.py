"""How good each backend's model is, and how fast it got there: the seed-to-seed spread of the quality metric
between backends, and time-to-accuracy (MLPerf's and DAWNBench's training score). Pure functions of cells.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xfbench.compare.results.cell import quality_metric

if TYPE_CHECKING:
    from xfbench.compare.results.cell import Cell

@dataclass
class SeedSpread:
    """With several seeds: the gap between the backends' mean metric and the band that seed-to-seed spread
    explains (two standard errors of a difference of means, with the largest per-backend spread)."""

    metric: str
    gap: float
    band: float
    seeds: int

    @property
    def within(self) -> bool:
        return self.gap <= self.band


def seed_spread(cells: list[Cell]) -> SeedSpread | None:
    """Do the backends' mean metrics differ by more than their seed-to-seed spread? None with fewer than two
    backends trained over several seeds.

    Example:
        >>> from xfbench.compare.results.cell import Cell
        >>> cells = [Cell("t", name, "cpu", "ok", metrics={"accuracy": 0.9},
        ...               seed_metrics=[{"accuracy": v} for v in values])
        ...          for name, values in (("a", [0.90, 0.92, 0.91]), ("b", [0.91, 0.93, 0.90]))]
        >>> spread = seed_spread(cells)
        >>> round(spread.gap, 4), spread.within
        (0.0033, True)
    """
    import statistics

    rows = []
    metric = "accuracy"
    for cell in cells:
        name = quality_metric(cell)
        if name is None:
            continue
        metric = name
        values = [m[name] for m in cell.seed_metrics if m.get(name) is not None]
        if len(values) > 1:
            rows.append((statistics.mean(values), statistics.stdev(values), len(values)))
    if len(rows) < 2:
        return None
    means = [mean for mean, _, _ in rows]
    seeds = min(n for _, _, n in rows)
    band = 2 * max(std for _, std, _ in rows) * math.sqrt(2 / seeds)
    return SeedSpread(metric, max(means) - min(means), band, seeds)


@dataclass
class TimeToTarget:
    """The training time a cell needed to first reach ``target`` on the test split (``seconds`` None: not
    reached in ``epochs`` epochs)."""

    metric: str
    target: float
    seconds: float | None
    epoch: int | None
    epochs: int


def time_to_target(cell: Cell, target: float | None) -> TimeToTarget | None:
    """Time-to-accuracy (MLPerf's and DAWNBench's training score): the cumulative training time at the end of the
    first epoch whose test metric is at least ``target``. None without a curve, a target or a quality metric.

    Example:
        >>> from xfbench.compare.results.cell import Cell, EpochPoint
        >>> cell = Cell("t", "a", "cpu", "ok", metrics={"accuracy": 0.97},
        ...             curve=[EpochPoint(1, 0.5, 1.0, {"accuracy": 0.8}), EpochPoint(2, 1.1, 0.5, {"accuracy": 0.96})])
        >>> time_to_target(cell, 0.95)
        TimeToTarget(metric='accuracy', target=0.95, seconds=1.1, epoch=2, epochs=2)
    """
    metric = quality_metric(cell)
    if target is None or metric is None or not cell.curve:
        return None
    for point in cell.curve:
        value = point.test.get(metric)
        if value is not None and value >= target:
            return TimeToTarget(metric, target, point.train_s, point.epoch, len(cell.curve))
    return TimeToTarget(metric, target, None, None, len(cell.curve))


def target_of(config: dict, task: str, override: float | None = None) -> float | None:
    """The time-to-accuracy target of ``task``: ``override`` (``--target``), else the one the run recorded."""
    if override is not None:
        return override
    entry = (config.get("targets") or {}).get(task)
    value = entry.get("value") if isinstance(entry, dict) else None
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
