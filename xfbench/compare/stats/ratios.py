"""Statistics of timed turns: step-time ratios between backends with 95% intervals. Thin wrappers over scipy.stats.

The estimate (``ratio``): for each *process pair* p (process p of a backend and process p of the reference, alive
at the same time) and each round r, the log of the ratio of their turn values (median ms per step of the turn's
blocks) in that round. Both turns ran within about a second of each other, so the machine's drift cancels. Per
pair, a 20% trimmed mean over rounds (``scipy.stats.trim_mean``: robust to a turn hit by a load spike) estimates
the log ratio, and a bootstrap over rounds (``scipy.stats.bootstrap``) gives its standard error.

The interval: with one process pair, the bootstrap's BCa 95% interval. With several, every process also carries
an offset of its own that lasts its life (about 2% on this project's machines: docs/noise.md), which no amount of rounds
averages away; the pairs are then combined as a random-effects meta-analysis (DerSimonian-Laird): the spread
between pairs beyond what their own standard errors explain (``tau``) widens the interval. Fewer than 3 rounds give
no interval.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import numpy as np

from xfbench.compare.results.result import Comparison, Ratio

if TYPE_CHECKING:
    from collections.abc import Callable

    from xfbench.compare.results.cell import Cell, Turn
    from xfbench.compare.results.result import Result

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


def compare_result(result: Result, relative_to: str | None = None) -> None:
    """(Re)compute ``result.comparisons`` from the cells' raw timed turns; ``relative_to`` names the reference
    backend (default: the fastest of each task and device). Backends are compared only within one node: cells timed
    on different machines are never paired (``Result.compare`` calls this)."""
    groups: dict[tuple[str, str, str | None], list[Cell]] = {}
    for cell in result.cells:
        groups.setdefault((cell.task, cell.device.kind, cell.node_id), []).append(cell)
    result.comparisons = []
    for (_, _, node), cells in groups.items():
        comparison = compare_cells(cells, relative_to)
        if comparison is not None:
            comparison.node = node
            result.comparisons.append(comparison)
