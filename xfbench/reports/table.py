"""Text tables of a Result: one table per task and device, one row per backend. Reads only the Result.

Columns: the task's quality metric (accuracy or R², mean ± std over seeds when there are several), the
steady-state step time (median and IQR), samples/s, first step (trace/compile), whole training time, peak
memory, parity against the float64 reference when it was checked, and the status with its reason.
"""

from __future__ import annotations

import math
import statistics

from tabulate import tabulate

from xfbench.compare.result import Cell, Result

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
    rss, device = cell.memory.get("peak_rss_mb"), cell.memory.get("device_peak_mb")
    return _num(rss, 4) + (f" / {_num(device, 4)} dev" if device is not None else "")


def _parity(cell: Cell) -> str:
    if not cell.parity:
        return "-"
    verdict = "pass" if cell.parity.get("passed") else "FAIL"
    return f"{verdict} ({_num(cell.parity.get('forward_max_abs'), 2)})"


FAULTS_WORTH_NOTING = 100  # minor page faults per step; a steady step has about none


def _status(cell: Cell) -> str:
    """``ok``, with what makes the step time suspect: recompiles or page faults while timed."""
    if not cell.ok:
        return f"{cell.status}: {cell.error}"
    notes = []
    recompiles = cell.timing.get("recompiles")
    if recompiles:
        notes.append(f"{recompiles} recompiles while timed")
    faults = cell.timing.get("page_faults_per_step")
    if faults is not None and faults >= FAULTS_WORTH_NOTING:
        notes.append(f"{faults:,.0f} page faults/step")
    return "ok" + (f" ({'; '.join(notes)})" if notes else "")


def rows(cells: list[Cell], with_parity: bool) -> list[list[str]]:
    out = []
    for cell in cells:
        step = cell.timing.get("step_ms") or {}
        row = [
            cell.backend, quality(cell),
            f"{_num(step.get('median'))} ± {_num(step.get('iqr'), 2)}" if step else "-",
            _num(cell.timing.get("samples_per_s"), 4), _num(cell.timing.get("first_step_s")),
            _num(cell.timing.get("train_s")), _memory(cell),
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


def render(result: Result, fmt: str = "simple") -> str:
    """All tables of a result, as text."""
    blocks = []
    groups: dict[tuple[str, str], list[Cell]] = {}
    for cell in result.cells:
        groups.setdefault((cell.task, str(cell.device.get("kind"))), []).append(cell)
    for (task, device), cells in groups.items():
        names = {cell.device.get("name") for cell in cells if cell.device.get("name")}
        title = f"{task} on {device}" + (f" ({', '.join(sorted(names))})" if names else "")
        description = result.config.get("task_descriptions", {}).get(task)
        with_parity = any(cell.parity for cell in cells)
        headers = ["backend", "accuracy / R²", "step ms (median ± IQR)", "samples/s", "first step s", "train s",
                   "peak RSS MB"] + (["parity"] if with_parity else []) + ["status"]
        text = f"{title}" + (f": {description}" if description else "") + "\n"
        text += tabulate(rows(cells, with_parity), headers=headers, tablefmt=fmt, disable_numparse=True)
        note = spread_note(cells)
        blocks.append(text + (f"\n{note}" if note else ""))
    return "\n\n".join(blocks)
