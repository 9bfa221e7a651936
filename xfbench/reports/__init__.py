"""Reports: a Result as a text table, Markdown, HTML with charts, or CSV. Renderers read only the Result, through
the shared row model (``reports.model``); printing and exit codes stay in the CLI.

Example:
    >>> from xfbench.compare.results.result import Result
    >>> render(Result(), "csv").splitlines()[0].split(",")[:4]
    ['task', 'device', 'device_name', 'backend']
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xfbench.errors import unknown_name

if TYPE_CHECKING:
    from xfbench.compare.results.result import Result

FORMATS = ("csv", "html", "md", "text")


def check_format(fmt: str) -> str:
    """``fmt`` if it is a report format, else the one-line error naming the choices."""
    if fmt not in FORMATS:
        raise unknown_name("report format", fmt, FORMATS)
    return fmt


def render(result: Result, fmt: str, target: float | None = None) -> str:
    """The result in ``fmt`` (one of :data:`FORMATS`); ``target`` overrides the time-to-accuracy targets."""
    check_format(fmt)
    if fmt == "html":
        from xfbench.reports.html import render as html

        return html(result, target)
    if fmt == "md":
        from xfbench.reports.markdown import render as markdown

        return markdown(result, target)
    if fmt == "csv":
        from xfbench.reports.csvfile import render as csv

        return csv(result, target)
    from xfbench.reports.table import render as text

    return text(result, target=target) + "\n"


def write(result: Result, path: str, fmt: str, target: float | None = None) -> None:
    """Render and write atomically (a reader never sees half a report)."""
    from xfbench.compare.results.files import write_atomic

    write_atomic(path, render(result, fmt, target))


def format_of(path: str) -> str | None:
    """The report format a file name implies (``.html``/``.htm``, ``.md``, ``.csv``, ``.txt``), or None.

    Example:
        >>> format_of("out/report.HTML"), format_of("x.json")
        ('html', None)
    """
    suffix = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    return {"html": "html", "htm": "html", "md": "md", "markdown": "md", "csv": "csv", "txt": "text"}.get(suffix)
