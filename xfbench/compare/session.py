"""A whole run: plan -> runner -> result, with every finished cell on disk as it finishes, and resuming.

With an ``output`` path, cells are appended to ``OUTPUT.partial`` (``results.journal``) as they finish; a run killed
or interrupted keeps them there, and ``resume`` runs only the cells still missing, then writes the whole result to
``OUTPUT`` and removes the partial file. Resume is correct by construction:

- it takes the target or its partial file and always writes the target;
- it refuses, in one line, a document that is not a run result or belongs to another plan (the same tasks by their
  spec hash, backends, devices, threads, seeds, timing protocol and parity settings);
- a parity run's kept cells keep their weights after K steps in the partial file, so the resumed run judges every
  cell as an uninterrupted run would, and the resumed cells get their parity;
- a new run refuses to start over an interrupted run's partial file, and says how to resume it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from xfbench.compare.plan import Plan, make_plan
from xfbench.compare.platforms.base import PlanExecutor
from xfbench.compare.protocol import TimingOptions
from xfbench.compare.results.cell import Cell
from xfbench.compare.results.files import PARTIAL_SUFFIX, partial_path
from xfbench.compare.results.journal import Journal, read_partial
from xfbench.compare.results.result import Result
from xfbench.compare.runner import LocalPlanExecutor
from xfbench.compare.stats.parity import ParityOptions, judge
from xfbench.compare.stats.ratios import compare_result
from xfbench.errors import XfbenchError
from xfbench.progress import Progress, as_progress

SAME_PLAN = ("tasks", "task_hashes", "backends", "devices", "threads", "seeds", "timing", "parity")
ProgressLike = Progress | Callable[[str], Any] | None


def target_of(path: str) -> str:
    """The result file a path names: itself, or the target of a partial file (``OUT.json.partial`` -> ``OUT.json``).

    Example:
        >>> target_of("out/run.json.partial"), target_of("out/run.json")
        ('out/run.json', 'out/run.json')
    """
    return path[:-len(PARTIAL_SUFFIX)] if path.endswith(PARTIAL_SUFFIX) else path


def previous_run(output: str, shown: str | None = None) -> Result:
    """The saved (or partial) result at ``output``, or the one-line error saying there is neither (``shown``: the
    path as the user gave it)."""
    if not (os.path.exists(output) or os.path.exists(partial_path(output))):
        raise XfbenchError(f"nothing to resume at {shown or output!r} (no result and no {partial_path(output)})")
    return Result.load(output)


def check_fresh(output: str) -> None:
    """A new run writing to ``output`` would discard an interrupted run's partial file there: the one-line error
    saying how to finish that run instead."""
    partial = partial_path(output)
    if not os.path.exists(partial):
        return
    try:
        count = len(read_partial(partial)["cells"])
        held = f"holds {count} finished cell{'s' if count != 1 else ''} of an interrupted run"
    except XfbenchError:
        held = "is the partial file of an interrupted run"
    raise XfbenchError(f"{partial!r} {held}; finish it with: xfbench run --resume {output} (or remove it to start "
                       "afresh)")


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
            task = get_task(name).replace(epochs=int(config["epochs"][name]))
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


def parity_options(config: dict[str, Any]) -> ParityOptions | None:
    """The parity settings a run recorded (None: it checked no parity)."""
    saved = config.get("parity")
    if saved is None:
        return None
    names = {item.name for item in fields(ParityOptions)}
    return ParityOptions(**{key: value for key, value in saved.items() if key in names})


def resume_plan(path: str, timeout: float | None = None) -> tuple[Plan, str, ParityOptions | None]:
    """The plan, the target file and the parity settings of the run saved at ``path`` (its result file or its
    partial file), checked before any work starts."""
    output = target_of(path)
    previous = previous_run(output, path)
    return plan_from_result(previous, output, timeout), output, parity_options(previous.config)


def resume(path: str, progress: ProgressLike = None, timeout: float | None = None,
           executor: PlanExecutor | None = None) -> Result:
    """Finish the run saved at ``path`` (its result file or its partial file) with the settings it recorded, running
    only the missing cells; the whole result is written to the target (``xfbench run --resume PATH``)."""
    plan, output, parity = resume_plan(path, timeout)
    return execute(plan, progress, output=output, resume=True, executor=executor, parity=parity)


def execute(plan: Plan, progress: ProgressLike = None, output: str | None = None, resume: bool = False,
            config: dict[str, Any] | None = None, executor: PlanExecutor | None = None,
            parity: ParityOptions | None = None) -> Result:
    """Run ``plan`` and return its result (also written to ``output`` when given).

    ``resume``: keep the cells already saved at ``output`` (or in its partial file) and run only the missing ones;
    without it, an interrupted run's partial file at ``output`` is refused (see :func:`check_fresh`). ``config``: what
    the result records of the request (default ``plan.describe()``). ``executor``: where the cells run (default: this
    machine); it is closed when the run ends. ``parity``: check every cell against the float64 reference (alone
    when the plan measures nothing: ``xfbench parity``), then judge the backends against it and each other
    (``compare.stats.parity.judge``).
    """
    if output is not None:
        output = target_of(output) if resume else output
        if not resume:
            check_fresh(output)
    config = dict(config or plan.describe())
    finish = None
    if parity is not None:
        plan.parity = {**parity.as_dict(), "only": not plan.measure}
        config["parity"] = parity.as_dict()
        tasks = {task.name: task for task in plan.tasks}

        def finish(result: Result) -> None:
            judge(result, tasks, parity)
    with executor or LocalPlanExecutor() as running:
        return _execute(plan, running, as_progress(progress), output, resume, config, finish)


def _execute(plan: Plan, executor: PlanExecutor, progress: Progress, output: str | None, resume: bool,
             config: dict[str, Any], finish: Callable[[Result], None] | None) -> Result:
    result = Result(config=config)
    previous = previous_run(output) if output and resume else None
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
        journal = Journal(output, header, [cell.to_dict(with_weights=True) for cell in kept])
    cells: list[Cell] = []

    def keep(cell: Cell) -> None:
        cells.append(cell)
        if journal is not None:
            journal.append(cell.to_dict(with_weights=True))  # parity's weights: a resumed run judges every cell

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
