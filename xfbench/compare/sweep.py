"""Sweeps: one built-in task at several values of one size parameter, each value a task of its own.

``xfbench sweep --task mlp --param batch_size=32,64,128`` builds ``mlp[batch_size=32]``, ``mlp[batch_size=64]``, ...
with ``get_task("mlp", batch_size=32)`` and so on, checks every one before any work starts, and runs them as one
plan: each value is timed in interleaved rounds like any task of ``xfbench run``. The result's ``config.sweep``
says which parameter and values; ``reports.sweep`` draws step time and throughput against it.
"""

from __future__ import annotations

import inspect
from typing import Any

from xfbench.errors import XfbenchError
from xfbench.tasks import BUILTIN_TASKS, Task, check_name, get_task


def parse_param(text: str) -> tuple[str, list[str]]:
    """``"batch_size=32,64"`` -> ``("batch_size", ["32", "64"])``.

    Example:
        >>> parse_param("width=32, 64")
        ('width', ['32', '64'])
    """
    name, sep, values = text.partition("=")
    items = [item.strip() for item in values.split(",") if item.strip()]
    if not sep or not name.strip() or not items:
        raise XfbenchError(f"--param {text!r} must look like NAME=V1,V2,..., e.g. batch_size=32,64,128")
    if len(set(items)) != len(items):
        raise XfbenchError(f"--param {text!r} repeats a value")
    return name.strip(), items


def parameters(task: str) -> dict[str, Any]:
    """The size parameters of a built-in task and their defaults."""
    return {name: item.default for name, item in inspect.signature(BUILTIN_TASKS[check_name(task)]).parameters.items()
            if name != "seed"}


def _value(task: str, name: str, default: Any, text: str) -> int | float:
    kind = float if isinstance(default, float) else int
    try:
        number = kind(text)
    except ValueError:
        raise XfbenchError(f"--param {name}: {text!r} is not {'a number' if kind is float else 'an integer'} "
                           f"({task}'s {name} defaults to {default!r})") from None
    return number


def parse_fixed(items: list[str] | None) -> dict[str, str]:
    """``["num_sequences=600", "epochs=1"]`` (``--set``, repeatable) -> ``{"num_sequences": "600", ...}``.

    Example:
        >>> parse_fixed(["width=64", " heads = 2"])
        {'width': '64', 'heads': '2'}
    """
    fixed: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip() or "," in value:
            raise XfbenchError(f"--set {item!r} must look like NAME=VALUE, e.g. num_sequences=600")
        if name.strip() in fixed:
            raise XfbenchError(f"--set {name.strip()} is given twice")
        fixed[name.strip()] = value.strip()
    return fixed


def sweep_tasks(task: str, name: str, values: list[str], fixed: dict[str, str] | None = None
                ) -> tuple[list[Task], dict[str, Any]]:
    """The tasks of a sweep, every one built (so a bad value fails here, before any work), and its config.
    ``fixed``: other size parameters held at one value (``--set``), e.g. fewer sequences for a long-sequence sweep."""
    known = parameters(task)
    for each in (name, *(fixed or {})):
        if each not in known:
            raise XfbenchError(f"unknown parameter {each!r} of task {task!r}; choose one of: {', '.join(sorted(known))}")
    if name in (fixed or {}):
        raise XfbenchError(f"--set {name} is the parameter the sweep varies (--param {name}=...)")
    held = {key: _value(task, key, known[key], text) for key, text in (fixed or {}).items()}
    numbers = [_value(task, name, known[name], text) for text in values]
    tasks = []
    for number in numbers:
        try:
            built = get_task(task, **held, **{name: number})
        except XfbenchError as error:
            raise XfbenchError(f"--param {name}={number}: {error}") from None
        tasks.append(built.replace(name=f"{task}[{name}={number}]"))
    return tasks, {"task": task, "param": name, "values": numbers, "tasks": [item.name for item in tasks],
                   "fixed": held}
