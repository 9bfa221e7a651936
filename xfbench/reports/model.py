"""The one row model every renderer shares: a :class:`Result` seen as tables, one :class:`Group` per task and device
(and machine), one :class:`Row` per backend. Built once from the Result; text, Markdown, HTML, CSV and the notebook
view only format it. Statistics come from ``compare.stats`` (ratios, seed spread, time-to-accuracy), never from a
renderer.

Values stay raw here (floats, None when not measured); renderers format them with ``reports.numbers`` and escape
every string that came from the result file.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from xfbench.compare.results.cell import Cell, quality_metric
from xfbench.compare.results.result import Comparison, Ratio, Result
from xfbench.compare.stats.parity import summary as parity_summary
from xfbench.compare.stats.quality import SeedSpread, TimeToTarget, seed_spread, target_of, time_to_target
from xfbench.reports import numbers

FAULTS_WORTH_NOTING = 100  # minor page faults per step; a steady step has about none
METRIC_LABELS = {"accuracy": "accuracy", "token_accuracy": "token accuracy", "r2": "R²"}


@dataclass
class Row:
    """One backend of one table."""

    cell: Cell
    metric: str | None
    value: float | None
    std: float | None
    ratio: Ratio | None
    target: TimeToTarget | None
    parity: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)

    @property
    def backend(self) -> str:
        return self.cell.backend

    @property
    def status(self) -> str:
        """``ok`` (with what makes the step time suspect), or the status and its reason."""
        if not self.cell.ok:
            return f"{self.cell.status}: {self.cell.error}"
        return "ok" + (f" ({'; '.join(self.notes)})" if self.notes else "")


@dataclass
class Group:
    """One table: a task on one device kind of one machine."""

    task: str
    device: str
    device_names: list[str]
    description: str | None
    rows: list[Row]
    comparison: Comparison | None
    spread: SeedSpread | None
    target: float | None
    machine: str | None = None

    @property
    def title(self) -> str:
        names = f" ({', '.join(self.device_names)})" if self.device_names else ""
        return f"{self.task} on {self.device}{names}{f', node {self.machine}' if self.machine else ''}"

    @property
    def metric_label(self) -> str:
        metric = next((row.metric for row in self.rows if row.metric), None)
        return METRIC_LABELS.get(metric or "", "accuracy / R²")

    @property
    def best_step(self) -> str | None:
        """The backend with the lowest step time (the comparison's fastest when there is one)."""
        if self.comparison is not None:
            return self.comparison.fastest
        timed = [row for row in self.rows if row.cell.ok and row.cell.step_ms() is not None]
        return min(timed, key=lambda row: row.cell.step_ms() or 0).backend if timed else None

    @property
    def best_values(self) -> list[str]:
        """The backends with the highest quality metric; none when every scored backend has the same value (nobody
        is best: the same accuracy on all four is the expected outcome of identical computations)."""
        return winners({row.backend: row.value for row in self.rows if row.value is not None}, lowest=False)

    @property
    def best_value(self) -> str | None:
        """The one backend with the highest quality metric, or None (none scored, or a tie)."""
        best = self.best_values
        return best[0] if len(best) == 1 else None

    @property
    def best_targets(self) -> list[str]:
        """The backends that reached the target in the least training time (none when all took the same)."""
        return winners({row.backend: row.target.seconds for row in self.rows
                        if row.target is not None and row.target.seconds is not None}, lowest=True)

    @property
    def best_target(self) -> str | None:
        best = self.best_targets
        return best[0] if len(best) == 1 else None

    def answer(self) -> str | None:
        """One line: which backend is fastest and by how much over the next one, and whether that is resolved.

        Example:
            >>> from xfbench.compare.results.result import Comparison, Ratio
            >>> c = Comparison("mlp", "cpu", "jax", [Ratio("jax", 1.0, 1.0, 1.0), Ratio("torch", 2.4, 2.3, 2.5, resolved=True)],
            ...                fastest="jax", runner_up="torch", resolved=True)
            >>> Group("mlp", "cpu", [], None, [], c, None, None).answer()
            'jax is fastest: 2.40× faster than torch [2.30–2.50], the next fastest (resolved at 95%)'
        """
        comparison = self.comparison
        if comparison is None:
            return None
        if comparison.runner_up is None:
            return f"only {comparison.fastest} was timed"
        line = f"{comparison.fastest} is fastest"
        runner_up = comparison.ratio(comparison.runner_up)
        if comparison.reference == comparison.fastest and runner_up is not None:
            bounds = "" if runner_up.low is None else f" {numbers.interval(runner_up.low, runner_up.high)}"
            line += f": {numbers.times(runner_up.ratio)} faster than {comparison.runner_up}{bounds}, the next fastest"
        else:
            line += f"; next: {comparison.runner_up}"
        if comparison.resolved is None:
            line += " (too few rounds for an interval)"
        elif comparison.resolved:
            line += " (resolved at 95%)"
        else:
            line += (" (NOT resolved: the 95% interval includes 1; more --rounds or --processes may tell them "
                     "apart)")
        if not comparison.paired:
            line += "; timed one backend after another, so the machine's drift is in these ratios"
        return line

    def notes(self) -> list[str]:
        """The lines under a table: the answer, the comparison's note, the seed-spread verdict, the target."""
        lines = [line for line in (self.answer(), self.comparison.note if self.comparison else None) if line]
        if self.spread is not None:
            lines.append(spread_text(self.spread))
        best = self.best_target
        if best is not None and self.target is not None:
            row = next(row for row in self.rows if row.backend == best)
            lines.append(f"first to {self.metric_label} {self.target:g}: {best}, after "
                         f"{numbers.duration(row.target.seconds)} of training (epoch {row.target.epoch})")  # type: ignore[union-attr]
        return lines


def winners(values: dict[str, float], lowest: bool) -> list[str]:
    """The keys whose value is the best (lowest or highest), in order; none when every value is the same (with two
    or more values: a tie of all is no winner).

    Example:
        >>> winners({"a": 0.97, "b": 0.98, "c": 0.98}, lowest=False), winners({"a": 0.97, "b": 0.97}, lowest=False)
        (['b', 'c'], [])
    """
    if not values:
        return []
    best = min(values.values()) if lowest else max(values.values())
    found = [key for key, value in values.items() if value == best]
    return [] if len(found) == len(values) > 1 else found


def spread_text(spread: SeedSpread) -> str:
    """The seed-spread verdict in words."""
    label = METRIC_LABELS.get(spread.metric, spread.metric)
    verdict = "within" if spread.within else "MORE than"
    return (f"{label} gap between backends {spread.gap:.4f} is {verdict} what seed-to-seed spread explains "
            f"(±{spread.band:.4f}, 2 standard errors over {spread.seeds} seeds)")


def spread_note(cells: list[Cell]) -> str | None:
    """With several seeds: do the backends' mean metrics differ by more than their seed-to-seed spread? (in words)"""
    spread = seed_spread(cells)
    return None if spread is None else spread_text(spread)


def _row(cell: Cell, comparison: Comparison | None, target: float | None) -> Row:
    metric = quality_metric(cell)
    value = cell.metrics.get(metric) if metric else None
    std = None
    if metric and len(cell.seed_metrics) > 1:
        values = [m[metric] for m in cell.seed_metrics if m.get(metric) is not None]
        if len(values) > 1:
            value, std = statistics.mean(values), statistics.stdev(values)
    notes = []
    if cell.ok:
        if cell.timing.recompiles:
            notes.append(f"{cell.timing.recompiles} recompiles while timed")
        faults = cell.timing.page_faults_per_step
        if faults is not None and faults >= FAULTS_WORTH_NOTING:
            notes.append(f"{faults:,.0f} page faults/step")
    return Row(cell=cell, metric=metric, value=value, std=std,
               ratio=comparison.ratio(cell.backend) if comparison is not None and cell.ok else None,
               target=time_to_target(cell, target) if cell.ok else None,
               parity=parity_summary(cell.parity) if cell.ok and cell.parity and cell.parity.grads else None,
               notes=notes)


def threads_text(result: Result) -> str:
    """The threads per framework the run gave every backend (on Ray: as the executor set them, per node)."""
    executor = result.config.get("executor") or {}
    if isinstance(executor, dict) and executor.get("kind") == "ray":
        return str(executor.get("threads", "?"))
    return str(result.config.get("threads", "?"))


def nodes_line(result: Result) -> str | None:
    """Where a cluster run's cells ran: one entry per Ray node (None for a local run)."""
    nodes = result.nodes()
    if not nodes:
        return None
    described = [f"{node.name} ({node.cpu or 'unknown CPU'}, {node.usable_cores or '?'} cores"
                 f"{f', {node.gpus} GPUs' if node.gpus else ''})" for node in nodes]
    return f"ran on {len(nodes)} Ray node{'s' if len(nodes) > 1 else ''}: {'; '.join(described)}"


def groups(result: Result, target: float | None = None) -> list[Group]:
    """The tables of a result, in its order: per task, per device kind, per machine (a cluster run's node; backends
    are compared only on one machine). ``target`` overrides every task's time-to-accuracy target."""
    cells_by: dict[tuple[str, str, str | None], list[Cell]] = {}
    for cell in result.cells:
        cells_by.setdefault((cell.task, cell.device.kind, cell.node_id), []).append(cell)
    out = []
    descriptions = result.config.get("task_descriptions") or {}
    for (task, device, node), cells in cells_by.items():
        comparison = result.comparison(task, device, node)
        goal = target_of(result.config, task, target)
        out.append(Group(
            task=task, device=device, device_names=sorted({cell.device.name for cell in cells if cell.device.name}),
            description=descriptions.get(task) if isinstance(descriptions, dict) else None,
            rows=[_row(cell, comparison, goal) for cell in cells], comparison=comparison, spread=seed_spread(cells),
            target=goal, machine=cells[0].machine,
        ))
    return out
