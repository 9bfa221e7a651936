"""``xfbench parity``: does every backend compute the same function as the float64 reference?"""

from __future__ import annotations

import argparse

from xfbench.cli import common
from xfbench.errors import XfbenchError


def add_parsers(commands: argparse._SubParsersAction) -> None:
    parity = commands.add_parser(
        "parity", help="check that every backend computes the same function as the float64 reference",
        description="With identical initial weights and batches: forward outputs, loss and gradients of every "
                    "backend against the float64 NumPy reference, and parameters after K optimizer steps "
                    "against each other. Exit code 1 when a cell fails its tolerance.",
    )
    common.add_matrix_arguments(parity, all_tasks=True)
    parity.add_argument("--steps", type=int, default=10, help="optimizer steps before comparing parameters "
                                                              "(default: %(default)s)")
    parity.add_argument("--timeout", type=float, default=600.0, help="seconds per cell (default: %(default)s)")
    parity.set_defaults(handler=command_parity)


def command_parity(args: argparse.Namespace) -> int:
    from xfbench.compare.plan import make_plan
    from xfbench.compare.session import execute
    from xfbench.compare.stats.parity import ParityOptions, parity_failed
    from xfbench.progress import PrintProgress
    from xfbench.reports.parity import render
    from xfbench.tasks import task_names

    if args.steps < 1:
        raise XfbenchError(f"--steps must be a positive integer, got {args.steps}")

    plan = make_plan(args.tasks or ",".join(task_names()), args.backends, "cpu", timeout=args.timeout, measure=False)
    output = common.check_output(args.json)
    result = execute(plan, PrintProgress(), output=output, parity=ParityOptions(steps=args.steps))
    common.emit(render(result))
    if output:
        common.emit(f"\nresult written to {output}")
    return 1 if parity_failed(result) else 0
