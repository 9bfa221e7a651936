"""``xfbench list``: the built-in tasks, and every backend with its status, versions and devices."""

from __future__ import annotations

import argparse


def add_parsers(commands: argparse._SubParsersAction) -> None:
    commands.add_parser("list", help="built-in tasks, backends (installed or not, versions) and their devices"
                        ).set_defaults(handler=command_list)


def command_list(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from xfbench.compare.runner import probe_backends
    from xfbench.tasks import get_task, task_names

    print(tabulate([[name, get_task(name).description] for name in task_names()], headers=["task", "what"]))
    print()
    print(tabulate(probe_backends(), headers=["backend", "what", "status", "versions", "devices"]))
    return 0
