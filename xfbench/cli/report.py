"""``xfbench report``: a saved result as a text table, Markdown, HTML with charts, or CSV."""

from __future__ import annotations

import argparse
import sys

from xfbench.cli import common


def add_parsers(commands: argparse._SubParsersAction) -> None:
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
    report.set_defaults(handler=command_report)


def command_report(args: argparse.Namespace) -> int:
    import xfbench
    from xfbench import reports

    fmt = args.format or (reports.format_of(args.output) if args.output else None) or "text"
    reports.check_format(fmt)
    output = common.check_output(args.output)
    if args.target is not None:
        from xfbench.compare.plan import check_target

        check_target(args.target)
    result = xfbench.load(args.result)
    if output:
        reports.write(result, output, fmt, args.target)
        print(f"xfbench: {fmt} report written to {output}", file=sys.stderr)
    else:
        common.emit(reports.render(result, fmt, args.target).rstrip("\n"))
    return 0
