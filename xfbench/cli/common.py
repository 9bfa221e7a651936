"""What every command of the CLI shares: one-line argument errors, the arguments several commands take, progress on
stderr, printing to stdout, the report files of a run, the results store, and Markdown summaries.

Rules: bad input is one line on stderr naming the valid choices, exit code 2; tables go to stdout, progress to
stderr; frameworks' log output never reaches the terminal (it stays in the worker logs).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from xfbench.errors import XfbenchError
from xfbench.progress import Progress, for_terminal


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: 'xfbench run: error: ... (see xfbench run --help)', exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def add_matrix_arguments(parser: argparse.ArgumentParser, all_tasks: bool = False) -> None:
    """``--tasks``, ``--backends`` and ``--json``, with the registered names in the help."""
    from xfbench import backends
    from xfbench.tasks import DEFAULT_TASKS, task_names

    default_tasks = ",".join(task_names() if all_tasks else DEFAULT_TASKS)
    parser.add_argument("--tasks", help=f"comma-separated built-in tasks: {', '.join(task_names())} "
                                        f"(default: {default_tasks})")
    parser.add_argument("--backends", help=f"comma-separated backends: {backends.help_text()}, or all "
                                           f"(default: {','.join(backends.DEFAULT_BACKENDS)}; xfbench list says "
                                           "what each runs)")
    parser.add_argument("--json", metavar="PATH", help="write the result as JSON to PATH")


def add_report_arguments(parser: argparse.ArgumentParser, target: bool = True) -> None:
    group = parser.add_argument_group("reports (every path is checked before any work starts)")
    group.add_argument("--html", metavar="PATH", help="write a self-contained HTML report with charts")
    group.add_argument("--md", metavar="PATH", help="write a Markdown summary (for a pull request or "
                                                    "$GITHUB_STEP_SUMMARY)")
    group.add_argument("--csv", metavar="PATH", help="write one CSV row per cell")
    if target:
        group.add_argument("--target", type=float, help="time-to-accuracy target for every task, e.g. 0.95 "
                                                        "(default: each built-in task's own)")


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    from xfbench.compare.results.store import STORE_ENV

    parser.add_argument("--save", action="store_true", help="append this run, with its git commit, versions and "
                                                            "machine, to the results store")
    parser.add_argument("--store", metavar="PATH", help=f"the results store (SQLite; default: ${STORE_ENV}, else "
                                                        "~/.local/share/xfbench/results.sqlite)")


def add_gate_arguments(parser: argparse.ArgumentParser) -> None:
    from xfbench.compare.stats.gate import ALPHA, MIN_EFFECT

    parser.add_argument("--min-effect", type=float, default=MIN_EFFECT, help="smallest slowdown that counts as a "
                                                                             "regression (default: %(default)s)")
    parser.add_argument("--alpha", type=float, default=ALPHA, help="family-wise false-alarm level across cells, "
                                                                   "Holm-corrected (default: %(default)s)")
    parser.add_argument("--allow-missing", action="store_true", help="pass the gate even when cells of the baseline "
                                                                     "are missing or failed (they are still reported)")


def check_output(path: str | None) -> str | None:
    """A path given for a file to write, checked before any work starts (None stays None)."""
    from xfbench.compare.results.files import check_output as check

    return None if path is None else check(path)


def report_paths(args: argparse.Namespace) -> dict[str, str]:
    """The report files asked for, format -> path, each checked before any work starts."""
    return {fmt: check_output(getattr(args, fmt)) for fmt in ("html", "md", "csv")  # type: ignore[misc]
            if getattr(args, fmt, None) is not None}


def plot_path(path: str | None) -> str | None:
    """A ``--plot`` path: writable, and named .svg or .png (the format comes from the name)."""
    plot = check_output(path)
    if plot is not None and not plot.lower().endswith((".svg", ".png")):
        raise XfbenchError(f"--plot {plot!r}: give a .svg or .png file name")
    return plot


Output = tuple[str, str, Callable[[], None]]  # (what, path, write it)


def report_outputs(result: Any, paths: dict[str, str]) -> list[Output]:
    """The report files asked for, as outputs for :func:`keep_outputs`."""
    from xfbench import reports

    return [(f"{fmt} report", path, functools.partial(reports.write, result, path, fmt)) for fmt, path in paths.items()]


def keep_outputs(outputs: list[Output], result: Any = None, output: str | None = None, store: Any = None,
                 kind: str = "run") -> bool:
    """After a run whose table is printed: write each optional output and save ``result`` to the store, every failure
    one line naming it while the others are still written; say where everything went. When something failed and the
    result has no file of its own (no ``--json``), it is kept in one and named, so nothing measured is lost. True
    when everything was written."""
    written = True
    for what, path, write in outputs:
        try:
            write()
        except (OSError, XfbenchError) as error:
            why = getattr(error, "strerror", None) or error
            print(f"xfbench: error: cannot write the {what} {path!r}: {why}", file=sys.stderr)
            written = False
        else:
            print(f"xfbench: {what} written to {path}", file=sys.stderr)
    if store is not None:
        try:
            run_id = store.save(result, kind)
        except XfbenchError as error:
            print(f"xfbench: error: {error}; the run is not saved there", file=sys.stderr)
            written = False
        else:
            print(f"xfbench: saved as run {run_id} in {store.path}", file=sys.stderr)
        finally:
            store.close()
    if output:
        print(f"xfbench: result written to {output}", file=sys.stderr)
    elif not written and result is not None:
        print(f"xfbench: the result is kept in {keep_result(result)}", file=sys.stderr)
    return written


def keep_result(result: Any) -> str:
    """Save ``result`` under a name of its own (the working folder, else the temporary one); its path."""
    name = time.strftime("xfbench-result-%Y%m%d-%H%M%S.json")
    for folder in (os.getcwd(), tempfile.gettempdir()):
        path = os.path.join(folder, name)
        try:
            result.save(path)
        except OSError:
            continue
        return path
    raise XfbenchError("cannot keep the result: neither the working folder nor the temporary one is writable")


@contextlib.contextmanager
def showing_progress(quiet: bool, total: int, unit: str = "cells") -> Iterator[Progress]:
    """Progress on stderr for the length of a run (``progress.for_terminal``); a live bar is closed however the run
    ends."""
    progress = for_terminal(quiet, total, unit)
    try:
        yield progress
    finally:
        progress.close()


def emit(text: str) -> None:
    """Print to stdout; a closed stdout (``xfbench run | head -1``) is not an error: every file is written."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def open_store(args: argparse.Namespace) -> Any:
    """The results store when ``--save`` asks for it, opened (and created) before any work starts."""
    if not getattr(args, "save", False):
        if getattr(args, "store", None) is not None:
            raise XfbenchError("--store names where --save writes; add --save")
        return None
    from xfbench.compare.results.store import Store

    return Store(args.store)


def write_summary(path: str | None, text: str) -> None:
    """Markdown to ``path``: appended when it exists ($GITHUB_STEP_SUMMARY collects several steps), else created."""
    if path is None:
        return
    if os.path.exists(path):
        with open(path, "a", encoding="utf-8") as handle:
            handle.write("\n" + text)
    else:
        from xfbench.compare.results.files import write_atomic

        write_atomic(path, text)
    print(f"xfbench: summary written to {path}", file=sys.stderr)


def failed(result: Any) -> int:
    """The exit code of a run: 1 if any cell errored or diverged."""
    return 1 if any(cell.failed for cell in result.cells) else 0
