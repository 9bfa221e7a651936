"""The CI gate's commands: ``xfbench ab`` (base and head environments timed together), ``xfbench check`` (two saved
results, weaker evidence) and ``xfbench history`` (the trend of cells over saved runs)."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from typing import Any

from xfbench.cli import common
from xfbench.errors import XfbenchError

EPILOG_AB = """examples:
  xfbench ab --base-python base/bin/python --head-python head/bin/python --tasks mlp
  xfbench ab --base-python base/bin/python --head-python head/bin/python --md "$GITHUB_STEP_SUMMARY" --save
  xfbench ab --base-python .venv/bin/python --head-python .venv/bin/python --tasks mlp --inject-slowdown 0.2

exit codes: 0 no confirmed regression, 1 a confirmed regression or a cell missing or failed (named on stderr;
--allow-missing lets the last two pass), or an output that could not be written, 2 bad input.
"""



def add_parsers(commands: argparse._SubParsersAction) -> None:
    from xfbench.compare.arms import DEFAULT_PAIRS
    from xfbench.compare.arms import DEFAULT_TIMING as AB_TIMING
    from xfbench.compare.results.store import STORE_ENV

    ab = commands.add_parser(
        "ab", help="CI gate: time the same matrix in two environments together and flag regressions",
        description="Run the same tasks and backends in two Python environments (base and head: two commits, two\n"
                    "torch versions), with a base and a head worker of each cell alive together taking alternating\n"
                    "turns, over several fresh process pairs. Per cell: the head/base step-time ratio with a 95%\n"
                    "interval, a one-sided t-test over process pairs, Holm correction across cells and a minimum\n"
                    "effect. Verdicts: regression, improvement, no change, too noisy to decide. Exit code 1 only on\n"
                    "a confirmed regression.",
        epilog=EPILOG_AB, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ab.add_argument("--base-python", required=True, metavar="PATH", help="the base environment's interpreter")
    ab.add_argument("--head-python", required=True, metavar="PATH", help="the head environment's interpreter")
    common.add_matrix_arguments(ab)
    ab.add_argument("--threads", type=int, help="threads per framework (default: all usable cores)")
    ab.add_argument("--epochs", type=int, help="override every task's number of epochs")
    ab.add_argument("--pairs", type=int, default=DEFAULT_PAIRS, help="fresh base/head process pairs per cell: the "
                                                                     "unit of replication, taken pair-major (pair 1 "
                                                                     "of every cell, then pair 2, ...; default: "
                                                                     "%(default)s)")
    ab.add_argument("--rounds", type=int, help=f"alternating turns per arm in each pair (default: "
                                               f"{AB_TIMING.rounds})")
    ab.add_argument("--turn-seconds", type=float, help=f"timed seconds per turn (default: {AB_TIMING.turn_s})")
    common.add_gate_arguments(ab)
    ab.add_argument("--timeout", type=float, default=600.0, help="seconds per worker command (default: %(default)s)")
    ab.add_argument("--md", metavar="PATH", help="write a Markdown summary (e.g. $GITHUB_STEP_SUMMARY; appended "
                                                 "to when it exists)")
    common.add_store_arguments(ab)
    ab.add_argument("--inject-slowdown", metavar="F", help="TEST ONLY: make the head's timed blocks F longer with "
                                                           "real busy work (0.2, or torch=0.2,jax=0.1), to check the "
                                                           "gate catches it (benchmarks/validate_gate.py)")
    ab.add_argument("--quiet", action="store_true", help="no progress on stderr")

    ab.set_defaults(handler=command_ab)

    check = commands.add_parser(
        "check", help="compare a result against a baseline result (weaker evidence than ab)",
        description="Compare every cell of RESULT with the same cell of a baseline result, from their saved timed\n"
                    "turns: the ratio of medians with a bootstrap interval and a Mann-Whitney U test, Holm across\n"
                    "cells, a minimum effect. The runs were timed apart, so drift and process offsets are not\n"
                    "cancelled: weaker evidence than xfbench ab. Exit code 1 on a confirmed regression.",
        epilog="example:\n  xfbench check results/latest.json --baseline results/main.json --md $GITHUB_STEP_SUMMARY",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("result", help="the new result JSON")
    check.add_argument("--baseline", required=True, metavar="PATH", help="the baseline result JSON")
    common.add_gate_arguments(check)
    check.add_argument("--md", metavar="PATH", help="write a Markdown summary (appended to when it exists)")

    check.set_defaults(handler=command_check)

    history = commands.add_parser(
        "history", help="the trend of cells over saved runs, with change points",
        description="Every saved run (xfbench run --save) of the matching cells, oldest first, from comparable runs\n"
                    "only (same CPU model, cores, threads and task size as the newest; the rest are counted), with\n"
                    "change points found by PELT (the ruptures library) flagged.",
        epilog="examples:\n  xfbench history --task mlp\n  xfbench history --task cnn28 --backend torch --plot torch.svg\n"
               "  xfbench history --since 2026-11-01",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    history.add_argument("--task", help="only this task")
    history.add_argument("--backend", help="only this backend")
    history.add_argument("--device", help="only this device kind (cpu, gpu)")
    history.add_argument("--since", metavar="DATE", help="only runs created on or after DATE (ISO, e.g. 2026-11-01)")
    history.add_argument("--min-effect", type=float, default=0.05, help="smallest change flagged (default: 0.05)")
    history.add_argument("--plot", metavar="PATH", help="write the chart (.svg or .png)")
    history.add_argument("--store", metavar="PATH", help=f"the results store (default: ${STORE_ENV}, else "
                                                         "~/.local/share/xfbench/results.sqlite)")
    history.set_defaults(handler=command_history)


def report_failures(verdicts: list[Any], allow_missing: bool) -> int:
    """Name every cell that fails the gate on stderr (a regression; a cell missing or failed); the gate's exit code."""
    from xfbench.compare.results.ab import FAILING, exit_code

    for item in verdicts:
        if item.verdict in FAILING:
            print(f"xfbench: {item.verdict}: {item.task} on {item.backend}/{item.device}"
                  + (f": {item.reason}" if item.reason else ""), file=sys.stderr)
    return exit_code(verdicts, allow_missing)


def command_ab(args: argparse.Namespace) -> int:
    from xfbench.compare.ab import run_ab
    from xfbench.compare.arms import ab_request
    from xfbench.compare.stats.gate import check_settings
    from xfbench.reports.gate import render_ab

    check_settings(args.min_effect, args.alpha)
    output = common.check_output(args.json)
    summary = common.check_output(args.md)
    store = common.open_store(args)
    plan, base, head, pairs = ab_request(args.base_python, args.head_python, args.tasks, args.backends, args.threads,
                                         args.epochs, args.pairs, args.rounds, args.turn_seconds, args.min_effect,
                                         args.alpha, args.timeout, args.inject_slowdown)
    with common.showing_progress(args.quiet, plan.num_cells * pairs, "process pairs") as progress:
        outcome = run_ab(plan, base, head, pairs, args.min_effect, args.alpha, progress, output, args.allow_missing)
    common.emit(render_ab(outcome))
    written = common.keep_outputs(summary_outputs(summary, render_ab(outcome, "md")), outcome, output, store, "ab")
    return max(report_failures(outcome.verdicts, args.allow_missing), 0 if written else 1)


def summary_outputs(path: str | None, text: str) -> list[common.Output]:
    """The Markdown summary asked for (``--md``), as an output for ``common.keep_outputs``."""
    return [] if path is None else [("summary", path, functools.partial(common.write_summary, path, text))]


def command_check(args: argparse.Namespace) -> int:
    import xfbench
    from xfbench.compare.stats.gate import CHECK_METHOD, check_settings, check_verdicts
    from xfbench.reports.gate import render_markdown, render_text

    check_settings(args.min_effect, args.alpha)
    summary = common.check_output(args.md)
    result, baseline = xfbench.load(args.result), xfbench.load(args.baseline)
    verdicts = check_verdicts(baseline, result, args.min_effect, args.alpha, name=repr(args.result))
    config = {"min_effect": args.min_effect, "alpha": args.alpha, "threads": result.config.get("threads"),
              "allow_missing": args.allow_missing}
    evidence = "WEAKER EVIDENCE than xfbench ab: " + CHECK_METHOD
    title = "xfbench check"
    machines = [(item.machine or {}).get("cpu") for item in (baseline, result)]
    if machines[0] != machines[1]:
        evidence += f"; the runs are from different CPUs ({machines[0]} vs {machines[1]})"
    common.emit(render_text(verdicts, config, title, evidence))
    written = common.keep_outputs(summary_outputs(summary, render_markdown(verdicts, config, title, evidence)))
    return max(report_failures(verdicts, args.allow_missing), 0 if written else 1)


def command_history(args: argparse.Namespace) -> int:
    import datetime

    from xfbench.compare.results.store import Store, default_path
    from xfbench.compare.stats.gate import check_settings
    from xfbench.compare.stats.history import series
    from xfbench.reports.history import figure, render_text
    from xfbench.reports.plots import write_figure

    since = None
    if args.since is not None:
        try:
            since = datetime.datetime.fromisoformat(args.since).isoformat()
        except ValueError:
            raise XfbenchError(f"--since {args.since!r} is not a date; give an ISO date such as 2026-11-01") from None
    check_settings(args.min_effect)
    plot = common.plot_path(args.plot)
    path = args.store or default_path()
    if not os.path.exists(path):
        raise XfbenchError(f"no results store at {path!r}; save runs into it with: xfbench run --save")
    with Store(path) as store:
        items = series(store.history(args.task, args.backend, args.device, since), args.min_effect)
    common.emit(render_text(items))
    if plot is not None:
        write_figure(figure(items), plot)
        print(f"xfbench: plot written to {plot}", file=sys.stderr)
    return 0
