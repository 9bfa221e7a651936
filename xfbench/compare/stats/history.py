"""The trend of a cell over saved runs, with change points, from comparable runs only.

Comparable: the same CPU model, usable cores and threads per framework (``RunRow.machine``) and the same task spec
(its hash). By default the series of a cell is the machine of its newest run; runs of other machines, thread counts
or task sizes are left out and counted (``Series.excluded``).

Change points: PELT (Killick, Fearnhead & Eckley 2012) from the ``ruptures`` library on the log of the step-time
medians, least-squares cost, with a penalty of ``3 σ² ln n`` (BIC's ``2 σ² ln n``, made stricter) where σ is a
robust estimate of the run-to-run noise (the MAD of successive differences); segments of at least two runs (one
odd run is not a change). A change is flagged when the means of the segments on both sides differ by at least
``min_effect`` (default 5%). On simulated series of 30 runs with 3% noise
(``tests/test_gate.py::test_change_points_on_simulated_series``) this flags a false change in about 3% of series,
finds a 10% step in the middle in 98% and one in the last two runs in about 80%.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from xfbench.compare.results.store import HistoryPoint

MIN_EFFECT = 0.05
METHOD = "PELT (ruptures), least squares on log step time, penalty 3·σ²·ln n, σ from successive differences"


@dataclass
class Change:
    """A change point: the first run of the new level, and the ratio of the new level to the old."""

    index: int
    run_id: int
    ratio: float


@dataclass
class Series:
    """One cell's comparable history."""

    task: str
    backend: str
    device: str
    machine: tuple
    points: list[HistoryPoint] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    excluded: dict[str, int] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.task} on {self.backend}/{self.device}"


def change_points(values: list[float], min_effect: float = MIN_EFFECT) -> list[tuple[int, float]]:
    """(index of the first value of a new level, new/old ratio of the segment means) for ``values`` (step times).

    Example:
        >>> change_points([10, 10.2, 9.9, 10.1, 10, 12, 12.1, 11.9, 12.2, 12])
        [(5, 1.1992)]
        >>> change_points([10, 10.2, 9.9, 10.1, 10, 10.3, 9.8, 10])
        []
    """
    import ruptures

    logs = np.log(np.asarray(values, dtype=np.float64))
    if logs.size < 4:
        return []
    diffs = np.diff(logs)
    sigma = 1.4826 * float(np.median(np.abs(diffs - np.median(diffs)))) / math.sqrt(2)
    sigma = max(sigma, 1e-4)  # identical values: any real step is a change
    penalty = 3 * sigma**2 * math.log(logs.size)
    ends = ruptures.Pelt(model="l2", min_size=2, jump=1).fit(logs.reshape(-1, 1)).predict(pen=penalty)
    bounds = [0, *ends]
    found = []
    for k in range(1, len(bounds) - 1):
        before = logs[bounds[k - 1]:bounds[k]].mean()
        after = logs[bounds[k]:bounds[k + 1]].mean()
        ratio = float(math.exp(after - before))
        if abs(math.log(ratio)) >= math.log1p(min_effect):
            found.append((bounds[k], round(ratio, 4)))
    return found


def series(points: list[HistoryPoint], min_effect: float = MIN_EFFECT) -> list[Series]:
    """Per cell, its comparable ok runs (the newest run's machine and task spec) and their change points."""
    by_cell: dict[tuple[str, str, str], list[HistoryPoint]] = {}
    for point in points:
        by_cell.setdefault((point.task, point.backend, point.device), []).append(point)
    out = []
    for (task, backend, device), cell_points in by_cell.items():
        measured = [point for point in cell_points if point.status == "ok" and point.step_ms]
        excluded: Counter[str] = Counter()
        for point in cell_points:
            if point not in measured:
                excluded[f"not measured ({point.status})"] += 1
        if not measured:
            out.append(Series(task, backend, device, (), excluded=dict(excluded)))
            continue
        newest = measured[-1]
        kept = []
        for point in measured:
            if point.run.machine != newest.run.machine:
                excluded["another machine or thread count"] += 1
            elif point.task_hash != newest.task_hash:
                excluded["another task size"] += 1
            else:
                kept.append(point)
        item = Series(task, backend, device, newest.run.machine, kept, excluded=dict(excluded))
        item.changes = [Change(index, kept[index].run.id, ratio)
                        for index, ratio in change_points([point.step_ms for point in kept], min_effect)]
        out.append(item)
    return sorted(out, key=lambda item: (item.task, item.device, item.backend))
