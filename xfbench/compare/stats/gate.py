"""The CI gate's statistics: is the head's step time slower than the base's, by more than the minimum effect?

Two kinds of evidence, one verdict rule.

``xfbench ab`` (:func:`ab_estimate`, strong): base and head workers of a cell alive together, taking alternating
turns, over several fresh *process pairs*. Every process carries a speed offset of its own for its whole life
(about 2.4% between identical processes on this project's machines, 7-10% in about one pair in six: docs/noise.md), which no
number of turns averages away, so the process pair is the unit of replication. Per pair (:func:`pair_log_ratios`):
in each round, log(head / base) of the two turns' fastest blocks; the median over rounds. Interference on a shared
machine only ever adds time, so a turn's fastest block is the one least touched by it (the argument of Chen &
Revels, "Robust benchmarking in noisy environments", 2016, behind BenchmarkTools.jl), and the median sets aside
rounds in which one turn was hit throughout; on the A/A pilot of 2 December this statistic had a between-pair sd
of 3.4% where the trimmed mean of the turns' median blocks had 4.1%. A slowdown that reaches every block (what a
regression of the step is) moves the fastest block as much as the median one; one that hits only some blocks of
a turn (a pause every few hundred steps) is partly set aside: ``xfbench run``'s medians still show it. Over pairs, a
one-sample t-test of those log ratios (``scipy.stats.ttest_1samp``, one-sided each way) and its 95% t interval.
Why not Wilcoxon's signed-rank test: with n pairs its smallest possible one-sided p-value is 2^-n, so the default
six pairs (1/64) could never pass a Holm-corrected threshold across four cells (0.0125).

``xfbench check`` (:func:`check_estimate`, weaker): two saved results, timed in different runs, possibly hours and
machines apart; nothing is paired. Per cell, the turns of each result (one value per turn, all processes) are
compared with the Mann-Whitney U test (one-sided each way) and the ratio of medians gets a bootstrap interval over
turns (``scipy.stats.bootstrap``). Drift between the runs and the processes' offsets are not cancelled: the
interval is too narrow when they are large. Use it for a quick look, and ``ab`` for a gate.

The verdict (:func:`verdict`), with p-values Holm-corrected across the gated cells (:func:`holm`) and a minimum
effect ``m`` (default 5%):
- ``regression``: the head is significantly slower and the estimate is at least ``1 + m``;
- ``improvement``: significantly faster and the estimate at most ``1 / (1 + m)``;
- ``no change``: the 95% interval lies inside ``(1 / (1 + m), 1 + m)``;
- ``too noisy to decide`` otherwise, with the reason (the interval reaches past the minimum effect; too few pairs).
A cell that is ok in the base and fails in the head is a ``regression`` (the head cannot run it); one that fails in the
head otherwise is ``failed``; a cell of the base (baseline) that the head (result) lacks is ``missing``; a cell not
measured in both arms for any other reason is ``not compared``. ``regression``, ``missing`` and ``failed`` fail the
gate (the last two unless the user allows them: ``--allow-missing``): a gate that passes when the measurement did not
happen is worse than no gate.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xfbench.compare.results.ab import Verdict
from xfbench.compare.stats.ratios import turn_table
from xfbench.errors import XfbenchError

ALPHA = 0.05
MIN_EFFECT = 0.05
CONFIDENCE = 0.95
AB_METHOD = ("per process pair: median over rounds of log(head/base) of the fastest blocks of the same round's "
             "turns; over pairs: one-sample t-test (one-sided) and 95% t interval; Holm across cells")
CHECK_METHOD = ("unpaired turns of two runs: Mann-Whitney U (one-sided), bootstrap interval of the ratio of medians; "
                "Holm across cells; weaker evidence than xfbench ab (drift and process offsets not cancelled)")


@dataclass
class Estimate:
    """head/base step-time ratio of one cell, its 95% interval and one-sided p-values (before correction)."""

    ratio: float
    low: float
    high: float
    p_slower: float
    p_faster: float
    replicates: int
    per_pair: list[float] = field(default_factory=list)


def check_settings(min_effect: float, alpha: float = ALPHA) -> None:
    """The one-line error for a minimum effect or alpha the gate cannot use (``ab``, ``check``, ``history``)."""
    for name, value, low_ok, high, example in (("min-effect", min_effect, True, 1.0, "0.05 for 5%"),
                                               ("alpha", alpha, False, 0.5, "0.05")):
        number = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
        if not number or not (value >= 0 if low_ok else value > 0) or not value < high:
            span = "a fraction from 0 to 1" if low_ok else f"between 0 and {high:g}"
            raise XfbenchError(f"--{name} must be {span} (e.g. {example}), got {value!r}")


def pair_log_ratios(base: Any, head: Any) -> list[float]:
    """Per process pair (process p of the base cell and of the head cell, alive together): the median over rounds
    of log(head / base) of the fastest blocks of the two turns of the same round.

    Example (one pair, three rounds; the head's second turn was hit by a load spike in every block but its last):
        >>> from types import SimpleNamespace as T
        >>> def cell(*turns): return T(timing=T(turns=[T(process=0, round=r, block_ms=b) for r, b in enumerate(turns)]))
        >>> base = cell([1.0, 1.1], [1.0, 1.2], [1.02, 1.0])
        >>> head = cell([1.1, 1.2], [1.6, 1.1], [1.1, 1.3])
        >>> [round(math.exp(value), 3) for value in pair_log_ratios(base, head)]
        [1.1]
    """
    base_turns, head_turns = (turn_table(cell, lambda turn: min(turn.block_ms)) for cell in (base, head))
    values = []
    for process in sorted(set(base_turns) & set(head_turns)):
        rounds = sorted(set(base_turns[process]) & set(head_turns[process]))
        if rounds:
            values.append(float(np.median([math.log(head_turns[process][r] / base_turns[process][r])
                                           for r in rounds])))
    return values


def ab_estimate(log_ratios: Sequence[float]) -> Estimate | None:
    """The t-test over process pairs (None with fewer than 2 pairs).

    Example:
        >>> e = ab_estimate(np.log([1.10, 1.12, 1.09, 1.11, 1.10]).tolist())
        >>> round(e.ratio, 3), e.low > 1.05, e.p_slower < 0.001
        (1.104, True, True)
    """
    from scipy import stats

    values = np.asarray(log_ratios, dtype=np.float64)
    if values.size < 2:
        return None
    mean = float(values.mean())
    if float(values.std()) == 0.0:  # identical pairs: the estimate is exact
        p_slower = 0.0 if mean > 0 else 1.0
        p_faster = 0.0 if mean < 0 else 1.0
        low = high = mean
    else:
        test = stats.ttest_1samp(values, 0.0)
        low, high = test.confidence_interval(CONFIDENCE)
        p_slower = float(stats.ttest_1samp(values, 0.0, alternative="greater").pvalue)
        p_faster = float(stats.ttest_1samp(values, 0.0, alternative="less").pvalue)
    return Estimate(math.exp(mean), math.exp(low), math.exp(high), p_slower, p_faster, int(values.size),
                    [math.exp(value) for value in values])


def check_estimate(base_turns: Sequence[float], head_turns: Sequence[float], seed: int = 0) -> Estimate | None:
    """Unpaired turns of two runs: Mann-Whitney U and a bootstrap interval of the ratio of medians (None with
    fewer than 3 turns on either side)."""
    from scipy import stats

    base = np.log(np.asarray(base_turns, dtype=np.float64))
    head = np.log(np.asarray(head_turns, dtype=np.float64))
    if base.size < 3 or head.size < 3:
        return None

    def difference(h: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.median(h, axis=axis) - np.median(b, axis=axis)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        boot = stats.bootstrap((head, base), difference, confidence_level=CONFIDENCE, n_resamples=2000,
                               method="percentile", vectorized=True, rng=np.random.default_rng(seed))
    estimate = float(difference(head, base))
    low, high = boot.confidence_interval
    return Estimate(math.exp(estimate), math.exp(low), math.exp(high),
                    float(stats.mannwhitneyu(head, base, alternative="greater").pvalue),
                    float(stats.mannwhitneyu(head, base, alternative="less").pvalue), int(min(base.size, head.size)))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error over all of them), in the input's order.

    Example:
        >>> [round(p, 3) for p in holm([0.01, 0.04, 0.03, 0.5])]
        [0.04, 0.09, 0.09, 0.5]
    """
    count = len(p_values)
    order = sorted(range(count), key=lambda index: p_values[index])
    adjusted = [1.0] * count
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (count - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def verdict(estimate: Estimate, p_slower: float, p_faster: float, min_effect: float = MIN_EFFECT,
            alpha: float = ALPHA) -> tuple[str, str, float]:
    """(verdict, reason, p of the estimate's direction) from an estimate and its Holm-corrected p-values."""
    band = 1 + min_effect
    change = f"{estimate.ratio - 1:+.1%}"
    interval = f"[{estimate.low:.3f}–{estimate.high:.3f}]"
    if p_slower < alpha and estimate.ratio >= band:
        return "regression", f"{change}, p={p_slower:.2g} (Holm), {interval}", p_slower
    if p_faster < alpha and estimate.ratio <= 1 / band:
        return "improvement", f"{change}, p={p_faster:.2g} (Holm), {interval}", p_faster
    p = p_slower if estimate.ratio >= 1 else p_faster
    if 1 / band < estimate.low and estimate.high < band:
        return "no change", f"{change}, {interval} within ±{min_effect:.0%}", p
    if p < alpha:
        why = f"{change} is significant but below the {min_effect:.0%} minimum effect; {interval} reaches past it"
    else:
        why = f"{change}, {interval} reaches past the {min_effect:.0%} minimum effect without significance"
    if estimate.replicates < 3:
        why += f"; only {estimate.replicates} replicates"
    return "too noisy to decide", why, p


def decide(items: Iterable[tuple[Any, Any, Estimate | None, str | None]], min_effect: float = MIN_EFFECT,
           alpha: float = ALPHA) -> list[Verdict]:
    """Verdicts for (base cell, head cell, estimate, reason-not-compared) items, Holm-corrected across the cells
    that have an estimate."""
    rows = list(items)
    gated = [index for index, (_, _, estimate, _) in enumerate(rows) if estimate is not None]
    slower = holm([rows[index][2].p_slower for index in gated])  # type: ignore[union-attr]
    faster = holm([rows[index][2].p_faster for index in gated])  # type: ignore[union-attr]
    adjusted = {index: (slower[k], faster[k]) for k, index in enumerate(gated)}
    out = []
    for index, (base, head, estimate, reason) in enumerate(rows):
        cell = head if head is not None else base
        row = Verdict(cell.task, cell.backend, cell.device.kind, "not compared", reason or "",
                      base_ms=base.step_ms() if base is not None else None,
                      head_ms=head.step_ms() if head is not None else None)
        if estimate is not None:
            name, why, p = verdict(estimate, *adjusted[index], min_effect=min_effect, alpha=alpha)
            row.verdict, row.reason, row.p_value = name, why, p
            row.ratio, row.low, row.high = estimate.ratio, estimate.low, estimate.high
            row.replicates, row.per_pair = estimate.replicates, estimate.per_pair
        elif head is None:
            row.verdict = "missing"
        elif head.failed and base is not None and base.ok:
            row.verdict, row.reason = "regression", f"the head fails: {head.status}: {head.error}"
        elif head.failed:
            row.verdict, row.reason = "failed", f"{head.status}: {head.error}"
        out.append(row)
    return out


def not_compared_reason(base: Any, head: Any) -> str | None:
    """Why a (base, head) pair of cells cannot be compared, or None when both measured."""
    if base is None or head is None:
        return f"only in the {'head' if base is None else 'base'}"
    for arm, cell in (("base", base), ("head", head)):
        if not cell.ok:
            return f"{arm} {cell.status}: {cell.error}"
        if not cell.timing.turns:
            return f"{arm} has no timed turns"
    if base.task_hash and head.task_hash and base.task_hash != head.task_hash:
        return "the task's spec differs between the arms (different sizes or hyperparameters)"
    return None


def _matched(base: Any, head: Any, estimate_of: Any, too_few: str, missing: str, min_effect: float,
             alpha: float) -> list[Verdict]:
    """Verdicts for the cells of ``head`` matched to ``base``'s by (task, backend, device), in ``head``'s order, then
    every cell of ``base`` that ``head`` lacks (``missing`` says so); ``estimate_of(base_cell, head_cell)`` is the
    estimate, or None (``too_few`` says why)."""
    bases = {cell.key: cell for cell in base.cells}
    heads = {cell.key for cell in head.cells}
    items = []
    for cell in head.cells:
        other = bases.get(cell.key)
        reason = not_compared_reason(other, cell)
        estimate = estimate_of(other, cell) if reason is None else None
        if reason is None and estimate is None:
            reason = too_few
        items.append((other, cell, estimate, reason))
    items += [(cell, None, None, missing) for cell in base.cells if cell.key not in heads]
    return decide(items, min_effect, alpha)


def ab_verdicts(base: Any, head: Any, min_effect: float = MIN_EFFECT, alpha: float = ALPHA) -> list[Verdict]:
    """Verdicts of an ``ab`` run: the base and head results' cells, matched by (task, backend, device)."""
    return _matched(base, head, lambda b, h: ab_estimate(pair_log_ratios(b, h)),
                    "fewer than 2 process pairs measured in both arms", "measured in the base, not in the head",
                    min_effect, alpha)


def check_verdicts(baseline: Any, result: Any, min_effect: float = MIN_EFFECT, alpha: float = ALPHA,
                   name: str = "the result") -> list[Verdict]:
    """Verdicts of ``xfbench check``: every cell of ``result`` against the same cell of ``baseline``, and every cell
    of ``baseline`` that ``result`` lacks (``missing``). A result with no cells is an error (``name`` names it):
    nothing was measured, so nothing can pass."""
    if not result.cells:
        raise XfbenchError(f"{name} has no cells: nothing was measured")

    def estimate_of(base: Any, head: Any) -> Estimate | None:
        return check_estimate([turn.value_ms for turn in base.timing.turns],
                              [turn.value_ms for turn in head.timing.turns])

    return _matched(baseline, result, estimate_of, "fewer than 3 timed turns on one side",
                    "in the baseline, not in the result", min_effect, alpha)
