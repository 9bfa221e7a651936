"""``xfbench run`` (train tasks on backends and devices, time them side by side) and ``xfbench sweep`` (one task at
several sizes)."""

from __future__ import annotations

import argparse
import functools
import sys
from typing import TYPE_CHECKING

from xfbench.cli import common
from xfbench.errors import XfbenchError

if TYPE_CHECKING:
    from xfbench.compare.plan import Plan
    from xfbench.compare.stats.parity import ParityOptions

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


def add_parsers(commands: argparse._SubParsersAction) -> None:
    from xfbench import backends  # here, not at import: a malformed XFBENCH_EXTRA_BACKENDS is one line from main()
    from xfbench.compare.protocol import TimingOptions

    run = commands.add_parser(
        "run", help="train tasks on backends and devices; print accuracy and speed tables",
        description="Train every task on every backend and device, each (backend, device) in its own fresh\n"
                    "process with the same data, batches, initial weights, optimizer and threads, and report\n"
                    "accuracy, step time (median and IQR of synced blocks after warm-up), samples/s, first-step\n"
                    "(trace/compile) time, training time and peak memory.",
        epilog=EPILOG_RUN, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common.add_matrix_arguments(run)
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
    common.add_report_arguments(run)
    common.add_store_arguments(run)
    run.add_argument("--quiet", action="store_true", help="no progress on stderr")

    run.set_defaults(handler=command_run)

    sweep = commands.add_parser(
        "sweep", help="run a task at several sizes and show how each backend's step time scales",
        description="Run one built-in task with one size parameter at several values (each value a task of its "
                    "own, timed in interleaved rounds like xfbench run) and show, per backend, step time and "
                    "throughput against the parameter: a table and a log-log chart.",
        epilog="examples:\n  xfbench sweep --task mlp --param batch_size=32,64,128,256\n"
               "  xfbench sweep --task cnn28 --param num_samples=1000,2000 --backends torch,jax --plot sweep.svg\n"
               "  xfbench sweep --task transformer --param seq_len=64,128,256,512 --set num_sequences=600 --epochs 1",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sweep.add_argument("--task", required=True, help="a built-in task")
    sweep.add_argument("--param", required=True, metavar="NAME=V1,V2,...",
                       help="one size parameter of the task and its values, e.g. batch_size=32,64,128")
    sweep.add_argument("--set", action="append", metavar="NAME=VALUE",
                       help="hold another size parameter of the task at VALUE (repeatable), e.g. --set "
                            "num_sequences=600 for a shorter long-sequence sweep")
    sweep.add_argument("--backends", help=f"comma-separated backends: {backends.help_text()} (default: "
                                          f"{','.join(backends.DEFAULT_BACKENDS)})")
    sweep.add_argument("--threads", type=int, help="threads per framework (default: all usable cores)")
    sweep.add_argument("--epochs", type=int, help="override the task's number of epochs")
    sweep.add_argument("--rounds", type=int, help=f"timing rounds per value (default: {TimingOptions.rounds})")
    sweep.add_argument("--processes", type=int, help=f"worker processes per backend (default: "
                                                      f"{TimingOptions.processes})")
    sweep.add_argument("--timeout", type=float, default=600.0, help="seconds per worker command (default: 600)")
    sweep.add_argument("--json", metavar="PATH", help="write the result as JSON to PATH")
    sweep.add_argument("--plot", metavar="PATH", help="write the log-log chart (.svg or .png)")
    common.add_report_arguments(sweep, target=False)
    sweep.add_argument("--quiet", action="store_true", help="no progress on stderr")

    sweep.set_defaults(handler=command_sweep)


RESUME_CONFLICTS = ("tasks", "backends", "devices", "threads", "epochs", "seeds", "rounds", "processes",
                    "turn_seconds", "order", "sequential", "relative_to", "parity", "malloc", "target")


def run_request(args: argparse.Namespace) -> tuple[Plan, str | None, bool, ParityOptions | None]:
    """The plan, output path, resume flag and parity settings of ``xfbench run``, all checked before any work
    starts. ``--resume`` takes them from the saved run (its result or its partial file)."""
    from xfbench.compare.plan import make_plan
    from xfbench.compare.protocol import TimingOptions
    from xfbench.compare.session import resume_plan, target_of
    from xfbench.compare.stats.parity import ParityOptions

    if args.resume is not None:
        given = [name for name in RESUME_CONFLICTS if getattr(args, name) not in (None, False)]
        if given:
            raise XfbenchError(f"--resume takes its settings from the saved run; drop --{given[0].replace('_', '-')}")
        if args.json is not None and args.json != target_of(args.resume):
            raise XfbenchError("--resume writes to the run it resumes; drop --json")
        plan, output, parity = resume_plan(common.check_output(args.resume), args.timeout)  # type: ignore[arg-type]
        return plan, output, True, parity
    options = TimingOptions().changed(rounds=args.rounds, processes=args.processes, turn_s=args.turn_seconds,
                                      order=args.order, schedule="sequential" if args.sequential else None)
    plan = make_plan(args.tasks, args.backends, args.devices, args.threads, args.epochs,
                     600.0 if args.timeout is None else args.timeout, 1 if args.seeds is None else args.seeds,
                     timing=options, malloc=args.malloc or "steady", relative_to=args.relative_to, target=args.target)
    return plan, common.check_output(args.json), False, ParityOptions() if args.parity else None


def command_run(args: argparse.Namespace) -> int:
    import xfbench
    from xfbench.compare.executors import plan_executor
    from xfbench.compare.session import execute
    from xfbench.reports.table import check_format

    check_format(args.format)
    executor = plan_executor(args.executor, args.ray, args.on_each, args.threads, flags=True)
    if executor is not None:  # threads are checked against each node's cores, not this machine's
        threads, args.threads = args.threads, None
        if threads is not None and args.resume is not None:
            raise XfbenchError("--resume takes its settings from the saved run; drop --threads")
    plan, output, resume, parity = run_request(args)
    paths = common.report_paths(args)
    store = common.open_store(args)
    try:
        with common.showing_progress(args.quiet, plan.num_cells) as progress:
            result = execute(plan, progress, output=output, resume=resume, executor=executor, parity=parity)
    except KeyboardInterrupt:
        if output:
            print(f"xfbench: the cells finished so far are in {output}.partial; "
                  f"finish the run with: xfbench run --resume {output}", file=sys.stderr)
        raise
    common.emit(xfbench.table(result, args.format))  # first: nothing after the run may cost the table
    written = common.keep_outputs(common.report_outputs(result, paths), result, output, store, "run")
    return max(common.failed(result), 0 if written else 1)


def command_sweep(args: argparse.Namespace) -> int:
    from xfbench.compare.plan import make_plan
    from xfbench.compare.protocol import TimingOptions
    from xfbench.compare.session import execute
    from xfbench.compare.sweep import parse_fixed, parse_param, sweep_tasks
    from xfbench.reports.sweep import render_text, write_plot

    name, values = parse_param(args.param)
    tasks, config = sweep_tasks(args.task, name, values, parse_fixed(args.set))
    plan = make_plan(tasks, args.backends, "cpu", args.threads, args.epochs, args.timeout,
                     timing=TimingOptions().changed(rounds=args.rounds, processes=args.processes))
    output = common.check_output(args.json)
    paths = common.report_paths(args)
    plot = common.plot_path(args.plot)
    with common.showing_progress(args.quiet, plan.num_cells) as progress:
        result = execute(plan, progress, output=output, config={**plan.describe(), "sweep": config})
    common.emit(render_text(result))  # first: nothing after the run may cost the table
    outputs = common.report_outputs(result, paths)
    if plot is not None:
        outputs.insert(0, ("plot", plot, functools.partial(write_plot, result, plot)))
    written = common.keep_outputs(outputs, result, output)
    return max(common.failed(result), 0 if written else 1)
