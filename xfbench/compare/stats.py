"""Statistics of timed turns: step-time ratios between backends with 95% intervals. Thin wrappers over scipy.stats.

The estimate (``ratio``): for each *process pair* p (process p of a backend and process p of the reference, alive
at the same time) and each round r, the log of the ratio of their turn values (median ms per step of the turn's
blocks) in that round. Both turns ran within about a second of each other, so the machine's drift cancels. Per
pair, a 20% trimmed mean over rounds (``scipy.stats.trim_mean``: robust to a turn hit by a load spike) estimates
the log ratio, and a bootstrap over rounds (``scipy.stats.bootstrap``) gives its standard error.

The interval: with one process pair, the bootstrap's BCa 95% interval. With several, every process also carries
an offset of its own that lasts its life (about 2% on these machines: see NOISE.md), which no amount of rounds
averages away; the pairs are then combined as a random-effects meta-analysis (DerSimonian-Laird): the spread
between pairs beyond what their own standard errors explain (``tau``) widens the interval. Fewer than 3 rounds give
no interval.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable

    from xfbench.compare.result import Cell, Comparison, Ratio, Turn

CONFIDENCE = 0.95
TRIM = 0.2
RESAMPLES = 2000
METHOD = ("paired turns of the same round; per process pair a 20% trimmed mean of log ratios over rounds with a "
          "bootstrap over rounds (scipy.stats.bootstrap, BCa); pairs combined by DerSimonian-Laird random effects")

TurnTable = dict[int, dict[int, float]]  # process -> round -> turn value (ms per step)


def turn_table(cell: Cell, value: Callable[[Turn], float] | None = None) -> TurnTable:
    """A cell's turn values by process and round (``value``: what of a turn to keep; its ``value_ms`` by default)."""
    table: TurnTable = {}
    for turn in cell.timing.turns:
        table.setdefault(turn.process, {})[turn.round] = turn.value_ms if value is None else value(turn)
    return table


def _statistic(values: np.ndarray, axis: int = -1) -> np.ndarray:
    from scipy import stats

    return stats.trim_mean(values, TRIM, axis=axis)


def pair_estimate(log_ratios: np.ndarray, seed: int = 0) -> tuple[float, float | None, tuple[float, float] | None]:
    """One process pair: the trimmed-mean log ratio, its bootstrap standard error and BCa interval (None with
    fewer than 3 rounds).

    Example:
        >>> estimate, se, interval = pair_estimate(np.log([1.10, 1.12, 1.09, 1.11, 1.10]))
        >>> round(float(np.exp(estimate)), 3), interval[0] < estimate < interval[1]
        (1.103, True)
    """
    from scipy import stats

    log_ratios = np.asarray(log_ratios, dtype=np.float64)
    estimate = float(_statistic(log_ratios))
    if log_ratios.size < 3:
        return estimate, None, None
    if np.ptp(log_ratios) == 0:
        return estimate, 0.0, (estimate, estimate)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BCa warns on degenerate resamples of tiny samples; the interval stands
        result = stats.bootstrap((log_ratios,), _statistic, confidence_level=CONFIDENCE, n_resamples=RESAMPLES,
                                 method="BCa", vectorized=True, rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    if not (math.isfinite(low) and math.isfinite(high)):
        low, high = np.quantile(result.bootstrap_distribution, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return estimate, float(result.standard_error), (float(low), float(high))


def random_effects(estimates: list[float], errors: list[float]) -> tuple[float, float, float]:
    """DerSimonian-Laird: the pooled estimate, its standard error, and tau (the spread between units beyond their
    own errors).

    Example:
        >>> pooled, se, tau = random_effects([0.0, 0.05], [0.01, 0.01])
        >>> round(pooled, 3), round(tau, 3)
        (0.025, 0.034)
    """
    values = np.asarray(estimates, dtype=np.float64)
    variances = np.maximum(np.asarray(errors, dtype=np.float64) ** 2, 1e-12)
    weights = 1 / variances
    fixed = float(np.sum(weights * values) / np.sum(weights))
    q = float(np.sum(weights * (values - fixed) ** 2))
    c = float(np.sum(weights) - np.sum(weights**2) / np.sum(weights))
    tau2 = max(0.0, (q - (len(values) - 1)) / c) if c > 0 else 0.0
    pooled_weights = 1 / (variances + tau2)
    pooled = float(np.sum(pooled_weights * values) / np.sum(pooled_weights))
    return pooled, float(math.sqrt(1 / np.sum(pooled_weights))), math.sqrt(tau2)


def ratio(target: TurnTable, reference: TurnTable, backend: str = "", seed: int = 0) -> Ratio | None:
    """``target``'s step time relative to ``reference``'s, from turns of the same process pair and round."""
    from scipy import stats

    from xfbench.compare.result import Ratio

    pairs = []
    for process in sorted(set(target) & set(reference)):
        rounds = sorted(set(target[process]) & set(reference[process]))
        if rounds:
            pairs.append(np.log([target[process][r] / reference[process][r] for r in rounds]))
    if not pairs:
        return None
    estimates = [pair_estimate(values, seed) for values in pairs]
    rounds = min(len(values) for values in pairs)
    per_process = [float(math.exp(estimate)) for estimate, _, _ in estimates]
    if len(pairs) == 1:
        estimate, _, interval = estimates[0]
    elif all(error is not None for _, error, _ in estimates):
        estimate, error, _ = random_effects([e for e, _, _ in estimates], [s for _, s, _ in estimates])  # type: ignore[misc]
        z = float(stats.norm.ppf((1 + CONFIDENCE) / 2))
        interval = (estimate - z * error, estimate + z * error)
    else:
        estimate, interval = float(np.mean([e for e, _, _ in estimates])), None
    low, high = (None, None) if interval is None else (math.exp(interval[0]), math.exp(interval[1]))
    resolved = None if low is None else bool(low > 1 or high < 1)  # type: ignore[operator]
    return Ratio(backend=backend, ratio=math.exp(estimate), low=low, high=high, per_process=per_process,
                 rounds=rounds, resolved=resolved)


def compare_cells(cells: list[Cell], relative_to: str | None = None) -> Comparison | None:
    """Ratios of every measured cell of one task and device to the reference backend (``relative_to`` when it was
    measured, else the fastest); None when no cell was measured."""
    from xfbench.compare.result import Comparison, Ratio

    measured = [cell for cell in cells if cell.ok and cell.timing.turns]
    if not measured:
        return None
    tables = {cell.backend: turn_table(cell) for cell in measured}
    by_speed = sorted(measured, key=lambda cell: cell.step_ms() or math.inf)
    note = None
    reference = by_speed[0].backend
    if relative_to is not None:
        if relative_to in tables:
            reference = relative_to
        else:
            note = f"{relative_to} was not measured here; ratios are relative to the fastest, {reference}"
    ratios: list[Ratio] = []
    for cell in measured:
        if cell.backend == reference:
            rounds = min((len(rows) for rows in tables[reference].values()), default=0)
            ratios.append(Ratio(cell.backend, 1.0, 1.0, 1.0, [1.0] * len(tables[reference]), rounds, False))
            continue
        estimate = ratio(tables[cell.backend], tables[reference], cell.backend)
        if estimate is not None:
            ratios.append(estimate)
    ordered = sorted(ratios, key=lambda item: item.ratio)
    fastest = ordered[0].backend
    runner_up = ordered[1].backend if len(ordered) > 1 else None
    resolved = None
    if runner_up is not None:
        gap = ratio(tables[runner_up], tables[fastest], runner_up)
        resolved = gap.resolved if gap is not None else None
    sessions = {cell.timing.session for cell in measured}
    schedules = {cell.timing.protocol.get("schedule") for cell in measured}
    paired = len(sessions) == 1 and None not in sessions and schedules == {"interleaved"}
    peaks = [process.peak_rss_mb for cell in measured for process in cell.timing.processes]
    return Comparison(
        task=measured[0].task, device=measured[0].device.kind, reference=reference, ratios=ratios, fastest=fastest,
        runner_up=runner_up, resolved=resolved, paired=paired, method=METHOD,
        workers_peak_rss_mb=sum(peaks) if peaks and None not in peaks else None, note=note,
    )


# ------------------------------------------------------------------------------------------ accuracy
QUALITY = ("accuracy", "r2")  # the metric a table shows, first found


def quality_metric(cell: Cell) -> str | None:
    """The name of the cell's quality metric (accuracy or R²), or None."""
    return next((name for name in QUALITY if name in cell.metrics), None)


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
        >>> from xfbench.compare.result import Cell
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
        >>> from xfbench.compare.result import Cell, EpochPoint
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
