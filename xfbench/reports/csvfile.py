"""CSV: one row per cell, flat columns with units in their names, for spreadsheets and pandas.

Numbers are written as numbers (full precision, empty when not measured); strings from the result file that a
spreadsheet would read as a formula (``=``, ``+``, ``-``, ``@``, tab or carriage return first) get a leading ``'``,
so a hostile result cannot run anything in the spreadsheet it is opened in (OWASP's CSV-injection rule).
"""

from __future__ import annotations

import csv
import io
from typing import Any

from xfbench.compare.results.result import Result
from xfbench.reports.model import Row, groups

COLUMNS = (
    "task", "device", "device_name", "backend", "status", "error", "metric", "metric_value", "metric_std",
    "step_ms_median", "step_ms_iqr", "step_ms_min", "timed_blocks", "ratio", "ratio_low", "ratio_high",
    "ratio_reference", "samples_per_s", "import_s", "build_s", "first_step_s", "train_s", "eval_s", "target",
    "time_to_target_s", "target_epoch", "peak_rss_mb", "device_peak_mb", "recompiles", "page_faults_per_step",
    "parity_passed", "forward_max_abs", "params_vs_backends_rel", "threads", "versions", "task_hash", "cpu",
    "hostname", "node",
)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe(value: Any) -> Any:
    """A string that cannot start a spreadsheet formula; other values as they are.

    Example:
        >>> safe("=HYPERLINK(1)"), safe("-1"), safe(-1.5), safe("torch")
        ("'=HYPERLINK(1)", "'-1", -1.5, 'torch')
    """
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def record(row: Row, reference: str | None, result: Result) -> dict[str, Any]:
    cell, timing = row.cell, row.cell.timing
    step = timing.step_ms
    return {
        "task": cell.task, "device": cell.device.kind, "device_name": cell.device.name, "backend": cell.backend,
        "status": cell.status, "error": cell.error, "metric": row.metric, "metric_value": row.value,
        "metric_std": row.std, "step_ms_median": step.median if step else None, "step_ms_iqr": step.iqr if step else None,
        "step_ms_min": step.min if step else None, "timed_blocks": step.n if step else None,
        "ratio": row.ratio.ratio if row.ratio else None, "ratio_low": row.ratio.low if row.ratio else None,
        "ratio_high": row.ratio.high if row.ratio else None, "ratio_reference": reference if row.ratio else None,
        "samples_per_s": timing.samples_per_s, "import_s": timing.import_s, "build_s": timing.build_s,
        "first_step_s": timing.first_step_s, "train_s": timing.train_s, "eval_s": timing.eval_s,
        "target": row.target.target if row.target else None,
        "time_to_target_s": row.target.seconds if row.target else None,
        "target_epoch": row.target.epoch if row.target else None,
        "peak_rss_mb": cell.memory.peak_rss_mb, "device_peak_mb": cell.memory.device_peak_mb,
        "recompiles": timing.recompiles, "page_faults_per_step": timing.page_faults_per_step,
        "parity_passed": cell.parity.passed if cell.parity else None,
        "forward_max_abs": row.parity["forward_max_abs"] if row.parity else None,
        "params_vs_backends_rel": row.parity.get("params_vs_backends_rel") if row.parity else None,
        "threads": cell.threads, "versions": " ".join(f"{k}={v}" for k, v in sorted(cell.versions.items())),
        "task_hash": cell.task_hash,
        "cpu": cell.node.cpu if cell.node else (result.machine or {}).get("cpu"),  # a Ray node's own machine
        "hostname": cell.node.hostname if cell.node else (result.machine or {}).get("hostname"),
        "node": cell.node_id,
    }


def render(result: Result, target: float | None = None) -> str:
    """The result as CSV text (a header line, then one line per cell)."""
    stream = io.StringIO()
    writer = csv.DictWriter(stream, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for group in groups(result, target):
        reference = group.comparison.reference if group.comparison else None
        for row in group.rows:
            writer.writerow({key: safe("" if value is None else value)
                             for key, value in record(row, reference, result).items()})
    return stream.getvalue()
