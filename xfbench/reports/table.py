"""Text tables of a Result (the terminal's and ``xfbench.table``'s): one table per task and device, one row per backend.

Columns: the task's quality metric (mean ± std over seeds when there are several), the steady-state step time
(median ± IQR), the step time relative to the comparison's reference with its 95% interval, samples/s, first step
(trace/compile), training time, time to the target accuracy, peak memory, parity when it was checked, and the
status with its reason. Built from the shared row model (``reports.model``); reads only the Result.
"""

from __future__ import annotations

import unicodedata

from tabulate import tabulate, tabulate_formats

from xfbench.compare.results.result import Ratio, Result
from xfbench.errors import unknown_name
from xfbench.reports import numbers
from xfbench.reports.model import Group, Row, groups

TEXT_FORMATS = tuple(sorted(tabulate_formats))


def check_format(fmt: str) -> str:
    """``fmt`` if tabulate knows it, else the one-line error naming the choices."""
    if fmt not in TEXT_FORMATS:
        raise unknown_name("table format", fmt, TEXT_FORMATS)
    return fmt


def printable(text: object) -> str:
    r"""Text from a result as it may be printed to a terminal: control characters (an escape sequence, a carriage
    return) shown escaped instead of acting on the terminal.

    Example:
        >>> printable("evil\x1b[2J\rname")
        'evil\\x1b[2J\\rname'
    """
    return "".join(char.encode("unicode_escape", "backslashreplace").decode("ascii")
                   if unicodedata.category(char) in ("Cc", "Cs") else char for char in str(text))


def grid(rows: list[list[object]], headers: list[str], fmt: str = "simple") -> str:
    """A text table (tabulate) of values from a result, every cell :func:`printable`; numbers stay as formatted."""
    return tabulate([[printable(value) for value in row] for row in rows], headers=[printable(h) for h in headers],
                    tablefmt=fmt, disable_numparse=True)


def ratio_text(ratio: Ratio | None) -> str:
    """``1.00×`` for the reference, ``3.12× [3.05–3.20]`` with the 95% interval, ``-`` when not measured.

    Example:
        >>> ratio_text(Ratio("torch", 3.1234, 3.05, 3.2))
        '3.12× [3.05–3.20]'
    """
    if ratio is None:
        return numbers.MISSING
    if ratio.low is None or ratio.high is None or ratio.low == ratio.high == ratio.ratio:
        return numbers.times(ratio.ratio)
    return f"{numbers.times(ratio.ratio)} {numbers.interval(ratio.low, ratio.high)}"


def target_text(row: Row) -> str:
    """``1.2 s (epoch 3)``, ``not reached (20 epochs)`` or ``-``."""
    if row.target is None:
        return numbers.MISSING
    if row.target.seconds is None:
        return f"not reached ({row.target.epochs} epochs)"
    return f"{numbers.duration(row.target.seconds)} (epoch {row.target.epoch})"


def step_text(row: Row) -> str:
    step = row.cell.timing.step_ms
    return f"{numbers.step_time(step.median)} ± {numbers.step_time(step.iqr)}" if step else numbers.MISSING


def memory_text(row: Row) -> str:
    rss, device = row.cell.memory.peak_rss_mb, row.cell.memory.device_peak_mb
    return numbers.megabytes(rss) + (f" / {numbers.megabytes(device)} device" if device is not None else "")


def parity_text(row: Row) -> str:
    parity = row.cell.parity
    if parity is None or row.parity is None:
        return numbers.MISSING
    return f"{'pass' if parity.passed else 'FAIL'} ({numbers.scientific(row.parity['forward_max_abs'])})"


def headers(group: Group) -> list[str]:
    out = ["backend", group.metric_label, "step time (median ± IQR)"]
    if group.comparison is not None:
        out.append(f"vs {group.comparison.reference} [95% CI]")
    out += ["samples/s", "first step", "training"]
    if group.target is not None:
        out.append(f"to {group.metric_label} {group.target:g}")
    out.append("peak RSS")
    if any(row.cell.parity for row in group.rows):
        out.append("parity")
    return out + ["status"]


def cells(group: Group, row: Row) -> list[str]:
    """One row of text, in the order of :func:`headers`."""
    timing = row.cell.timing
    out = [row.backend, numbers.metric(row.value, row.std), step_text(row)]
    if group.comparison is not None:
        out.append(ratio_text(row.ratio))
    out += [numbers.rate(timing.samples_per_s, ""), numbers.duration(timing.first_step_s),
            numbers.duration(timing.train_s)]
    if group.target is not None:
        out.append(target_text(row))
    out.append(memory_text(row))
    if any(item.cell.parity for item in group.rows):
        out.append(parity_text(row))
    return out + [row.status]


def render(result: Result, fmt: str = "simple", target: float | None = None) -> str:
    """All tables of a result, as text (``fmt``: a tabulate format, e.g. ``github``)."""
    check_format(fmt)
    blocks = []
    for group in groups(result, target):
        text = printable(group.title + (f": {group.description}" if group.description else "")) + "\n"
        text += grid([cells(group, row) for row in group.rows], headers(group), fmt)
        blocks.append(text + "".join(f"\n{printable(line)}" for line in group.notes()))
    return "\n\n".join(blocks)
