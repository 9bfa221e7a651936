"""``xfbench report``: a saved result as a text table, Markdown, HTML with charts, or CSV."""

from __future__ import annotations

import argparse
import os
import sys

from xfbench.cli import common
from xfbench.errors import XfbenchError


def add_parsers(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser(
        "report", help="turn a saved result into a table, Markdown, HTML with charts, or CSV",
        description="Read a result (xfbench run --json PATH, or its .partial file) or an xfbench ab comparison and "
                    "render it. The format comes from --format, else from the -o file name (.html, .md, .csv, .txt), "
                    "else text; an ab comparison renders as text or md.",
        epilog="examples:\n  xfbench report results/latest.json\n  xfbench report results/latest.json -o report.html\n"
               "  xfbench report results/latest.json --format md >> $GITHUB_STEP_SUMMARY",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("result", help="a result JSON file (xfbench run or parity --json, or xfbench ab --json)")
    report.add_argument("--format", help="text, md, html or csv (default: from -o's name, else text)")
    report.add_argument("-o", "--output", metavar="PATH", help="write here (atomically) instead of to stdout")
    report.add_argument("--target", type=float, help="time-to-accuracy target for every task (default: each "
                                                     "task's own, as recorded)")
    report.set_defaults(handler=command_report)


def command_report(args: argparse.Namespace) -> int:
    from xfbench import reports
    from xfbench.compare.results.ab import AbResult, load_any
    from xfbench.compare.results.files import partial_path
    from xfbench.reports.gate import render_ab

    output = common.check_output(args.output)
    if output is not None and any(_same_file(output, read) for read in (args.result, partial_path(args.result))):
        raise XfbenchError(f"-o {output!r} is the result being read; write the report to another file")
    fmt = args.format or (reports.format_of(output) if output else "text")
    if fmt is None:
        raise XfbenchError(f"cannot tell the format from {os.path.basename(output)!r}; give --format text, md, "  # type: ignore[arg-type]
                           "html or csv, or a file name ending in .txt, .md, .html or .csv")
    reports.check_format(fmt)
    if args.target is not None:
        from xfbench.compare.plan import check_target

        check_target(args.target)
    document = load_any(args.result)
    if isinstance(document, AbResult):
        if fmt not in ("text", "md"):
            raise XfbenchError(f"{args.result!r} is an xfbench ab comparison; an xfbench ab comparison renders as "
                               f"text or md, not {fmt}")
        text = render_ab(document, fmt)
    else:
        text = reports.render(document, fmt, args.target)
    if output:
        from xfbench.compare.results.files import write_atomic

        write_atomic(output, text)
        print(f"xfbench: {fmt} report written to {output}", file=sys.stderr)
    else:
        common.emit(text.rstrip("\n"))
    return 0


def _same_file(first: str, second: str) -> bool:
    """Whether two paths name one file (a symlink, a relative path, the same name), existing or not."""
    try:
        return os.path.samefile(first, second)
    except OSError:
        return os.path.realpath(first) == os.path.realpath(second)
