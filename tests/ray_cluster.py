"""Scenarios on a real multi-node Ray cluster, for tests/test_ray.py: run as a script inside a loopback-only
network namespace (``unshare -n``), so that no Ray traffic leaves the machine.

``python tests/ray_cluster.py OUT_DIR`` starts ``ray.cluster_utils.Cluster``: a head with no CPU (the driver's) and
two nodes of one CPU each (labels ``kind=a`` / ``kind=b``, both ``group=bench``; small object stores, no dashboard)
and, for scenario 4, a third (``kind=doomed``),
then runs, writing what it saw to ``OUT_DIR/report.json`` and the results beside it:
1. ``spread``: ``xfbench run --ray ADDRESS`` (the CLI, in a subprocess) of two tasks on a fake backend and JAX;
2. ``each``: ``xfbench.run(on_each="group=bench")``: one task on every labelled node;
3. ``kill``: two tasks through the API; the node agent holding task "hold" is killed (SIGKILL) while its worker
   waits in build; then the run is resumed;
4. ``removed``: a third node (``kind=doomed``) is removed from the cluster while its task's worker waits in build;
5. ``interrupt``: ``xfbench run --ray`` with no address starts a one-node cluster of its own; SIGINT while a worker
   waits in build: every process it started (Ray's included) must be gone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
FAKES = "fake-ref=tests.fake_backend:ReferenceBackend,fake-crash=tests.fake_backend:CrashingBackend"
MB = 1 << 20


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", encoding="utf-8") as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(parent, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    """tests/test_interleaved.py's twin: importing that module here would import xfbench before ``main`` sets the
    environment (the fake backends) that xfbench's registry reads at import."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def main(out: str) -> None:
    hold = os.path.join(out, "hold")
    os.environ.update({"RAY_USAGE_STATS_ENABLED": "0", "XFBENCH_EXTRA_BACKENDS": FAKES, "XFBENCH_FAKE_HOLD_FILE": hold,
                       "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))})
    report: dict[str, object] = {}
    started = time.monotonic()
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False,
                                                            "object_store_memory": 80 * MB})
    for kind in ("a", "b"):
        cluster.add_node(num_cpus=1, object_store_memory=80 * MB, labels={"kind": kind, "group": "bench"})
    report["cluster_start_s"] = round(time.monotonic() - started, 1)
    try:
        # 1. the CLI, tasks spread over the nodes
        spread = os.path.join(out, "spread.json")
        done = subprocess.run(
            [sys.executable, "-m", "xfbench", "run", "--ray", cluster.address, "--tasks", "regression,mlp",
             "--backends", "fake-ref,jax", "--epochs", "1", "--rounds", "2", "--processes", "1",
             "--turn-seconds", "0.02", "--json", spread], cwd=out, capture_output=True, text=True, timeout=300)
        report["spread"] = {"returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr}

        import xfbench
        from tests.conftest import small
        from xfbench.compare.plan import make_plan
        from xfbench.compare.platforms.ray import RayPlanExecutor
        from xfbench.compare.protocol import TimingOptions
        from xfbench.compare.runner import run_plan
        from xfbench.compare.session import execute

        quick = TimingOptions.quick(rounds=2, processes=1)
        # 2. the whole matrix on every node labelled group=bench (the API; xfbench connects, and disconnects after)
        each = os.path.join(out, "each.json")
        xfbench.run(tasks=[small("t1")], backends="fake-ref,fake-crash", timing=quick, ray_address=cluster.address,
                    on_each="group=bench", output=each)
        ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")  # xfbench uses this connection
        report["nodes"] = {node["NodeID"]: node.get("Labels", {}) for node in ray.nodes() if node["Alive"]}

        try:  # a label that no node carries: one line, listing the labels present
            RayPlanExecutor(run_plan, address=cluster.address, on_each="kind=nope").check(make_plan([small("t1")], "fake-ref"))
            report["no_such_label"] = None
        except xfbench.XfbenchError as error:
            report["no_such_label"] = str(error)

        # 3. kill the agent of task "hold" while its worker waits in build; the other task's cells are kept
        killed = os.path.join(out, "killed.json")
        open(hold, "w").close()
        plan = make_plan([small("ok"), small("hold")], "fake-ref,fake-crash", timing=quick)
        executor = RayPlanExecutor(run_plan, address=cluster.address)
        victims: dict[str, object] = {}

        def progress(text: str) -> None:
            if "hold on fake-crash/cpu: training" in text and not victims:
                unit = next(unit for unit in executor.units.values() if unit.task_index == 1)
                agent = unit.facts["pid"]
                victims.update(agent=agent, workers=children(agent), node=unit.node_id)
                os.kill(agent, signal.SIGKILL)

        execute(plan, progress, output=killed, executor=executor)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(alive(pid) for pid in victims["workers"]):  # type: ignore[union-attr]
            time.sleep(0.05)
        victims["alive_after"] = [pid for pid in victims["workers"] if alive(pid)]  # type: ignore[union-attr]
        report["kill"] = victims
        with open(killed, encoding="utf-8") as handle:
            report["killed_result"] = json.load(handle)
        os.unlink(hold)
        resumed_lines: list[str] = []
        execute(plan, resumed_lines.append, output=killed, resume=True,
                executor=RayPlanExecutor(run_plan, address=cluster.address))
        report["resume_progress"] = resumed_lines

        # 4. a node that leaves the cluster mid-run (added now: the scenarios above place on every node)
        doomed = cluster.add_node(num_cpus=1, object_store_memory=80 * MB, labels={"kind": "doomed"})
        open(hold, "w").close()
        removed = os.path.join(out, "removed.json")
        moment: dict[str, float] = {}

        def remove(text: str) -> None:
            if "hold on fake-crash/cpu: training" in text and not moment:
                moment["at"] = time.monotonic()
                cluster.remove_node(doomed)

        xfbench.run(tasks=[small("hold")], backends="fake-ref,fake-crash", timing=quick, ray_address=cluster.address,
                    on_each="kind=doomed", output=removed, progress=remove)
        report["removed_after_s"] = round(time.monotonic() - moment["at"], 2)

        # 5. Ctrl-C of a run that started its own cluster
        report["interrupt"] = interrupt_own_cluster(out)
        os.unlink(hold)
        deadline = time.monotonic() + 10  # ray.kill is asynchronous: the agents' processes take a moment to go
        while time.monotonic() < deadline and _leftovers():
            time.sleep(0.1)
        report["worker_leftovers"] = _leftovers()
    finally:
        ray.shutdown()
        cluster.shutdown()
    report["total_s"] = round(time.monotonic() - started, 1)
    with open(os.path.join(out, "report.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle)


def interrupt_own_cluster(out: str) -> dict[str, object]:
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", "XFBENCH_RAY_ADDRESS")}
    env["XFBENCH_FAKE_HANG_TASK"] = "regression"  # its own cluster inherits this: fake-crash hangs in build
    process = subprocess.Popen([sys.executable, "-m", "xfbench", "run", "--ray", "--tasks", "regression", "--backends",
                                "fake-ref,fake-crash", "--threads", "1", "--json", os.path.join(out, "own.json")],
                               cwd=out, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    assert process.stderr is not None
    for line in process.stderr:  # until the worker is held in build
        lines.append(line)
        if "regression on fake-crash/cpu: training" in line:
            break
    started = children(process.pid)  # gcs_server, raylet, Ray workers, the node agent, xfbench's workers
    process.send_signal(signal.SIGINT)
    try:
        _, rest = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        _, rest = process.communicate()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(pid) for pid in started):
        time.sleep(0.1)
    return {"returncode": process.returncode, "started": len(started), "alive_after": [pid for pid in started
                                                                                      if alive(pid)],
            "stderr": "".join(lines) + rest}


def _leftovers() -> list[int]:
    """xfbench worker processes still alive under this script (the cluster's processes are its children)."""
    return [pid for pid in children(os.getpid()) if alive(pid) and _is_xfbench_worker(pid)]


def _is_xfbench_worker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"xfbench.compare.worker" in handle.read()
    except OSError:
        return False


if __name__ == "__main__":
    main(sys.argv[1])
