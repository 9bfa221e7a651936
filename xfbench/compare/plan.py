"""Turn a user's request into a validated plan: which tasks, backends, devices, threads, limits.

Every bad value is rejected here, before any process starts, with one line naming the valid choices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from xfbench import backends
from xfbench.compare.engine.timing import injected_slowdown
from xfbench.compare.platforms.allocator import DEFAULT_POLICY, POLICIES
from xfbench.compare.platforms.allocator import describe as describe_malloc
from xfbench.compare.protocol import ORDERS, SCHEDULES, TimingOptions
from xfbench.errors import XfbenchError, unknown_name
from xfbench.machine import usable_cores
from xfbench.tasks import DEFAULT_TASKS, Task, get_task
from xfbench.tasks import check_name as check_task_name

DEVICES = ("cpu", "gpu")


@dataclass
class Plan:
    """A validated request: cells are tasks x backends x devices."""

    tasks: list[Task]
    backends: list[str]
    devices: list[str]
    threads: int
    timeout: float
    seeds: int = 1
    measure: bool = True
    timing: TimingOptions = field(default_factory=TimingOptions)
    parity: dict[str, Any] | None = None
    malloc: str = DEFAULT_POLICY
    relative_to: str | None = None

    @property
    def num_cells(self) -> int:
        return len(self.tasks) * len(self.backends) * len(self.devices)

    def keys(self) -> list[tuple[str, str, str]]:
        """Every cell's (task, backend, device), in the result's order: by task, then device, then backend."""
        return [(task.name, backend, device) for task in self.tasks for device in self.devices
                for backend in self.backends]

    def order(self, cell: Any) -> tuple[int, str]:
        """A cell's place in the result (for sorting): the plan's order, then the node it ran on."""
        return self.keys().index(cell.key), getattr(cell, "node_id", None) or ""

    def describe(self) -> dict[str, Any]:
        """The request as recorded in the result's ``config``."""
        return {
            "tasks": [task.name for task in self.tasks],
            "task_descriptions": {task.name: task.description for task in self.tasks},
            "backends": self.backends, "devices": self.devices, "threads": self.threads, "timeout_s": self.timeout,
            "seeds": self.seeds, "epochs": {task.name: task.epochs for task in self.tasks},
            "task_hashes": {task.name: task.spec_hash for task in self.tasks},
            "targets": {task.name: {"metric": task.metrics[0], "value": task.target} for task in self.tasks},
            "malloc": describe_malloc(self.malloc), "timing": self.timing.describe() if self.measure else None,
            "relative_to": self.relative_to,
        }


def split_names(value: str | Sequence[str] | None) -> list[str] | None:
    """``"a,b"`` or ``["a", "b"]`` -> ``["a", "b"]`` (None stays None); blanks are dropped."""
    if value is None:
        return None
    if isinstance(value, str):
        items: list[Any] = value.split(",")
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise XfbenchError(f"expected a comma-separated string or a list of names, got {type(value).__name__} "
                           f"{value!r}")
    for item in items:
        if not isinstance(item, (str, Task)):
            raise XfbenchError(f"expected names (strings) or xfbench.tasks.Task objects, got {type(item).__name__} "
                               f"{item!r}")
    return [item if isinstance(item, Task) else item.strip() for item in items
            if isinstance(item, Task) or item.strip()]


def _names(what: str, value: str | Sequence[Any] | None, default: Sequence[Any]) -> list[Any]:
    """The user's list, the default when not given, an error when given but empty (``--tasks ""``)."""
    names = split_names(value)
    if names is None:
        return list(default)
    if not names:
        raise XfbenchError(f"--{what} is empty; give at least one, e.g. --{what} {default[0]}")
    return names


def positive(name: str, value: Any, kind: type = int, label: str | None = None) -> Any:
    """``value`` as ``kind`` if it is a finite number > 0 (an integer for ``int``), else the error naming
    ``label`` (default: the flag ``--name``)."""
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not value > 0
            or (kind is int and value != int(value))):
        what = "a positive integer" if kind is int else "a positive number"
        raise XfbenchError(f"{label or '--' + name} must be {what}, got {value!r}")
    return kind(value)


def make_plan(tasks: str | Sequence[str | Task] | None = None, backends_: str | Sequence[str] | None = None,
              devices: str | Sequence[str] | None = None, threads: int | None = None, epochs: int | None = None,
              timeout: float = 600.0, seeds: int = 1, measure: bool = True,
              timing: TimingOptions | None = None, malloc: str = DEFAULT_POLICY,
              relative_to: str | None = None, target: float | None = None) -> Plan:
    """Validate a request. Task entries are built-in names or :class:`Task` objects (users' own tasks).

    Cheap checks come first, so a typo is reported before any data is loaded. ``backends="all"`` is every
    registered backend (the default is the four base ones). ``target`` replaces every task's
    time-to-accuracy target.
    """
    names = _names("backends", backends_, backends.DEFAULT_BACKENDS)
    if names == ["all"]:
        names = backends.backend_names()
    chosen_backends = [backends.check_name(name) for name in names]
    for name in chosen_backends:  # the test-only slowdown the workers will read: a malformed one fails here
        injected_slowdown(name)
    chosen_devices = _names("devices", devices, ("cpu",))
    for device in chosen_devices:
        if device not in DEVICES:
            raise unknown_name("device", device, DEVICES)
    if malloc not in POLICIES:
        raise unknown_name("malloc policy", malloc, POLICIES)
    if relative_to is not None and relative_to not in chosen_backends:
        raise XfbenchError(f"--relative-to {relative_to!r} is not one of this run's backends; choose one of: "
                           f"{', '.join(chosen_backends)}")
    timing = check_timing(timing or TimingOptions())
    cores = usable_cores()
    threads = cores if threads is None else positive("threads", threads)
    if threads > cores:
        raise XfbenchError(f"--threads {threads} is more than the {cores} usable cores here; choose 1 to {cores}")
    timeout = positive("timeout", timeout, float)
    seeds = positive("seeds", seeds)
    if epochs is not None:
        epochs = positive("epochs", epochs)
    if target is not None:
        check_target(target)
    entries = _names("tasks", tasks, DEFAULT_TASKS)
    for entry in entries:  # every name checked before any task loads its data
        if not isinstance(entry, Task):
            check_task_name(entry)
    chosen_tasks: list[Task] = []
    for entry in entries:
        task = entry if isinstance(entry, Task) else get_task(entry)
        changes = {name: value for name, value in (("epochs", epochs), ("target", target)) if value is not None}
        chosen_tasks.append(task.replace(**changes) if changes else task)
    names = [task.name for task in chosen_tasks]
    if len(set(names)) != len(names):
        raise XfbenchError(f"task names must be unique within a run, got {names}")
    return Plan(
        tasks=chosen_tasks, backends=list(dict.fromkeys(chosen_backends)), devices=list(dict.fromkeys(chosen_devices)),
        threads=threads, timeout=timeout, seeds=seeds,
        measure=measure, timing=timing, malloc=malloc, relative_to=relative_to,
    )


def check_target(target: Any) -> float:
    """A time-to-accuracy target: a finite number."""
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not math.isfinite(target):
        raise XfbenchError(f"--target must be a finite number (e.g. 0.95 accuracy), got {target!r}")
    return float(target)


def check_timing(options: TimingOptions) -> TimingOptions:
    """The timing options, or the one-line error for the first bad value."""
    if not isinstance(options, TimingOptions):
        raise XfbenchError(f"timing must be an xfbench.TimingOptions, got {type(options).__name__}")
    positive("rounds", options.rounds)
    positive("processes", options.processes)
    positive("turn-seconds", options.turn_s, float)
    positive("", options.min_blocks, label="TimingOptions.min_blocks")
    positive("", options.min_block_s, float, label="TimingOptions.min_block_s")
    if options.untimed_s is not None:
        positive("", options.untimed_s, float, label="TimingOptions.untimed_s (or None: one untimed block)")
    if isinstance(options.warmup_rounds, bool) or not isinstance(options.warmup_rounds, int) or options.warmup_rounds < 0:
        raise XfbenchError(f"TimingOptions.warmup_rounds must be an integer >= 0, got {options.warmup_rounds!r}")
    warmup = options.warmup_s
    if isinstance(warmup, bool) or not isinstance(warmup, (int, float)) or not math.isfinite(warmup) or warmup < 0:
        raise XfbenchError(f"TimingOptions.warmup_s must be a number >= 0, got {warmup!r}")
    if options.schedule not in SCHEDULES:
        raise unknown_name("schedule", options.schedule, SCHEDULES)
    if options.order not in ORDERS:
        raise unknown_name("order", options.order, ORDERS)
    return options
