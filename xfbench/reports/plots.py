"""Charts of a Result with matplotlib: step time, throughput, accuracy, phases, training curves, step-time
distribution and sweeps. Each function takes a :class:`reports.model.Group` (one task on one device) and returns a
``matplotlib.figure.Figure`` (no pyplot state); :func:`svg` turns one into inline SVG for the HTML report.

Rules: every chart has a title saying what is better (lower / higher), axis labels with units, the best value
marked, and each backend in the same colour everywhere (Okabe-Ito, a colour-blind-safe palette).
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from xfbench.backends import BUILTIN_ORDER
from xfbench.errors import unknown_name
from xfbench.reports.model import Group, Row, groups, winners

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from xfbench.compare.results.result import Result

# Okabe & Ito (2008), "Color Universal Design": distinguishable with every common colour-vision deficiency
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
BEST = "#000000"
KINDS = ("step-time", "throughput", "quality", "phases", "curves", "distribution")


def colour(backend: str, others: list[str] | None = None) -> str:
    """The colour of ``backend``: fixed for the built-in ones (by their order in the backend registry), by order
    among ``others`` for the rest.

    Example:
        >>> colour("torch"), colour("torch") == colour("torch", ["jax"])
        ('#009E73', True)
    """
    if backend in BUILTIN_ORDER:
        return OKABE_ITO[BUILTIN_ORDER.index(backend) % len(OKABE_ITO)]
    unknown = sorted({*(others or []), backend} - set(BUILTIN_ORDER))
    return OKABE_ITO[(4 + unknown.index(backend)) % len(OKABE_ITO)]


def literal(text: str) -> str:
    r"""Text from a result, shown as the text it is: matplotlib reads ``$...$`` as math (and fails on what is not
    valid math), so every dollar sign is escaped.

    Example:
        >>> literal("a $x^{$ b")
        'a \\$x^{\\$ b'
    """
    return str(text).replace("$", r"\$")


def shown(text: str) -> str:
    """The text a chart shows for ``text`` made :func:`literal` (for labels outside the chart: HTML, accessibility)."""
    return text.replace(r"\$", "$")


def _figure(width: float = 6.4, height: float = 3.2) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def svg(figure: Figure) -> str:
    """The figure as an ``<svg>`` element (text kept as text, no timestamp), for inlining in HTML."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "xfbench"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": "xfbench (matplotlib)"})
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def write_figure(figure: Figure, path: str) -> None:
    """A figure as SVG or PNG (by the file name), written atomically."""
    from xfbench.compare.results.files import write_atomic

    buffer = io.BytesIO()
    if path.lower().endswith(".png"):
        figure.savefig(buffer, format="png", dpi=120)
    else:
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    write_atomic(path, buffer.getvalue())


def _bars(group: Group, rows: list[Row], values: list[float], title: str, label: str, best: list[str],
          spread: tuple[list[float], list[float]] | None = None, log: bool = False, fmt: Any = None) -> Figure:
    """Horizontal bars, one per row, in the backends' colours; ``spread`` = (below, above) error bars; the best bars
    (none for a tie of all) outlined and labelled."""
    figure = _figure(6.4, 0.9 + 0.42 * len(rows))
    axes = figure.add_subplot()
    names = [row.backend for row in rows]
    positions = np.arange(len(rows))[::-1]
    everyone = [row.backend for row in group.rows]
    bars = axes.barh(positions, values, xerr=None if spread is None else [spread[0], spread[1]],
                     color=[colour(name, everyone) for name in names],
                     error_kw={"ecolor": "#444444", "capsize": 3, "linewidth": 1})
    axes.set_yticks(positions, [literal(name) for name in names])
    axes.set_title(literal(title), fontsize=11, loc="left")
    axes.set_xlabel(label)
    if log and min(values) > 0 and max(values) / min(values) > 8:
        axes.set_xscale("log")
    beyond = [0.0] * len(rows) if spread is None else spread[1]
    for bar, name, value, extra in zip(bars, names, values, beyond, strict=True):
        text = fmt(value) if fmt else f"{value:.3g}"
        if name in best:
            bar.set_edgecolor(BEST)
            bar.set_linewidth(2)
            text += "  ★ best"
        axes.annotate(text, (bar.get_width() + extra, bar.get_y() + bar.get_height() / 2), xytext=(5, 0),
                      textcoords="offset points", va="center", fontsize=8)
    axes.margins(x=0.25)
    axes.spines[["top", "right"]].set_visible(False)
    return figure


def step_time(group: Group) -> Figure | None:
    """Median ms per step per backend, with the interquartile range of the timed blocks as error bars."""
    from xfbench.reports import numbers

    rows = [row for row in group.rows if row.cell.ok and row.cell.timing.step_ms]
    if not rows:
        return None
    medians, low, high = [], [], []
    for row in rows:
        step = row.cell.timing.step_ms
        blocks = row.cell.timing.blocks()
        q25, q75 = np.percentile(blocks, [25, 75]) if blocks else (step.median, step.median)  # type: ignore[union-attr]
        medians.append(step.median)  # type: ignore[union-attr]
        low.append(max(0.0, step.median - q25))  # type: ignore[union-attr]
        high.append(max(0.0, q75 - step.median))  # type: ignore[union-attr]
    return _bars(group, rows, medians, f"Step time: {group.title} (lower is better)",
                 "ms per training step (median; bars: interquartile range)", [group.best_step] if group.best_step else [],
                 spread=(low, high), log=True, fmt=numbers.step_time)


def throughput(group: Group) -> Figure | None:
    """Training samples per second per backend (batch size / median step time)."""
    from xfbench.reports import numbers

    rows = [row for row in group.rows if row.cell.ok and row.cell.timing.samples_per_s]
    if not rows:
        return None
    values = [row.cell.timing.samples_per_s for row in rows]
    best = winners({row.backend: row.cell.timing.samples_per_s for row in rows}, lowest=False)  # type: ignore[misc]
    return _bars(group, rows, values, f"Throughput: {group.title} (higher is better)",  # type: ignore[arg-type]
                 "training samples per second", best, log=True, fmt=lambda v: numbers.rate(v, ""))


def quality(group: Group) -> Figure | None:
    """The test metric per backend (mean ± std over seeds when there are several)."""
    rows = [row for row in group.rows if row.value is not None and math.isfinite(row.value)]
    if not rows:
        return None
    values = [row.value for row in rows]
    errors = [row.std or 0.0 for row in rows]
    figure = _bars(group, rows, values, f"{group.metric_label.capitalize()} on the test split: {group.title} "  # type: ignore[arg-type]
                   "(higher is better)", group.metric_label, group.best_values, spread=(errors, errors),
                   fmt=lambda v: f"{v:.4f}")
    axes = figure.axes[0]
    top = max(v + e for v, e in zip(values, errors, strict=True))  # type: ignore[operator]
    low = min(v - e for v, e in zip(values, errors, strict=True)) - 0.02 * max(abs(v) for v in values)  # type: ignore[operator,type-var]
    low = max(0.0, low) if group.metric_label in ("accuracy", "token accuracy") else low
    axes.set_xlim(low, top + 0.35 * (top - low))
    return figure


PHASES = (("import_s", "import"), ("build_s", "build"), ("first_step_s", "first step (compile)"),
          ("steps_s", "training (other steps)"), ("eval_s", "evaluation"))
PHASE_COLOURS = ("#BBBBBB", "#88CCEE", "#CC6677", "#117733", "#DDCC77")  # Paul Tol's muted: safe for colour blindness


def phases(group: Group) -> Figure | None:
    """Where each backend's wall time went: import, build, first step (trace/compile), the other training steps,
    evaluation; stacked, in seconds."""
    rows = [row for row in group.rows if row.cell.ok and row.cell.timing.train_s is not None]
    if not rows:
        return None
    figure = _figure(6.4, 1.1 + 0.42 * len(rows))
    axes = figure.add_subplot()
    positions = np.arange(len(rows))[::-1]
    left = np.zeros(len(rows))
    for (key, label), shade in zip(PHASES, PHASE_COLOURS, strict=True):
        values = []
        for row in rows:
            timing = row.cell.timing
            if key == "steps_s":
                values.append(max(0.0, (timing.train_s or 0) - (timing.first_step_s or 0)))
            else:
                values.append(getattr(timing, key) or 0.0)
        axes.barh(positions, values, left=left, color=shade, label=label, edgecolor="white", linewidth=0.5)
        left += values
    axes.set_yticks(positions, [literal(row.backend) for row in rows])
    axes.set_title(literal(f"Phases: {group.title} (seconds of wall time)"), fontsize=11, loc="left")
    axes.set_xlabel("seconds (process 0: import, build, train, evaluate)")
    axes.legend(fontsize=7, ncols=3, loc="upper center", bbox_to_anchor=(0.5, -0.35 if len(rows) < 3 else -0.2),
                frameon=False)
    axes.spines[["top", "right"]].set_visible(False)
    return figure


def curves(group: Group) -> Figure | None:
    """The test metric after every epoch, against the epoch and against the cumulative training time, per backend;
    the target as a dashed line."""
    rows = [row for row in group.rows if row.cell.curve and row.metric]
    if not rows:
        return None
    figure = _figure(7.2, 3.0)
    by_epoch, by_time = figure.subplots(1, 2, sharey=True)
    everyone = [row.backend for row in group.rows]
    for row in rows:
        points = [point for point in row.cell.curve if point.test.get(row.metric) is not None]  # type: ignore[arg-type]
        values = [point.test[row.metric] for point in points]  # type: ignore[index]
        style = {"color": colour(row.backend, everyone), "label": literal(row.backend), "linewidth": 1.5, "marker": "o",
                 "markersize": 2.5}
        by_epoch.plot([point.epoch for point in points], values, **style)
        by_time.plot([point.train_s for point in points], values, **style)
    for axes in (by_epoch, by_time):
        if group.target is not None:
            axes.axhline(group.target, color="#666666", linestyle="--", linewidth=1)
        axes.grid(alpha=0.3)
        axes.spines[["top", "right"]].set_visible(False)
    by_epoch.set_xlabel("epoch")
    by_time.set_xlabel("training time, s (evaluation off the clock)")
    by_epoch.set_ylabel(f"test {group.metric_label}")
    by_time.legend(fontsize=8, frameon=False)
    target = f"; dashed: target {group.target:g}" if group.target is not None else ""
    figure.suptitle(literal(f"Training curves: {group.title} (higher is better{target})"), fontsize=11, x=0.02, ha="left")
    return figure


def distribution(group: Group) -> Figure | None:
    """Every timed block's ms per step, per backend: a box (quartiles) with the blocks as dots."""
    rows = [row for row in group.rows if row.cell.ok and row.cell.timing.blocks()]
    if not rows:
        return None
    figure = _figure(6.4, 0.9 + 0.42 * len(rows))
    axes = figure.add_subplot()
    positions = np.arange(len(rows))[::-1]
    everyone = [row.backend for row in group.rows]
    data = [row.cell.timing.blocks() for row in rows]
    boxes = axes.boxplot(data, positions=positions, orientation="horizontal", widths=0.5, showfliers=False,
                         patch_artist=True, medianprops={"color": "black"})
    rng = np.random.default_rng(0)
    for patch, row, values, position in zip(boxes["boxes"], rows, data, positions, strict=True):
        patch.set_facecolor(colour(row.backend, everyone))
        patch.set_alpha(0.55)
        axes.scatter(values, position + rng.uniform(-0.18, 0.18, len(values)), s=4, color=colour(row.backend, everyone),
                     alpha=0.6, linewidths=0)
    axes.set_yticks(positions, [literal(row.backend) for row in rows])
    flat = [value for values in data for value in values]
    if min(flat) > 0 and max(flat) / min(flat) > 8:
        axes.set_xscale("log")
    axes.set_title(literal(f"Step-time distribution: {group.title} (lower is better)"), fontsize=11, loc="left")
    axes.set_xlabel("ms per step of each timed block (box: quartiles)")
    axes.spines[["top", "right"]].set_visible(False)
    return figure


def sweep(points: dict[str, list[tuple[float, float]]], parameter: str, title: str, ylabel: str) -> Figure:
    """A log-log line per backend: ``points[backend]`` is [(parameter value, measurement)]."""
    figure = _figure(6.4, 3.6)
    axes = figure.add_subplot()
    everyone = list(points)
    for backend, series in points.items():
        series = sorted(series)
        axes.plot([x for x, _ in series], [y for _, y in series], marker="o", label=literal(backend),
                  color=colour(backend, everyone), linewidth=1.5)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel(literal(parameter))
    axes.set_ylabel(ylabel)
    axes.set_title(literal(title), fontsize=11, loc="left")
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=8, frameon=False)
    axes.spines[["top", "right"]].set_visible(False)
    return figure


def figures(group: Group) -> list[tuple[str, Figure]]:
    """Every chart of one table that has data, as (kind, figure)."""
    makers = (("step-time", step_time), ("throughput", throughput), ("quality", quality), ("phases", phases),
              ("curves", curves), ("distribution", distribution))
    out = []
    for kind, make in makers:
        figure = make(group)
        if figure is not None:
            out.append((kind, figure))
    return out


def result_figures(result: Result, kinds: str | list[str] | None = None, task: str | None = None,
                   target: float | None = None) -> list[Figure]:
    """Every chart of a result (``Result.plot``): per task and device, ``kinds`` of :data:`KINDS` (default: all
    that have data), of ``task`` only when given.

    Example:
        >>> from xfbench.compare.results.result import Result
        >>> result_figures(Result())
        []
    """
    wanted = [kinds] if isinstance(kinds, str) else kinds
    for kind in wanted or []:
        if kind not in KINDS:
            raise unknown_name("plot kind", kind, KINDS)
    try:
        import matplotlib.pyplot  # noqa: F401  (lets Jupyter's inline backend display the figures)
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        pass
    return [figure for group in groups(result, target) if task is None or group.task == task
            for kind, figure in figures(group) if wanted is None or kind in wanted]
