"""``xfbench history``: a cell's trend over saved runs as a table and a chart, change points marked."""

from __future__ import annotations

from typing import TYPE_CHECKING

from xfbench.compare.stats.history import METHOD, Series
from xfbench.reports import numbers
from xfbench.reports.table import grid, printable

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _excluded(item: Series) -> str:
    return "; ".join(f"{count} {why}" for why, count in sorted(item.excluded.items()))


def render_text(items: list[Series]) -> str:
    """One table per cell: run, date, commit, framework versions, step time, throughput, quality, change."""
    blocks = []
    for item in items:
        cpu, cores, threads = item.machine or (None, None, None)
        lines = [f"{item.label}: {len(item.points)} comparable runs"
                 + (f" on {cpu}, {cores} cores, {threads} threads" if cpu else "")
                 + (f" (left out: {_excluded(item)})" if item.excluded else "")]
        changes = {change.index: change for change in item.changes}
        rows = []
        for index, point in enumerate(item.points):
            commit = (point.run.git_commit or "-")[:10] + ("*" if point.run.git_dirty else "")
            versions = ", ".join(f"{name} {version}" for name, version in point.versions.items())
            change = changes.get(index)
            rows.append([point.run.id, point.run.created[:19].replace("T", " "), commit, versions,
                         numbers.step_time(point.step_ms), numbers.rate(point.samples_per_s),
                         numbers.metric(point.metric_value),
                         f"change: {change.ratio - 1:+.1%}" if change else ""])
        lines[0] = printable(lines[0])
        lines.append(grid(rows, ["run", "created (UTC)", "commit", "versions", "step time", "throughput", "quality",
                                 ""]))
        blocks.append("\n".join(lines))
    if not blocks:
        return "no saved runs match (save runs with: xfbench run --save)"
    return "\n\n".join(blocks) + f"\n\nchange points: {METHOD}; * = uncommitted changes"


def figure(items: list[Series]) -> Figure:
    """Step time against run, one line per cell, change points as vertical lines."""
    from xfbench.reports.plots import _figure, colour, literal

    fig = _figure(7.0, 3.4)
    axes = fig.add_subplot()
    backends = [item.backend for item in items]
    for item in items:
        if not item.points:
            continue
        xs = [point.run.id for point in item.points]
        line_colour = colour(item.backend, backends)
        axes.plot(xs, [point.step_ms for point in item.points], marker="o", color=line_colour, label=literal(item.label))
        for change in item.changes:
            axes.axvline(change.run_id - 0.5, color=line_colour, linestyle="--", linewidth=1)
            axes.annotate(f"{change.ratio - 1:+.0%}", (change.run_id - 0.5, item.points[change.index].step_ms),
                          color=line_colour, fontsize=8, xytext=(3, 3), textcoords="offset points")
    axes.set_xlabel("saved run")
    axes.set_ylabel("ms per training step (median)")
    axes.set_title("step time over saved runs (dashed: change points)")
    axes.set_ylim(bottom=0)
    if items:
        axes.legend(fontsize=8)
    return fig
