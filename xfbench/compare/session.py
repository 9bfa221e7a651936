"""A whole run: plan -> runner -> result, with every finished cell on disk as it finishes, and resuming.

With an ``output`` path, cells are appended to ``OUTPUT.partial`` (``results.journal``) as they finish; a run killed
or interrupted keeps them there, and ``resume`` runs only the cells still missing, then writes the whole result to
``OUTPUT`` and removes the partial file. A resumed run must be the same plan: same tasks (by their spec hash),
backends, devices, threads, seeds, allocator policy and timing protocol.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from xfbench.compare.plan import Plan, make_plan
from xfbench.compare.platforms.base import PlanExecutor
from xfbench.compare.protocol import TimingOptions
from xfbench.compare.results.cell import Cell
from xfbench.compare.results.files import partial_path
from xfbench.compare.results.journal import Journal
from xfbench.compare.results.result import Result
from xfbench.compare.runner import LocalPlanExecutor
from xfbench.compare.stats.parity import ParityOptions, judge
from xfbench.compare.stats.ratios import compare_result
from xfbench.errors import XfbenchError
from xfbench.progress import Progress, as_progress

SAME_PLAN = ("tasks", "task_hashes", "backends", "devices", "threads", "seeds", "timing")


def previous_run(output: str) -> Result | None:
    """The saved (or partial) result at ``output``, or None when there is neither."""
    if not (os.path.exists(output) or os.path.exists(partial_path(output))):
        return None
    return Result.load(output)


def check_same_plan(previous: Result, config: dict[str, Any], output: str) -> None:
    for key in SAME_PLAN:
        if previous.config.get(key) != config.get(key):
            raise XfbenchError(f"cannot resume {output!r}: its {key} ({previous.config.get(key)!r}) differs from this "
                               f"run's ({config.get(key)!r}); resume with the same settings, or write elsewhere")


def plan_from_result(previous: Result, output: str, timeout: float | None = None) -> Plan:
    """Rebuild the plan of a saved run of built-in tasks (``xfbench run --resume PATH``)."""
    from xfbench.tasks import BUILTIN_TASKS, get_task

    config = previous.config
    try:
        tasks = []
        for name in config["tasks"]:
            if name not in BUILTIN_TASKS:
                raise XfbenchError(f"cannot resume {output!r} from the command line: task {name!r} is not built in; "
                                   "resume from Python with xfbench.run(tasks=[...], output=PATH, resume=True)")
            task = get_task(name).replace(epochs=config["epochs"][name])
            saved_target = (config.get("targets") or {}).get(name)
            if isinstance(saved_target, dict):
                task = task.replace(target=saved_target.get("value"))
            if task.spec_hash != config["task_hashes"][name]:
                raise XfbenchError(f"cannot resume {output!r} from the command line: task {name!r} was built with other "
                                   "sizes; resume from Python with the same Task objects")
            tasks.append(task)
        timing = config.get("timing") or {}
        known = TimingOptions.__dataclass_fields__
        saved = {key: value for key, value in timing.items() if key in known}
        saved.setdefault("untimed_s", None)  # saved before untimed_s existed: one untimed block per turn
        options = TimingOptions(**saved)
        return make_plan(tasks, config["backends"], config["devices"], config["threads"],
                         timeout=timeout or config["timeout_s"], seeds=config["seeds"], timing=options,
                         malloc=(config.get("malloc") or {}).get("policy", "steady").replace("user", "steady"),
                         relative_to=config.get("relative_to"), measure=bool(timing))
    except KeyError as error:
        raise XfbenchError(f"cannot resume {output!r}: its config lacks {error}") from None


def execute(plan: Plan, progress: Progress | Callable[[str], Any] | None = None, output: str | None = None, resume: bool = False,
            config: dict[str, Any] | None = None, finish: Callable[[Result], None] | None = None,
            executor: PlanExecutor | None = None) -> Result:
    """Run ``plan`` and return its result (also written to ``output`` when given).

    ``resume``: keep the cells already saved at ``output`` (or in its partial file) and run only the missing ones.
    ``config``: what the result records of the request (default ``plan.describe()``). ``finish``: called on the
    whole result before comparisons are computed and it is saved (parity compares backends there).
    ``executor``: where the cells run (default: this machine); it is closed when the run ends.
    """
    with executor or LocalPlanExecutor() as running:
        return _execute(plan, running, as_progress(progress), output, resume, dict(config or plan.describe()), finish)


def _execute(plan: Plan, executor: PlanExecutor, progress: Progress | None, output: str | None, resume: bool,
             config: dict[str, Any], finish: Callable[[Result], None] | None) -> Result:
    result = Result(config=config)
    previous = previous_run(output) if output and resume else None
    if output and resume and previous is None:
        raise XfbenchError(f"nothing to resume at {output!r} (no result and no {os.path.basename(partial_path(output))})")
    kept = []
    if previous is not None:
        check_same_plan(previous, config, output)  # type: ignore[arg-type]
        keys = set(plan.keys())
        kept = [cell for cell in previous.cells if cell.key in keys and not cell.lost]  # lost cells run again
        result.created, result.machine = previous.created, previous.machine
    executor.check(plan)  # after the cheap checks: it may connect to a cluster, or start one
    result.config["executor"] = executor.describe()
    journal = None
    if output:
        header = {key: value for key, value in result.to_dict().items() if key not in ("cells", "comparisons")}
        journal = Journal(output, header, [cell.to_dict() for cell in kept])
    cells: list[Cell] = []

    def keep(cell: Cell) -> None:
        cells.append(cell)
        if journal is not None:
            journal.append(cell.to_dict())

    try:
        executor.run(plan, progress, keep, kept)
    finally:
        if journal is not None:
            journal.close()
    result.config["executor"] = executor.describe()  # now with what placing the cells cost
    result.cells = sorted(kept + cells, key=plan.order)
    if finish is not None:
        finish(result)
    compare_result(result, plan.relative_to)
    if journal is not None:
        journal.finish(result.to_json() + "\n")
    return result


def run_with_parity(plan: Plan, options: ParityOptions, progress: Progress | Callable[[str], Any] | None,
                    only: bool = False, output: str | None = None, executor: PlanExecutor | None = None) -> Result:
    """Run the plan with parity checked in every cell (``only``: parity alone, no training or timing), then judge
    the backends against the reference and each other (``compare.stats.parity.judge``). Used by
    ``xfbench.run(parity=True)`` and ``xfbench parity``."""
    plan.parity = {**options.as_dict(), "only": only}
    tasks = {task.name: task for task in plan.tasks}
    return execute(plan, progress, output=output, config={**plan.describe(), "parity": options.as_dict()},
                   finish=lambda result: judge(result, tasks, options), executor=executor)
