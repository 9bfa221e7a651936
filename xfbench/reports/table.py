"""Text tables of a Result: one table per task and device, one row per backend. Reads only the Result.

Columns: the task's quality metric (accuracy or R², mean ± std over seeds when there are several), the
steady-state step time (median and IQR), samples/s, first step (trace/compile), whole training time, peak
memory, parity against the float64 reference when it was checked, and the status with its reason.
"""

from __future__ import annotations

import math
import statistics

from tabulate import tabulate

from xfbench.compare.result import Cell, Comparison, Ratio, Result

QUALITY = ("accuracy", "r2")


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}g}"


def quality(cell: Cell) -> str:
    """'0.975' or, over several seeds, '0.975 ± 0.004'."""
    name = next((metric for metric in QUALITY if metric in cell.metrics), None)
    if name is None:
        return "-"
    if len(cell.seed_metrics) > 1:
        values = [metrics[name] for metrics in cell.seed_metrics if metrics.get(name) is not None]
        if len(values) > 1:
            return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"
    return f"{cell.metrics[name]:.4f}"


def _memory(cell: Cell) -> str:
    rss, device = cell.memory.peak_rss_mb, cell.memory.device_peak_mb
    return _num(rss, 4) + (f" / {_num(device, 4)} dev" if device is not None else "")


def _parity(cell: Cell) -> str:
    if not cell.parity:
        return "-"
    verdict = "pass" if cell.parity.passed else "FAIL"
    return f"{verdict} ({_num(cell.parity.forward_max_abs, 2)})"


def ratio_text(ratio: Ratio | None) -> str:
    """``1.00×`` for the reference, ``3.12× [3.05–3.20]`` with the 95% interval, ``-`` when not measured.

    Example:
        >>> ratio_text(Ratio("torch", 3.1234, 3.05, 3.2))
        '3.12× [3.05–3.20]'
    """
    if ratio is None:
        return "-"
    if ratio.low is None or ratio.high is None:
        return f"{ratio.ratio:.2f}×"
    if ratio.low == ratio.high == ratio.ratio:
        return f"{ratio.ratio:.2f}×"
    return f"{ratio.ratio:.2f}× [{ratio.low:.2f}–{ratio.high:.2f}]"


FAULTS_WORTH_NOTING = 100  # minor page faults per step; a steady step has about none


def _status(cell: Cell) -> str:
    """``ok``, with what makes the step time suspect: recompiles or page faults while timed."""
    if not cell.ok:
        return f"{cell.status}: {cell.error}"
    notes = []
    recompiles = cell.timing.recompiles
    if recompiles:
        notes.append(f"{recompiles} recompiles while timed")
    faults = cell.timing.page_faults_per_step
    if faults is not None and faults >= FAULTS_WORTH_NOTING:
        notes.append(f"{faults:,.0f} page faults/step")
    return "ok" + (f" ({'; '.join(notes)})" if notes else "")


def rows(cells: list[Cell], with_parity: bool, comparison: Comparison | None = None) -> list[list[str]]:
    out = []
    for cell in cells:
        step = cell.timing.step_ms
        row = [
            cell.backend, quality(cell),
            f"{_num(step.median)} ± {_num(step.iqr, 2)}" if step else "-",
        ]
        if comparison is not None:
            row.append(ratio_text(comparison.ratio(cell.backend) if cell.ok else None))
        row += [
            _num(cell.timing.samples_per_s, 4), _num(cell.timing.first_step_s),
            _num(cell.timing.train_s), _memory(cell),
        ]
        if with_parity:
            row.append(_parity(cell))
        out.append(row + [_status(cell)])
    return out


def spread_note(cells: list[Cell]) -> str | None:
    """With several seeds: do the backends' mean accuracies differ by more than their seed-to-seed spread?"""
    stats = []
    label = "accuracy"
    for cell in cells:
        name = next((metric for metric in QUALITY if metric in cell.metrics), None)
        label = "R²" if name == "r2" else "accuracy"
        values = [m[name] for m in cell.seed_metrics if name and m.get(name) is not None]
        if len(values) > 1:
            stats.append((cell.backend, statistics.mean(values), statistics.stdev(values), len(values)))
    if len(stats) < 2:
        return None
    means = [mean for _, mean, _, _ in stats]
    # two-standard-error band of the mean difference, using the largest per-backend spread
    band = 2 * max(std for _, _, std, _ in stats) * math.sqrt(2 / min(n for *_, n in stats))
    gap = max(means) - min(means)
    verdict = "within" if gap <= band else "MORE than"
    return (f"{label} gap between backends {gap:.4f} is {verdict} what seed-to-seed spread explains "
            f"(±{band:.4f}, 2 standard errors over {min(n for *_, n in stats)} seeds)")


def answer(comparison: Comparison) -> str:
    """One line: which backend is fastest, and whether the gap to the next one is resolved.

    Example:
        >>> c = Comparison("mlp", "cpu", "jax", [Ratio("jax", 1.0, 1.0, 1.0), Ratio("torch", 2.4, 2.3, 2.5, resolved=True)],
        ...                fastest="jax", runner_up="torch", resolved=True)
        >>> answer(c)
        'fastest: jax; next: torch at 2.40× [2.30–2.50] (resolved: the 95% interval excludes 1)'
    """
    if comparison.runner_up is None:
        return f"only {comparison.fastest} was timed"
    line = f"fastest: {comparison.fastest}"
    runner_up = comparison.ratio(comparison.runner_up)
    if comparison.reference == comparison.fastest and runner_up is not None:
        line += f"; next: {comparison.runner_up} at {ratio_text(runner_up)}"
    else:
        line += f"; next: {comparison.runner_up}"
    if comparison.resolved is None:
        line += " (too few rounds for an interval)"
    elif comparison.resolved:
        line += " (resolved: the 95% interval excludes 1)"
    else:
        line += " (NOT resolved: the 95% interval includes 1; more --rounds or --processes may tell them apart)"
    if not comparison.paired:
        line += "; timed one backend after another, so the machine's drift is in these ratios"
    return line


def render(result: Result, fmt: str = "simple") -> str:
    """All tables of a result, as text."""
    blocks = []
    groups: dict[tuple[str, str], list[Cell]] = {}
    for cell in result.cells:
        groups.setdefault((cell.task, cell.device.kind), []).append(cell)
    for (task, device), cells in groups.items():
        names = {cell.device.name for cell in cells if cell.device.name}
        title = f"{task} on {device}" + (f" ({', '.join(sorted(names))})" if names else "")
        description = result.config.get("task_descriptions", {}).get(task)
        with_parity = any(cell.parity for cell in cells)
        comparison = result.comparison(task, device)
        headers = ["backend", "accuracy / R²", "step ms (median ± IQR)"]
        if comparison is not None:
            headers.append(f"step time vs {comparison.reference} [95% CI]")
        headers += ["samples/s", "first step s", "train s", "peak RSS MB"] + (["parity"] if with_parity else [])
        headers.append("status")
        text = f"{title}" + (f": {description}" if description else "") + "\n"
        text += tabulate(rows(cells, with_parity, comparison), headers=headers, tablefmt=fmt, disable_numparse=True)
        notes = [answer(comparison)] if comparison is not None else []
        if comparison is not None and comparison.note:
            notes.append(comparison.note)
        note = spread_note(cells)
        if note:
            notes.append(note)
        blocks.append(text + "".join(f"\n{line}" for line in notes))
    return "\n\n".join(blocks)
