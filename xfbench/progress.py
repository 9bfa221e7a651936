"""Progress of long work, as one type: lines of text as things happen, and ``advance()`` when a unit (a cell, a
process pair) is complete.

Every runner takes a :class:`Progress` (or any callable of one string, wrapped by :func:`as_progress`), so the
Python API's ``progress=print`` works as it did. On a terminal the CLI uses :class:`LiveProgress` (a rich bar over
the run's units, the current step beside it); elsewhere (a pipe, CI logs) :class:`PrintProgress`; ``--quiet``
nothing. The Python API prints nothing unless asked, so a notebook cell is not flooded.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


class Progress:
    """Silent progress: the base every kind of progress refines."""

    def __call__(self, message: str) -> None:
        """One line of text: what is happening now."""

    def advance(self) -> None:
        """One unit of the run is complete."""

    def close(self) -> None:
        """The run is over (a live display is taken down)."""


class _Lines(Progress):
    """Progress as a callable of one string (``print``, a logger's method, a list's ``append``)."""

    def __init__(self, say: Callable[[str], Any]) -> None:
        self.say = say

    def __call__(self, message: str) -> None:
        self.say(message)


def as_progress(progress: Progress | Callable[[str], Any] | None) -> Progress:
    """``progress`` as a :class:`Progress`: itself, a callable of one string wrapped, or silence for None.

    Example:
        >>> lines = []
        >>> shown = as_progress(lines.append)
        >>> shown("training"); shown.advance(); lines
        ['training']
    """
    if isinstance(progress, Progress):
        return progress
    if progress is None:
        return Progress()
    return _Lines(progress)


class PrintProgress(Progress):
    """Plain lines on stderr, ``xfbench: `` first (logs, pipes, CI)."""

    def __call__(self, message: str) -> None:
        print(f"xfbench: {message}", file=sys.stderr, flush=True)


class LiveProgress(Progress):
    """A rich progress bar on stderr: ``unit`` done of ``total``, elapsed time, and the latest message."""

    def __init__(self, total: int, unit: str = "cells") -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        self._progress = Bar(TextColumn("xfbench"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
                             TimeElapsedColumn(), TextColumn("{task.description}"),
                             console=Console(file=sys.stderr), transient=False)
        self._task = self._progress.add_task("starting", total=total)
        self._progress.start()
        self._last = ""
        self.closed = False

    def __call__(self, message: str) -> None:
        self._last = message
        self._progress.update(self._task, description=message)

    def advance(self) -> None:
        """A unit is complete: its line (the last message) stays above the bar."""
        self._progress.console.print(f"xfbench: {self._last}", highlight=False, markup=False)
        self._progress.advance(self._task)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._progress.stop()


def for_terminal(quiet: bool, total: int = 0, unit: str = "cells") -> Progress:
    """What the CLI shows on stderr: a live bar on a terminal, plain lines otherwise, nothing when ``quiet``."""
    if quiet:
        return Progress()
    if total and sys.stderr.isatty():
        return LiveProgress(total, unit)
    return PrintProgress()
