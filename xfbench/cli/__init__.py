"""The ``xfbench`` command line: ``run``, ``sweep`` (``cli.run``), ``report`` (``cli.report``), ``parity``
(``cli.parity``), ``ab``, ``check``, ``history`` (``cli.gate``) and ``list`` (``cli.info``); what they share is in
``cli.common``.

Rules: bad input is one line on stderr naming the valid choices, exit code 2; tables go to stdout, progress to
stderr; frameworks' log output never reaches the terminal (it stays in the worker logs).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from xfbench.cli import common, gate, info, parity, report, run
from xfbench.errors import XfbenchError

COMMAND_FAMILIES = (run, report, parity, gate, info)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: each command family adds its commands (in the order of ``xfbench --help``)."""
    parser = common.Parser(
        prog="xfbench",
        description="Run the same ML task on TensorFlow (graph and eager), PyTorch and JAX; compare accuracy "
                    "and speed fairly (same data, batches, initial weights, hyperparameters and threads).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=common.Parser)
    for family in COMMAND_FAMILIES:
        family.add_parsers(commands)
    return parser


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
        return args.handler(args)
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
