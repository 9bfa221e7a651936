"""Where a run's cells run, chosen once for the command line and the Python API: this machine (the default) or a
Ray cluster (``platforms.ray``), each request checked before any work starts.
"""

from __future__ import annotations

from xfbench.compare.plan import positive
from xfbench.compare.platforms.base import PlanExecutor
from xfbench.compare.runner import run_plan
from xfbench.errors import XfbenchError, unknown_name

EXECUTORS = ("local", "ray")  # where a run's cells can run (xfbench run --executor)


def plan_executor(executor: str | None = None, ray_address: str | None = None, on_each: str | None = None,
                  threads: int | None = None, flags: bool = False) -> PlanExecutor | None:
    """The plan executor asked for (None: this machine), its values checked: the executor's name, a Ray address or
    label without Ray, the label's form, the thread count, Ray's presence.

    In the Python API a ``ray_address`` or ``on_each`` implies Ray; on the command line (``flags``) ``--ray`` (its
    address may be empty: the default cluster) or ``--executor ray`` asks for it, and ``--on-each`` alone is refused.

    Example:
        >>> plan_executor() is None, plan_executor("local") is None
        (True, True)
    """
    if executor is not None and executor not in EXECUTORS:
        raise unknown_name("executor", executor, EXECUTORS)
    if flags:
        if executor == "local" and ray_address is not None:
            raise XfbenchError("--ray runs on Ray, --executor local on this machine; choose one")
        wants_ray = executor == "ray" or ray_address is not None
        if not wants_ray and on_each is not None:
            raise XfbenchError("--on-each places cells on Ray nodes; add --ray (or --executor ray)")
    else:
        if executor == "local" and (ray_address is not None or on_each is not None):
            raise XfbenchError("ray_address and on_each place cells on Ray; drop them or use executor='ray'")
        wants_ray = executor == "ray" or ray_address is not None or on_each is not None
    if not wants_ray:
        return None
    from xfbench.compare.platforms.ray import RayPlanExecutor, import_ray, parse_label

    parse_label(on_each)
    if threads is not None:
        positive("threads", threads)
    import_ray()
    return RayPlanExecutor(run_plan, address=ray_address or None, on_each=on_each, threads=threads)
