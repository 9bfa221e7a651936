"""How step time and throughput scale with a task parameter, per backend: the table and the log-log chart of an
``xfbench sweep`` result (``config.sweep``). Reads only the Result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from xfbench.compare.results.result import Result
from xfbench.reports import numbers
from xfbench.reports.table import grid, printable

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def series(result: Result) -> tuple[dict[str, Any], dict[str, list[tuple[float, float, float | None]]]]:
    """The sweep's config and, per backend, (parameter value, median ms per step, samples/s) of every ok cell."""
    config = result.config.get("sweep") or {}
    values = dict(zip(config.get("tasks", []), config.get("values", []), strict=False))
    out: dict[str, list[tuple[float, float, float | None]]] = {}
    for cell in result.cells:
        if cell.ok and cell.task in values and cell.step_ms() is not None:
            out.setdefault(cell.backend, []).append((values[cell.task], cell.step_ms(), cell.timing.samples_per_s))  # type: ignore[arg-type]
    return config, {backend: sorted(points) for backend, points in out.items()}


def scaling(points: list[tuple[float, float, float | None]]) -> float | None:
    """The log-log slope of step time against the parameter (1.0: proportional; below: sublinear)."""
    import numpy as np

    if len(points) < 2:
        return None
    x = np.log([p[0] for p in points])
    y = np.log([p[1] for p in points])
    return float(np.polyfit(x, y, 1)[0])


def render_text(result: Result) -> str:
    config, data = series(result)
    if not config:
        return "(not a sweep result)"
    values = config["values"]
    headers = ["backend", *[f"{config['param']}={value}" for value in values], "slope (log-log)"]
    rows = []
    for backend, points in data.items():
        by_value = {value: (ms, rate) for value, ms, rate in points}
        cells = [f"{numbers.step_time(by_value[v][0])}, {numbers.rate(by_value[v][1])}" if v in by_value
                 else numbers.MISSING for v in values]
        slope = scaling(points)
        rows.append([backend, *cells, "-" if slope is None else f"{slope:.2f}"])
    fixed = config.get("fixed") or {}
    held = f" ({', '.join(f'{key}={value}' for key, value in fixed.items())})" if isinstance(fixed, dict) and fixed else ""
    title = (f"{config['task']}{held}: step time and throughput against {config['param']} "
             "(slope: d log(step time) / d log(parameter); 1 = proportional)")
    return printable(title) + "\n" + grid(rows, headers)


def figure(result: Result) -> Figure:
    from xfbench.reports import plots

    config, data = series(result)
    return plots.sweep({backend: [(v, ms) for v, ms, _ in points] for backend, points in data.items()},
                       config.get("param", "parameter"),
                       f"{config.get('task', '')}: ms per step against {config.get('param', '')} (log-log; lower is better)",
                       "ms per training step (median)")


def write_plot(result: Result, path: str) -> None:
    """The log-log chart as SVG or PNG (by the file name), written atomically."""
    from xfbench.reports import plots

    plots.write_figure(figure(result), path)
