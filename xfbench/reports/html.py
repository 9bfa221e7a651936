"""One self-contained HTML report of a Result: no network, no script, the charts inline as SVG (``reports.plots``).

Per task and device: the one-line answer, the table, step time with its spread, throughput, accuracy, the phase
breakdown, training curves, the step-time distribution, parity figures when present, and each backend's fairness
fingerprint; then the machine, the software and the timing protocol.

Rule: every string that comes from the result file is escaped (``html.escape``), so a result cannot inject script
or markup; the SVG is made here by matplotlib from numbers, with its text escaped by matplotlib.
"""

from __future__ import annotations

import html
import json
from typing import Any

from xfbench.compare.results.result import Result
from xfbench.reports import numbers, plots, table
from xfbench.reports.model import Group, groups, nodes_line, threads_text

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1a1a1a; margin: 2rem auto;
       max-width: 1100px; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { margin-top: 2.4rem; border-bottom: 1px solid #ddd; }
.meta, .note { color: #555; } .answer { font-size: 1.1rem; font-weight: 600; margin: 0.6rem 0; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.best { font-weight: 700; }
.charts { display: flex; flex-wrap: wrap; gap: 1rem; }
figure.chart { margin: 0; flex: 1 1 480px; max-width: calc(50% - 0.5rem); }
@media (max-width: 900px) { figure.chart { max-width: 100%; } } figure.chart svg { width: 100%; height: auto; }
details { margin: 0.6rem 0; } code { font-size: 12px; }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; border-radius: 2px; margin-right: 0.3em; }
"""


def esc(value: Any) -> str:
    """Any value as escaped HTML text."""
    return html.escape("" if value is None else str(value), quote=True)


def _table(header: list[str], rows: list[list[str]], best: dict[int, set[int]] | None = None) -> str:
    """An HTML table of text; ``best`` maps a column to the rows whose cells are bold."""
    out = ["<table><thead><tr>" + "".join(f"<th>{esc(cell)}</th>" for cell in header) + "</tr></thead><tbody>"]
    for index, row in enumerate(rows):
        cells = []
        for column, cell in enumerate(row):
            mark = ' class="best"' if best and index in best.get(column, ()) else ""
            cells.append(f"<td{mark}>{esc(cell)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(out) + "</tbody></table>"


def group_table(group: Group) -> str:
    """The group's table with the best step time, accuracy and time-to-target in bold."""
    header = table.headers(group)
    rows = [table.cells(group, row) for row in group.rows]
    names = [row.backend for row in group.rows]
    best = {2: {names.index(group.best_step)} if group.best_step in names else set(),
            1: {names.index(name) for name in group.best_values}}
    if group.target is not None:
        best[header.index(f"to {group.metric_label} {group.target:g}")] = {names.index(name)
                                                                           for name in group.best_targets}
    return _table(header, rows, best)


def parity_table(group: Group) -> str:
    rows = []
    for row in group.rows:
        if row.parity is None or row.cell.parity is None:
            continue
        numbers_ = row.parity
        rows.append([row.backend, numbers.scientific(numbers_["forward_max_abs"]), numbers.scientific(numbers_["loss_rel"]),
                     f"{numbers.scientific(numbers_['grad_rel'])} ({numbers_['grad_tensor']})",
                     numbers.scientific(numbers_.get("params_vs_reference_rel")),
                     numbers.scientific(numbers_.get("params_vs_backends_rel")),
                     "pass" if row.cell.parity.passed else "FAIL: " + "; ".join(row.cell.parity.failures)])
    if not rows:
        return ""
    header = ["backend", "forward max abs vs float64", "loss rel", "worst gradient rel (tensor)",
              "params rel vs float64", "params rel vs other backends", "verdict"]
    return "<h3>Parity against the float64 reference</h3>" + _table(header, rows)


def fingerprints(group: Group) -> str:
    parts = []
    for row in group.rows:
        cell = row.cell
        facts = {"versions": cell.versions, "threads": cell.threads, "task hash": cell.task_hash,
                 **cell.fingerprint}
        items = "".join(f"<tr><th>{esc(key)}</th><td><code>{esc(json.dumps(value) if isinstance(value, (dict, list)) else value)}"
                        f"</code></td></tr>" for key, value in facts.items())
        swatch = f'<span class="swatch" style="background:{plots.colour(cell.backend, [r.backend for r in group.rows])}"></span>'
        parts.append(f"<details><summary>{swatch}{esc(cell.backend)}: how it was built and measured</summary>"
                     f"<table>{items}</table></details>")
    return "<h3>Fairness fingerprint</h3>" + "".join(parts)


def charts(group: Group) -> str:
    out = []
    for kind, figure in plots.figures(group):
        title = plots.shown(figure.axes[0].get_title(loc="left") or figure.get_suptitle())
        # the chart's own title says what it shows: no caption repeating it
        out.append(f'<figure class="chart" data-kind="{esc(kind)}" aria-label="{esc(title)}">{plots.svg(figure)}'
                   "</figure>")
    return f'<div class="charts">{"".join(out)}</div>'


def section(group: Group) -> str:
    notes = group.notes()
    answer = group.answer()
    parts = [f"<section><h2>{esc(group.title)}</h2>"]
    if group.description:
        parts.append(f'<p class="meta">{esc(group.description)}</p>')
    if answer:
        parts.append(f'<p class="answer">{esc(answer)}</p>')
    parts.append(group_table(group))
    parts += [f'<p class="note">{esc(line)}</p>' for line in notes[1 if answer else 0:]]
    parts += [charts(group), parity_table(group), fingerprints(group), "</section>"]
    return "".join(parts)


def sweep_section(result: Result) -> str:
    """For an ``xfbench sweep`` result: the scaling table and the log-log chart."""
    from xfbench.reports import sweep

    text = sweep.render_text(result).splitlines()
    chart = sweep.figure(result)
    title = plots.shown(chart.axes[0].get_title(loc="left"))
    return (f"<section><h2>Scaling</h2><p class=\"meta\">{esc(text[0])}</p><pre>{esc(chr(10).join(text[1:]))}</pre>"
            f'<div class="charts"><figure class="chart" data-kind="sweep" aria-label="{esc(title)}">'
            f"{plots.svg(chart)}</figure></div></section>")


def about(result: Result) -> str:
    facts = {**{f"machine: {key}": value for key, value in (result.machine or {}).items()},
             **{f"software: {key}": value for key, value in (result.versions or {}).items()},
             "created": result.created, "schema version": result.schema_version}
    config = result.config or {}
    for key in ("threads", "seeds", "malloc", "timing", "relative_to"):
        if key in config:
            facts[f"run: {key}"] = json.dumps(config[key]) if isinstance(config[key], (dict, list)) else config[key]
    if result.comparisons:
        facts["ratio method"] = result.comparisons[0].method
    rows = "".join(f"<tr><th>{esc(key)}</th><td>{esc(value)}</td></tr>" for key, value in facts.items())
    return f"<section><h2>Machine, software and protocol</h2><table>{rows}</table></section>"


def render(result: Result, target: float | None = None, title: str = "xfbench report") -> str:
    """The whole report as one HTML document."""
    machine = result.machine or {}
    summary = (f"{machine.get('cpu', 'unknown CPU')}, {machine.get('cores', '?')} cores, "
               f"{threads_text(result)} threads per framework; {result.created}")
    if not result.complete:
        summary += " (incomplete: read from the partial file of an unfinished run)"
    placed = nodes_line(result)
    if placed:
        summary += f"; {placed}"
    sections = "".join(section(group) for group in groups(result, target))
    if result.config.get("sweep"):
        sections = sweep_section(result) + sections
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{esc(title)}</h1><p class=\"meta\">{esc(summary)}</p>"
            f"{sections}{about(result)}</body></html>\n")


def tables(result: Result, target: float | None = None) -> str:
    """The tables alone (no charts), as an HTML fragment: the notebook view of a Result."""
    parts = []
    for group in groups(result, target):
        answer = group.answer()
        parts.append(f"<h4>{esc(group.title)}</h4>" + (f"<p><b>{esc(answer)}</b></p>" if answer else "")
                     + group_table(group))
    return f"<div class=\"xfbench\">{''.join(parts)}</div>"
