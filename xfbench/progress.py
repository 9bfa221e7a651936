"""Progress on a terminal: one live bar over the run's cells, with the current cell and phase beside it (rich).

The runner reports progress as lines of text (``progress(message)``) and, where the reporter has one, calls
``advance()`` when a cell is complete. On a terminal the CLI uses :class:`LiveProgress`; elsewhere (a pipe, CI
logs) it prints the lines as they come; ``--quiet`` prints nothing. The Python API prints nothing unless asked
(``xfbench.run(progress=print)``), so a notebook cell is not flooded.
"""

from __future__ import annotations

import sys


class LiveProgress:
    """A rich progress bar on stderr: ``unit`` done of ``total``, elapsed time, and the latest message."""

    def __init__(self, total: int, unit: str = "cells") -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn("xfbench"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
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
