"""Summaries of timed blocks: the median, interquartile range and minimum that tables show of a cell's step time.

Example:
    >>> step_stats([1.0, 2.0, 3.0, 4.0, 100.0])
    StepStats(median=3.0, iqr=2.0, min=1.0, n=5)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xfbench.compare.results.cell import StepStats


def step_stats(samples_ms: Sequence[float]) -> StepStats:
    """Per-step milliseconds over every timed block of a cell: median, IQR (q75 - q25), min, number of blocks."""
    values = np.asarray(samples_ms, dtype=np.float64)
    q25, median, q75 = np.percentile(values, [25, 50, 75])
    return StepStats(float(median), float(q75 - q25), float(values.min()), int(values.size))
