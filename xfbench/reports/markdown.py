"""Markdown: the tables per task and device plus a one-line answer per task, for a pull request or
``$GITHUB_STEP_SUMMARY``. GitHub-flavoured tables, built from the shared row model (``reports.model``).

Rule: every string that comes from the result file (task names, descriptions, errors, device names) is escaped, so
a result cannot inject markup, links or HTML into the page it is pasted in.
"""

from __future__ import annotations

import html
import re

from xfbench.compare.results.result import Result
from xfbench.reports import table
from xfbench.reports.model import groups, nodes_line, threads_text

_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def escape(text: object) -> str:
    """``text`` as literal Markdown: HTML-escaped, Markdown punctuation backslash-escaped, one line.

    Example:
        >>> escape("a|b <script>*x*</script>")
        'a\\\\|b &lt;script&gt;\\\\*x\\\\*&lt;/script&gt;'
    """
    flat = " ".join(str(text).split())
    return _SPECIAL.sub(r"\\\1", html.escape(flat, quote=False))


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(escape(cell) for cell in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(escape(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def render(result: Result, target: float | None = None, title: str = "xfbench results") -> str:
    """The whole result as one Markdown document."""
    machine = result.machine or {}
    parts = [f"## {escape(title)}", "",
             f"{escape(machine.get('cpu', 'unknown CPU'))}, {escape(machine.get('cores', '?'))} cores; "
             f"{escape(threads_text(result))} threads per framework; created {escape(result.created)}"
             + ("" if result.complete else " (**incomplete**: read from a partial file)")]
    placed = nodes_line(result)
    if placed:
        parts += ["", escape(placed)]
    if result.config.get("sweep"):
        from xfbench.reports import sweep

        lines = sweep.render_text(result).splitlines()
        parts += ["", f"### {escape(lines[0])}", "", "```", *lines[1:], "```"]
    for group in groups(result, target):
        parts += ["", f"### {escape(group.title)}"]
        if group.description:
            parts.append(f"*{escape(group.description)}*")
        answer = group.answer()
        if answer:
            parts += ["", f"**{escape(answer)}**"]
        parts += ["", _table(table.headers(group), [table.cells(group, row) for row in group.rows])]
        others = group.notes()[1 if answer else 0:]
        if others:
            parts += [""] + [f"- {escape(line)}" for line in others]
    parts += ["", f"<sub>{escape(result.comparisons[0].method) if result.comparisons else ''}</sub>"]
    return "\n".join(parts).rstrip() + "\n"
