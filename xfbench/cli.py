"""The ``xfbench`` command line: ``run``, ``parity`` and ``list``.

Rules: bad input is one line on stderr naming the valid choices, exit code 2; tables go to stdout, progress to
stderr; frameworks' log output never reaches the terminal (it stays in the worker logs).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from xfbench.errors import XfbenchError

EPILOG_RUN = """examples:
  xfbench run                                   # regression, mlp, cnn on all four backends, CPU
  xfbench run --tasks cnn28 --backends torch,jax --threads 1
  xfbench run --seeds 5 --json results/seeds.json
"""


def _add_matrix_arguments(parser: argparse.ArgumentParser, all_tasks: bool = False) -> None:
    from xfbench.backends import DEFAULT_BACKENDS
    from xfbench.tasks import DEFAULT_TASKS, task_names

    parser.add_argument("--tasks", default=",".join(task_names() if all_tasks else DEFAULT_TASKS),
                        help=f"comma-separated built-in tasks: {', '.join(task_names())} (default: %(default)s)")
    parser.add_argument("--backends", default=",".join(DEFAULT_BACKENDS),
                        help="comma-separated backends: tf-graph (tf.function), tf-eager, torch, jax (jit) "
                             "(default: all)")
    parser.add_argument("--json", metavar="PATH", help="write the result as JSON to PATH")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: 'xfbench run: error: ... (see xfbench run --help)', exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
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
    run.add_argument("--devices", default="cpu", help="comma-separated: cpu, gpu (default: %(default)s)")
    run.add_argument("--threads", type=int, help="threads (and cores) per framework, the same for all "
                                                 "(default: all usable cores)")
    run.add_argument("--epochs", type=int, help="override every task's number of epochs")
    run.add_argument("--seeds", type=int, default=1, help="train each cell with N seeds (same for every "
                                                          "backend); accuracy as mean ± std (default: 1)")
    run.add_argument("--timeout", type=float, default=600.0, help="seconds per cell before it is killed and "
                                                                  "marked error (default: %(default)s)")
    run.add_argument("--parity", action="store_true", help="also check each backend against the float64 "
                                                           "NumPy reference and show a parity column")
    run.add_argument("--malloc", default="steady", help="C allocator policy of every worker: steady (glibc keeps "
                                                        "freed memory: no per-step page faults, steadier times) or "
                                                        "system (glibc defaults, out of the box) (default: "
                                                        "%(default)s)")
    run.add_argument("--format", default="simple", help="table format for tabulate, e.g. github (default: "
                                                        "%(default)s)")
    run.add_argument("--quiet", action="store_true", help="no progress lines on stderr")

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

    commands.add_parser("list", help="built-in tasks, backends (installed or not, versions) and their devices")
    return parser


def _progress(quiet: bool):
    if quiet:
        return None
    return lambda message: print(f"xfbench: {message}", file=sys.stderr, flush=True)


def command_run(args: argparse.Namespace) -> int:
    import xfbench

    result = xfbench.run(tasks=args.tasks, backends=args.backends, devices=args.devices, threads=args.threads,
                         epochs=args.epochs, timeout=args.timeout, seeds=args.seeds, parity=args.parity,
                         progress=_progress(args.quiet), malloc=args.malloc)
    print(xfbench.table(result, args.format))
    if args.json:
        result.save(args.json)
        print(f"\nresult written to {args.json}")
    failed = [cell for cell in result.cells if cell.status == "error"]
    return 1 if failed else 0


def command_parity(args: argparse.Namespace) -> int:
    from xfbench.compare.parity import run_parity

    return run_parity(args.tasks, args.backends, args.steps, args.timeout, args.json, _progress(False))


def command_list(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from xfbench.compare.runner import probe_backends
    from xfbench.tasks import get_task, task_names

    print(tabulate([[name, get_task(name).description] for name in task_names()], headers=["task", "what"]))
    print()
    print(tabulate(probe_backends(), headers=["backend", "status", "versions", "devices"]))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
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
        return {"run": command_run, "parity": command_parity, "list": command_list}[args.command](args)
    except XfbenchError as error:
        print(f"xfbench: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xfbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
