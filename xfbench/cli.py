"""The ``xfbench`` command line: ``run``, ``report``, ``sweep``, ``parity``, ``ab``, ``check``, ``history`` and ``list``.

Rules: bad input is one line on stderr naming the valid choices, exit code 2; tables go to stdout, progress to
stderr; frameworks' log output never reaches the terminal (it stays in the worker logs).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from xfbench.errors import XfbenchError

EPILOG_RUN = """examples:
  xfbench run                                   # regression, mlp, cnn on all four backends, CPU
  xfbench run --tasks cnn28 --backends torch,jax --threads 1
  xfbench run --tasks mlp,cnn28 --rounds 30 --processes 3 --json results/speed.json
  xfbench run --seeds 5 --json results/seeds.json
  xfbench run --resume results/speed.json      # after a crash or Ctrl-C: run only the missing cells
  xfbench run --html report.html --md summary.md --csv cells.csv
  xfbench run --ray auto --tasks mlp,cnn28      # on a Ray cluster: each task on a node of its own, in parallel
  xfbench run --ray auto --on-each cpu=zen4     # the whole matrix on every node labelled cpu=zen4

how it times: after training, the workers of a task stay alive and take timing turns in rounds, one worker at a
time in a rotating order, so the machine's drift hits every backend alike; each backend's step time is then given
relative to the fastest (or --relative-to) from turns of the same round, with a 95% confidence interval.
"""


EPILOG_AB = """examples:
  xfbench ab --base-python base/bin/python --head-python head/bin/python --tasks mlp
  xfbench ab --base-python base/bin/python --head-python head/bin/python --md "$GITHUB_STEP_SUMMARY" --save
  xfbench ab --base-python .venv/bin/python --head-python .venv/bin/python --tasks mlp --inject-slowdown 0.2

exit codes: 0 no confirmed regression, 1 a confirmed regression (named on stderr), 2 bad input.
"""


def _add_matrix_arguments(parser: argparse.ArgumentParser, all_tasks: bool = False) -> None:
    from xfbench.backends import DEFAULT_BACKENDS
    from xfbench.tasks import DEFAULT_TASKS, task_names

    default_tasks = ",".join(task_names() if all_tasks else DEFAULT_TASKS)
    parser.add_argument("--tasks", help=f"comma-separated built-in tasks: {', '.join(task_names())} "
                                        f"(default: {default_tasks})")
    parser.add_argument("--backends", help="comma-separated backends: tf-graph (tf.function), tf-eager, torch, "
                                           "jax (jit), tf-xla (XLA for every model), torch-compile, keras-jax, "
                                           "keras-tensorflow, keras-torch (Keras 3 on each), or all "
                                           f"(default: {','.join(DEFAULT_BACKENDS)}; see xfbench list)")
    parser.add_argument("--json", metavar="PATH", help="write the result as JSON to PATH")


def _add_report_arguments(parser: argparse.ArgumentParser, target: bool = True) -> None:
    group = parser.add_argument_group("reports (every path is checked before any work starts)")
    group.add_argument("--html", metavar="PATH", help="write a self-contained HTML report with charts")
    group.add_argument("--md", metavar="PATH", help="write a Markdown summary (for a pull request or "
                                                    "$GITHUB_STEP_SUMMARY)")
    group.add_argument("--csv", metavar="PATH", help="write one CSV row per cell")
    if target:
        group.add_argument("--target", type=float, help="time-to-accuracy target for every task, e.g. 0.95 "
                                                        "(default: each built-in task's own)")


def _report_paths(args: argparse.Namespace) -> dict[str, str]:
    """The report files asked for, format -> path, each checked before any work starts."""
    from xfbench.compare.journal import check_output

    return {fmt: check_output(getattr(args, fmt)) for fmt in ("html", "md", "csv") if getattr(args, fmt, None) is not None}


def _deliver(result: Any, paths: dict[str, str], output: str | None) -> None:
    """After a run: write the report files asked for, and say where everything went (the JSON is already there)."""
    from xfbench import reports

    for fmt, path in paths.items():
        reports.write(result, path, fmt)
        print(f"xfbench: {fmt} report written to {path}", file=sys.stderr)
    if output:
        print(f"xfbench: result written to {output}", file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: 'xfbench run: error: ... (see xfbench run --help)', exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from xfbench.compare.ab import DEFAULT_PAIRS
    from xfbench.compare.ab import DEFAULT_TIMING as AB_TIMING
    from xfbench.compare.timing import TimingOptions
    from xfbench.store import STORE_ENV

    parser = _Parser(
        prog="xfbench",
        description="Run the same ML task on TensorFlow (graph and eager), PyTorch and JAX; compare accuracy "
                    "and speed fairly (same data, batches, initial weights, hyperparameters and threads).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = commands.add_parser(
        "run", help="train tasks on backends and devices; print accuracy and speed tables",
        description="Train every task on every backend and device, each (backend, device) in its own fresh\n"
                    "process with the same data, batches, initial weights, optimizer and threads, and report\n"
                    "accuracy, step time (median and IQR of synced blocks after warm-up), samples/s, first-step\n"
                    "(trace/compile) time, training time and peak memory.",
        epilog=EPILOG_RUN, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_matrix_arguments(run)
    run.add_argument("--devices", help="comma-separated: cpu, gpu (default: cpu)")
    run.add_argument("--threads", type=int, help="threads (and cores) per framework, the same for all "
                                                 "(default: all usable cores)")
    run.add_argument("--epochs", type=int, help="override every task's number of epochs")
    run.add_argument("--seeds", type=int, help="train each cell with N seeds (same for every backend); accuracy as "
                                               "mean ± std (default: 1)")
    run.add_argument("--timeout", type=float, help="seconds per worker command (training a task, one timing turn) "
                                                   "before the worker is killed and its cell marked error "
                                                   "(default: 600)")
    timing = run.add_argument_group("timing")
    timing.add_argument("--rounds", type=int, help=f"timing rounds per task: every live worker takes one turn per "
                                                   f"round (default: {TimingOptions.rounds})")
    timing.add_argument("--processes", type=int, help=f"fresh worker processes per backend: each process has a "
                                                      f"speed offset of its own, so several are averaged "
                                                      f"(default: {TimingOptions.processes})")
    timing.add_argument("--turn-seconds", type=float, help=f"timed seconds per turn, after {TimingOptions.untimed_s:g} s "
                                                           f"of untimed steps; at least {TimingOptions.min_blocks} "
                                                           f"block of >= {TimingOptions.min_block_s:g} s (default: "
                                                           f"{TimingOptions.turn_s})")
    timing.add_argument("--order", help="order of the workers within a round: rotate (shifted by one every round) "
                                        "or shuffle (default: rotate)")
    timing.add_argument("--sequential", action="store_true", help="time one backend after another instead of "
                                                                   "interleaving them (one worker alive at a time: "
                                                                   "less memory, but the machine's drift stays in "
                                                                   "the ratios)")
    timing.add_argument("--relative-to", metavar="BACKEND", help="give step times relative to this backend "
                                                                 "(default: the fastest of each task)")
    run.add_argument("--parity", action="store_true", help="also check each backend against the float64 "
                                                           "NumPy reference and show a parity column")
    run.add_argument("--malloc", help="C allocator policy of every worker: steady (glibc keeps freed memory: no "
                                      "per-step page faults, steadier times) or system (glibc defaults, out of the "
                                      "box) (default: steady)")
    run.add_argument("--resume", metavar="PATH", help="finish the run saved at PATH (a result or its .partial file "
                                                      "from an interrupted run): run only the missing cells, with "
                                                      "the saved settings")
    cluster = run.add_argument_group("on a Ray cluster (pip install 'xfbench[ray]')")
    cluster.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                         help="run on Ray: each task reserves a whole node and runs there with xfbench's own workers; "
                              "ADDRESS is auto (the cluster this machine belongs to), HOST:PORT or ray://HOST:PORT; "
                              "none: $XFBENCH_RAY_ADDRESS, else a one-node cluster of this machine for the run")
    cluster.add_argument("--executor", help="where cells run: local (this machine, the default) or ray (as --ray)")
    cluster.add_argument("--on-each", metavar="LABEL=VALUE", help="with --ray: run the whole matrix on every node "
                                                                  "carrying this Ray node label (compare machines)")
    run.add_argument("--format", default="simple", help="table format for tabulate, e.g. github (default: "
                                                        "%(default)s)")
    _add_report_arguments(run)
    _add_store_arguments(run)
    run.add_argument("--quiet", action="store_true", help="no progress on stderr")

    report = commands.add_parser(
        "report", help="turn a saved result into a table, Markdown, HTML with charts, or CSV",
        description="Read a result (xfbench run --json PATH, or its .partial file) and render it. The format "
                    "comes from --format, else from the -o file name (.html, .md, .csv, .txt), else text.",
        epilog="examples:\n  xfbench report results/latest.json\n  xfbench report results/latest.json -o report.html\n"
               "  xfbench report results/latest.json --format md >> $GITHUB_STEP_SUMMARY",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("result", help="a result JSON file")
    report.add_argument("--format", help="text, md, html or csv (default: from -o's name, else text)")
    report.add_argument("-o", "--output", metavar="PATH", help="write here (atomically) instead of to stdout")
    report.add_argument("--target", type=float, help="time-to-accuracy target for every task (default: each "
                                                     "task's own, as recorded)")

    sweep = commands.add_parser(
        "sweep", help="run a task at several sizes and show how each backend's step time scales",
        description="Run one built-in task with one size parameter at several values (each value a task of its "
                    "own, timed in interleaved rounds like xfbench run) and show, per backend, step time and "
                    "throughput against the parameter: a table and a log-log chart.",
        epilog="examples:\n  xfbench sweep --task mlp --param batch_size=32,64,128,256\n"
               "  xfbench sweep --task cnn28 --param num_samples=1000,2000 --backends torch,jax --plot sweep.svg",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sweep.add_argument("--task", required=True, help="a built-in task")
    sweep.add_argument("--param", required=True, metavar="NAME=V1,V2,...",
                       help="one size parameter of the task and its values, e.g. batch_size=32,64,128")
    sweep.add_argument("--backends", help="comma-separated backends (default: tf-graph,tf-eager,torch,jax)")
    sweep.add_argument("--threads", type=int, help="threads per framework (default: all usable cores)")
    sweep.add_argument("--epochs", type=int, help="override the task's number of epochs")
    sweep.add_argument("--rounds", type=int, help=f"timing rounds per value (default: {TimingOptions.rounds})")
    sweep.add_argument("--processes", type=int, help=f"worker processes per backend (default: "
                                                      f"{TimingOptions.processes})")
    sweep.add_argument("--timeout", type=float, default=600.0, help="seconds per worker command (default: 600)")
    sweep.add_argument("--json", metavar="PATH", help="write the result as JSON to PATH")
    sweep.add_argument("--plot", metavar="PATH", help="write the log-log chart (.svg or .png)")
    _add_report_arguments(sweep, target=False)
    sweep.add_argument("--quiet", action="store_true", help="no progress on stderr")

    parity = commands.add_parser(
        "parity", help="check that every backend computes the same function as the float64 reference",
        description="With identical initial weights and batches: forward outputs, loss and gradients of every "
                    "backend against the float64 NumPy reference, and parameters after K optimizer steps "
                    "against each other. Exit code 1 when a cell fails its tolerance.",
    )
    _add_matrix_arguments(parity, all_tasks=True)
    parity.add_argument("--steps", type=int, default=10, help="optimizer steps before comparing parameters "
                                                              "(default: %(default)s)")
    parity.add_argument("--timeout", type=float, default=600.0, help="seconds per cell (default: %(default)s)")

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
    _add_matrix_arguments(ab)
    ab.add_argument("--threads", type=int, help="threads per framework (default: all usable cores)")
    ab.add_argument("--epochs", type=int, help="override every task's number of epochs")
    ab.add_argument("--pairs", type=int, default=DEFAULT_PAIRS, help="fresh base/head process pairs per cell: the "
                                                                     "unit of replication, taken pair-major (pair 1 "
                                                                     "of every cell, then pair 2, ...; default: "
                                                                     "%(default)s)")
    ab.add_argument("--rounds", type=int, help=f"alternating turns per arm in each pair (default: "
                                               f"{AB_TIMING.rounds})")
    ab.add_argument("--turn-seconds", type=float, help=f"timed seconds per turn (default: {AB_TIMING.turn_s})")
    _add_gate_arguments(ab)
    ab.add_argument("--timeout", type=float, default=600.0, help="seconds per worker command (default: %(default)s)")
    ab.add_argument("--md", metavar="PATH", help="write a Markdown summary (e.g. $GITHUB_STEP_SUMMARY; appended "
                                                 "to when it exists)")
    _add_store_arguments(ab)
    ab.add_argument("--inject-slowdown", metavar="F", help="TEST ONLY: make the head's timed blocks F longer with "
                                                           "real busy work (0.2, or torch=0.2,jax=0.1), to check the "
                                                           "gate catches it (benchmarks/validate_gate.py)")
    ab.add_argument("--quiet", action="store_true", help="no progress on stderr")

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
    _add_gate_arguments(check)
    check.add_argument("--md", metavar="PATH", help="write a Markdown summary (appended to when it exists)")

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

    commands.add_parser("list", help="built-in tasks, backends (installed or not, versions) and their devices")
    return parser


def _add_store_arguments(parser: argparse.ArgumentParser) -> None:
    from xfbench.store import STORE_ENV

    parser.add_argument("--save", action="store_true", help="append this run, with its git commit, versions and "
                                                            "machine, to the results store")
    parser.add_argument("--store", metavar="PATH", help=f"the results store (SQLite; default: ${STORE_ENV}, else "
                                                        "~/.local/share/xfbench/results.sqlite)")


def _add_gate_arguments(parser: argparse.ArgumentParser) -> None:
    from xfbench.compare.gate import ALPHA, MIN_EFFECT

    parser.add_argument("--min-effect", type=float, default=MIN_EFFECT, help="smallest slowdown that counts as a "
                                                                             "regression (default: %(default)s)")
    parser.add_argument("--alpha", type=float, default=ALPHA, help="family-wise false-alarm level across cells, "
                                                                   "Holm-corrected (default: %(default)s)")


def _progress(quiet: bool, total: int = 0, unit: str = "cells"):
    """Progress on stderr: a live bar on a terminal, plain lines otherwise, nothing with ``--quiet``."""
    if quiet:
        return None
    if total and sys.stderr.isatty():
        from xfbench.progress import LiveProgress

        return LiveProgress(total, unit)
    return lambda message: print(f"xfbench: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _showing_progress(quiet: bool, total: int, unit: str = "cells") -> Iterator[Any]:
    """:func:`_progress` for the length of a run; a live bar is closed however the run ends."""
    progress = _progress(quiet, total, unit)
    try:
        yield progress
    finally:
        if hasattr(progress, "close"):
            progress.close()


def _print(text: str) -> None:
    """Print to stdout; a closed stdout (``xfbench run | head -1``) is not an error: every file is written."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


RESUME_CONFLICTS = ("tasks", "backends", "devices", "threads", "epochs", "seeds", "rounds", "processes",
                    "turn_seconds", "order", "sequential", "relative_to", "parity", "malloc", "target")


def _run_request(args: argparse.Namespace) -> tuple[Any, str | None, bool]:
    """The plan, output path and resume flag of ``xfbench run``, all checked before any work starts."""

    from xfbench.compare.journal import check_output
    from xfbench.compare.plan import make_plan
    from xfbench.compare.session import plan_from_result, previous_run
    from xfbench.compare.timing import TimingOptions

    if args.resume is not None:
        given = [name for name in RESUME_CONFLICTS if getattr(args, name) not in (None, False)]
        if given:
            raise XfbenchError(f"--resume takes its settings from the saved run; drop --{given[0].replace('_', '-')}")
        if args.json is not None and args.json != args.resume:
            raise XfbenchError("--resume writes to the run it resumes; drop --json")
        output = check_output(args.resume)
        previous = previous_run(output)
        if previous is None:
            raise XfbenchError(f"nothing to resume at {output!r} (no result and no {output}.partial)")
        return plan_from_result(previous, output, args.timeout), output, True
    options = TimingOptions().changed(rounds=args.rounds, processes=args.processes, turn_s=args.turn_seconds,
                                      order=args.order, schedule="sequential" if args.sequential else None)
    plan = make_plan(args.tasks, args.backends, args.devices, args.threads, args.epochs,
                     600.0 if args.timeout is None else args.timeout, 1 if args.seeds is None else args.seeds,
                     timing=options, malloc=args.malloc or "steady", relative_to=args.relative_to, target=args.target)
    output = check_output(args.json) if args.json is not None else None
    return plan, output, False


def _executor(args: argparse.Namespace) -> Any:
    """The plan executor ``--ray`` / ``--executor`` / ``--on-each`` ask for (None: this machine), checked."""
    from xfbench.compare.ray_executor import EXECUTORS, ray_executor
    from xfbench.errors import unknown_name

    kind = args.executor
    if kind is not None and kind not in EXECUTORS:
        raise unknown_name("executor", kind, EXECUTORS)
    if args.ray is not None:
        if kind == "local":
            raise XfbenchError("--ray runs on Ray, --executor local on this machine; choose one")
        kind = "ray"
    if kind != "ray":
        if args.on_each is not None:
            raise XfbenchError("--on-each places cells on Ray nodes; add --ray (or --executor ray)")
        return None
    return ray_executor(args.ray or None, args.on_each, args.threads)


def command_run(args: argparse.Namespace) -> int:
    import xfbench
    from xfbench.compare.session import execute
    from xfbench.reports.table import check_format

    check_format(args.format)
    executor = _executor(args)
    if executor is not None:  # threads are checked against each node's cores, not this machine's
        threads, args.threads = args.threads, None
        if threads is not None and args.resume is not None:
            raise XfbenchError("--resume takes its settings from the saved run; drop --threads")
    plan, output, resume = _run_request(args)
    paths = _report_paths(args)
    store = _open_store(args)
    try:
        with _showing_progress(args.quiet, plan.num_cells) as progress:
            if args.parity:
                from xfbench.compare.parity import ParityOptions, run_with_parity

                result = run_with_parity(plan, ParityOptions(), progress, output=output, executor=executor)
            else:
                result = execute(plan, progress, output=output, resume=resume, executor=executor)
    except KeyboardInterrupt:
        if output:
            print(f"xfbench: the cells finished so far are in {output}.partial; "
                  f"finish the run with: xfbench run --resume {output}", file=sys.stderr)
        raise
    _deliver(result, paths, output)
    _save(store, result, "run")
    _print(xfbench.table(result, args.format))
    return 1 if any(cell.failed for cell in result.cells) else 0


def _plot_path(path: str | None) -> str | None:
    """A ``--plot`` path: writable, and named .svg or .png (the format comes from the name)."""
    from xfbench.compare.journal import check_output

    plot = check_output(path) if path is not None else None
    if plot is not None and not plot.lower().endswith((".svg", ".png")):
        raise XfbenchError(f"--plot {plot!r}: give a .svg or .png file name")
    return plot


def _open_store(args: argparse.Namespace) -> Any:
    """The results store when ``--save`` asks for it, opened (and created) before any work starts."""
    if not getattr(args, "save", False):
        if getattr(args, "store", None) is not None:
            raise XfbenchError("--store names where --save writes; add --save")
        return None
    from xfbench.store import Store

    return Store(args.store)


def _save(store: Any, result: Any, kind: str) -> None:
    if store is not None:
        run_id = store.save(result, kind)
        print(f"xfbench: saved as run {run_id} in {store.path}", file=sys.stderr)
        store.close()


def _write_summary(path: str | None, text: str) -> None:
    """Markdown to ``path``: appended when it exists ($GITHUB_STEP_SUMMARY collects several steps), else created."""
    if path is None:
        return
    if os.path.exists(path):
        with open(path, "a", encoding="utf-8") as handle:
            handle.write("\n" + text)
    else:
        from xfbench.compare.journal import write_atomic

        write_atomic(path, text)
    print(f"xfbench: summary written to {path}", file=sys.stderr)


def _report_regressions(verdicts: list[Any]) -> int:
    from xfbench.compare.gate import exit_code

    for item in verdicts:
        if item.verdict == "regression":
            print(f"xfbench: regression: {item.task} on {item.backend}/{item.device}: {item.reason}", file=sys.stderr)
    return exit_code(verdicts)


def command_ab(args: argparse.Namespace) -> int:
    from xfbench.compare.ab import ab_request, run_ab
    from xfbench.compare.gate import check_settings
    from xfbench.compare.journal import check_output
    from xfbench.reports.gate import render_markdown, render_text

    check_settings(args.min_effect, args.alpha)
    output = check_output(args.json) if args.json is not None else None
    summary = check_output(args.md) if args.md is not None else None
    store = _open_store(args)
    plan, base, head, pairs = ab_request(args.base_python, args.head_python, args.tasks, args.backends, args.threads,
                                         args.epochs, args.pairs, args.rounds, args.turn_seconds, args.min_effect,
                                         args.alpha, args.timeout, args.inject_slowdown)
    with _showing_progress(args.quiet, plan.num_cells * pairs, "process pairs") as progress:
        outcome = run_ab(plan, base, head, pairs, args.min_effect, args.alpha, progress, output)
    title = "xfbench ab"
    evidence = "base and head timed together in alternating turns"
    _write_summary(summary, render_markdown(outcome.verdicts, outcome.config, title, evidence, outcome.arms))
    if output:
        print(f"xfbench: comparison written to {output}", file=sys.stderr)
    _save(store, outcome, "ab")
    _print(render_text(outcome.verdicts, outcome.config, title, evidence))
    return _report_regressions(outcome.verdicts)


def command_check(args: argparse.Namespace) -> int:
    import xfbench
    from xfbench.compare.gate import CHECK_METHOD, check_settings, check_verdicts
    from xfbench.compare.journal import check_output
    from xfbench.reports.gate import render_markdown, render_text

    check_settings(args.min_effect, args.alpha)
    summary = check_output(args.md) if args.md is not None else None
    result, baseline = xfbench.load(args.result), xfbench.load(args.baseline)
    verdicts = check_verdicts(baseline, result, args.min_effect, args.alpha)
    config = {"min_effect": args.min_effect, "alpha": args.alpha, "threads": result.config.get("threads")}
    evidence = "WEAKER EVIDENCE than xfbench ab: " + CHECK_METHOD
    title = "xfbench check"
    machines = [(item.machine or {}).get("cpu") for item in (baseline, result)]
    if machines[0] != machines[1]:
        evidence += f"; the runs are from different CPUs ({machines[0]} vs {machines[1]})"
    _write_summary(summary, render_markdown(verdicts, config, title, evidence))
    _print(render_text(verdicts, config, title, evidence))
    return _report_regressions(verdicts)


def command_history(args: argparse.Namespace) -> int:
    import datetime

    from xfbench.compare.gate import check_settings
    from xfbench.compare.history import series
    from xfbench.reports.history import figure, render_text
    from xfbench.reports.plots import write_figure
    from xfbench.store import Store

    since = None
    if args.since is not None:
        try:
            since = datetime.datetime.fromisoformat(args.since).isoformat()
        except ValueError:
            raise XfbenchError(f"--since {args.since!r} is not a date; give an ISO date such as 2026-11-01") from None
    check_settings(args.min_effect)
    plot = _plot_path(args.plot)
    from xfbench.store import default_path

    path = args.store or default_path()
    if not os.path.exists(path):
        raise XfbenchError(f"no results store at {path!r}; save runs into it with: xfbench run --save")
    with Store(path) as store:
        items = series(store.history(args.task, args.backend, args.device, since), args.min_effect)
    _print(render_text(items))
    if plot is not None:
        write_figure(figure(items), plot)
        print(f"xfbench: plot written to {plot}", file=sys.stderr)
    return 0


def command_report(args: argparse.Namespace) -> int:
    import xfbench
    from xfbench import reports
    from xfbench.compare.journal import check_output

    fmt = args.format or (reports.format_of(args.output) if args.output else None) or "text"
    reports.check_format(fmt)
    output = check_output(args.output) if args.output is not None else None
    if args.target is not None:
        from xfbench.compare.plan import check_target

        check_target(args.target)
    result = xfbench.load(args.result)
    if output:
        reports.write(result, output, fmt, args.target)
        print(f"xfbench: {fmt} report written to {output}", file=sys.stderr)
    else:
        _print(reports.render(result, fmt, args.target).rstrip("\n"))
    return 0


def command_sweep(args: argparse.Namespace) -> int:
    from xfbench.compare.journal import check_output
    from xfbench.compare.plan import make_plan
    from xfbench.compare.session import execute
    from xfbench.compare.sweep import parse_param, sweep_tasks
    from xfbench.compare.timing import TimingOptions
    from xfbench.reports.sweep import render_text, write_plot

    name, values = parse_param(args.param)
    tasks, config = sweep_tasks(args.task, name, values)
    plan = make_plan(tasks, args.backends, "cpu", args.threads, args.epochs, args.timeout,
                     timing=TimingOptions().changed(rounds=args.rounds, processes=args.processes))
    output = check_output(args.json) if args.json is not None else None
    paths = _report_paths(args)
    plot = _plot_path(args.plot)
    with _showing_progress(args.quiet, plan.num_cells) as progress:
        result = execute(plan, progress, output=output, config={**plan.describe(), "sweep": config})
    if plot is not None:
        write_plot(result, plot)
        print(f"xfbench: plot written to {plot}", file=sys.stderr)
    _deliver(result, paths, output)
    _print(render_text(result))
    return 1 if any(cell.failed for cell in result.cells) else 0


def command_parity(args: argparse.Namespace) -> int:
    from xfbench.compare.journal import check_output
    from xfbench.compare.parity import ParityOptions, parity_failed, run_with_parity
    from xfbench.compare.plan import make_plan
    from xfbench.reports.parity import render

    if args.steps < 1:
        raise XfbenchError(f"--steps must be a positive integer, got {args.steps}")
    from xfbench.tasks import task_names

    plan = make_plan(args.tasks or ",".join(task_names()), args.backends, "cpu", timeout=args.timeout, measure=False)
    output = check_output(args.json) if args.json is not None else None
    result = run_with_parity(plan, ParityOptions(steps=args.steps), _progress(False), only=True, output=output)
    _print(render(result))
    if output:
        _print(f"\nresult written to {output}")
    return 1 if parity_failed(result) else 0


def command_list(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from xfbench.compare.runner import probe_backends
    from xfbench.tasks import get_task, task_names

    print(tabulate([[name, get_task(name).description] for name in task_names()], headers=["task", "what"]))
    print()
    print(tabulate(probe_backends(), headers=["backend", "what", "status", "versions", "devices"]))
    return 0


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, turned into an interruption so that workers are stopped and finished cells kept."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop(signum: int, frame: object) -> None:
    raise Stopped(signum)


def main(argv: Sequence[str] | None = None) -> int:
    # Ctrl-C interrupts even where the shell started us with SIGINT ignored (a background job), and SIGTERM and
    # SIGHUP stop the run the same way: workers stopped, finished cells kept
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if signum is not None:
            signal.signal(signum, _stop)
    try:
        parser = build_parser()
    except XfbenchError as error:  # e.g. a malformed XFBENCH_EXTRA_BACKENDS
        print(f"xfbench: error: {error}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        commands = {"run": command_run, "report": command_report, "sweep": command_sweep, "parity": command_parity,
                    "ab": command_ab, "check": command_check, "history": command_history, "list": command_list}
        return commands[args.command](args)
    except XfbenchError as error:
        print(f"xfbench: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a full disk, a folder that vanished: one line, and the partial file says what is kept
        print(f"xfbench: error: {error.strerror or error}"
              + (f": {error.filename!r}" if getattr(error, "filename", None) else ""), file=sys.stderr)
        return 1
    except KeyboardInterrupt as interruption:
        signum = getattr(interruption, "signum", signal.SIGINT)
        print(f"xfbench: interrupted ({signal.Signals(signum).name}); every worker was stopped", file=sys.stderr)
        return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
