"""The Ray executor: a real multi-node cluster (``ray.cluster_utils.Cluster``: a head and two nodes), run inside a
loopback-only network namespace so that no traffic leaves the machine (tests/ray_cluster.py runs the scenarios),
plus the checks that need no cluster.

Without Ray, or where a network namespace cannot be made (not root, no ``unshare``), the cluster tests skip and say
why, except under CI (``$CI`` set), where CI installs ``xfbench[ray]`` and they must run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import xfbench
from tests.schema import check_result_schema
from xfbench.compare.results.cell import Cell, Device, Node, Timing, Turn
from xfbench.compare.results.result import Result
from xfbench.compare.stats.summary import step_stats
from xfbench.errors import XfbenchError

REPO = Path(__file__).resolve().parent.parent


def _why_not() -> str | None:
    """Why the cluster tests cannot run here (None: they can)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return "ray is not installed (pip install 'xfbench[ray]')"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "no unshare/ip here to make a loopback-only network namespace"
    probe = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot make a network namespace here (root needed): {probe.stderr.strip()[:100]}"
    return None


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """tests/ray_cluster.py once, in a loopback-only namespace: its report and the folder of its results."""
    reason = _why_not()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the Ray cluster tests must run in CI: {reason}")
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("ray")
    script = f"ip link set lo up && exec {sys.executable} {REPO / 'tests' / 'ray_cluster.py'} {out}"
    done = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=600,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return {"report": report, "out": out}


def _cells(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def test_spread_places_each_task_on_its_own_node_with_every_cell_ok(cluster_run):
    """``xfbench run --ray ADDRESS`` of two tasks on a two-node cluster: every cell ok, the two tasks on distinct
    nodes, all backends of a task on the same node, the same schema as a local run, one table per task and node."""
    spread = cluster_run["report"]["spread"]
    assert spread["returncode"] == 0, spread["stderr"][-2000:]
    document = json.loads((cluster_run["out"] / "spread.json").read_text(encoding="utf-8"))
    check_result_schema(document)
    cells = document["cells"]
    assert [cell["status"] for cell in cells] == ["ok"] * 4
    node_of = {task: {c["node"]["id"] for c in cells if c["task"] == task} for task in ("regression", "mlp")}
    assert all(len(nodes) == 1 for nodes in node_of.values()), node_of
    assert node_of["regression"] != node_of["mlp"], "the two tasks ran on the same node"
    labelled = {node for node, labels in cluster_run["report"]["nodes"].items() if labels.get("group") == "bench"}
    assert set().union(*node_of.values()) <= labelled  # never on the head, which has no CPU
    for cell in cells:
        node = cell["node"]
        assert node["ray_version"] and node["cpu"] and node["labels"]["group"] == "bench" and cell["threads"] == 1
    assert document["config"]["executor"]["kind"] == "ray"
    assert len(document["comparisons"]) == 2 and {c["node"] for c in document["comparisons"]} == {
        next(iter(nodes)) for nodes in node_of.values()}
    titles = [line for line in spread["stdout"].splitlines() if " on cpu " in line]
    assert len(titles) == 2 and all("[" in title for title in titles), spread["stdout"]


def test_ray_stays_out_of_the_output(cluster_run):
    """No Ray log line on stdout or stderr: stdout holds the tables, stderr only xfbench's own lines. (Inside a
    network namespace Ray's C++ core warns once that it cannot probe 8.8.8.8 for its address: that line exists only
    there, where no network is, and is the one allowed.)"""
    spread = cluster_run["report"]["spread"]
    stray = [line for line in spread["stderr"].splitlines()
             if line.strip() and not line.startswith("xfbench: ") and "network_util.cc" not in line]
    assert stray == [], stray
    for line in spread["stdout"].splitlines():
        assert "(raylet)" not in line and "INFO" not in line and "WARNING" not in line, line


def test_on_each_runs_the_matrix_on_every_labelled_node(cluster_run):
    cells = _cells(cluster_run["out"] / "each.json")
    labelled = {node for node, labels in cluster_run["report"]["nodes"].items() if labels.get("group") == "bench"}
    assert len(labelled) == 2
    assert sorted((cell["backend"], cell["node"]["id"]) for cell in cells) == sorted(
        (backend, node) for backend in ("fake-ref", "fake-crash") for node in labelled)
    assert all(cell["status"] == "ok" for cell in cells)
    result = xfbench.load(str(cluster_run["out"] / "each.json"))
    check_result_schema(result.to_dict())
    assert {comparison.node for comparison in result.comparisons} == labelled  # compared within each node only
    tables = xfbench.table(result)
    assert sum(line.startswith("t1 on cpu") for line in tables.splitlines()) == 2, tables
    with pytest.raises(XfbenchError, match="ran on 2 nodes; choose one with node="):
        result.cell("t1", "fake-ref")
    node = sorted(labelled)[0]
    assert result.cell("t1", "fake-ref", node=node[:8]).node_id == node
    assert cluster_run["report"]["no_such_label"] == ("no node of the Ray cluster carries the label kind=nope; "
                                                      "labels present: group=bench, kind=a, kind=b")


def test_a_killed_node_agent_errors_only_its_cells_and_resume_finishes(cluster_run):
    """SIGKILL of the node agent running task "hold" (its worker held in build): that task's cells are error and
    lost (the reason names the dead agent), the other task's cells are kept ok, the agent's workers are gone within
    seconds, and a resume runs only the lost cells."""
    report = cluster_run["report"]
    kill = report["kill"]
    assert kill["workers"] and kill["alive_after"] == [], kill
    cells = {(cell["task"], cell["backend"]): cell for cell in report["killed_result"]["cells"]}
    assert [cells["ok", backend]["status"] for backend in ("fake-ref", "fake-crash")] == ["ok", "ok"]
    for backend in ("fake-ref", "fake-crash"):
        held = cells["hold", backend]
        assert held["status"] == "error" and held["lost"] is True and "node agent died" in held["error"], held
        assert held["node"]["id"] == kill["node"]
    progress = report["resume_progress"]
    assert any("] hold on " in line for line in progress) and not any("] ok on " in line for line in progress), progress
    resumed = json.loads((cluster_run["out"] / "killed.json").read_text(encoding="utf-8"))
    check_result_schema(resumed)
    assert [cell["status"] for cell in resumed["cells"]] == ["ok"] * 4
    assert not (cluster_run["out"] / "killed.json.partial").exists()
    assert report["worker_leftovers"] == [], "xfbench worker processes outlived the run"


def test_a_node_leaving_the_cluster_errors_its_cells_at_once(cluster_run):
    """``Cluster.remove_node`` while the node's task is in build: its cells are error and lost, the reason says the
    node left, and the run ends within seconds (not at a timeout)."""
    cells = _cells(cluster_run["out"] / "removed.json")
    assert [(cell["status"], cell["lost"]) for cell in cells] == [("error", True)] * 2
    assert all("the node left the cluster" in cell["error"] for cell in cells), cells[0]["error"]
    assert cluster_run["report"]["removed_after_s"] < 30


def test_ctrl_c_shuts_down_a_cluster_xfbench_started(cluster_run):
    """``xfbench run --ray`` without an address starts a one-node cluster of its own; SIGINT mid-run: exit code
    130, the message says how to resume, and every process the run started (GCS, raylet, Ray workers, the node
    agent, xfbench's workers) is gone."""
    interrupt = cluster_run["report"]["interrupt"]
    assert interrupt["returncode"] == 130, interrupt["stderr"][-2000:]
    assert "xfbench run --resume" in interrupt["stderr"] and "interrupted (SIGINT)" in interrupt["stderr"]
    assert interrupt["started"] >= 4 and interrupt["alive_after"] == [], interrupt


# ------------------------------------------------------------------------------------------ no cluster needed
def _timed(task: str, backend: str, node: str | None, block_ms: float) -> Cell:
    timing = Timing(turns=[Turn(0, r, i, 0.0, [block_ms * (1 + 0.01 * r)] * 3) for i, r in enumerate(range(6))])
    timing.step_ms = step_stats(timing.blocks())
    return Cell(task, backend, Device("cpu", "x"), "ok", timing=timing,
                node=Node(node, hostname="host") if node else None)


def test_backends_are_compared_only_within_a_node():
    """The same task on two nodes: one comparison per node, each from that node's cells only, one table each."""
    result = Result(cells=[_timed("mlp", "torch", "aaaa1111", 2.0), _timed("mlp", "jax", "aaaa1111", 1.0),
                           _timed("mlp", "torch", "bbbb2222", 1.0), _timed("mlp", "jax", "bbbb2222", 4.0)])
    result.compare()
    assert {(c.node, c.fastest) for c in result.comparisons} == {("aaaa1111", "jax"), ("bbbb2222", "torch")}
    assert result.comparison("mlp", node="bbbb2222").ratio("jax").ratio == pytest.approx(4.0)
    assert result.comparison("mlp") is None  # ambiguous without a node
    titles = [line for line in xfbench.table(result).splitlines() if line.startswith("mlp on cpu")]
    assert titles == ["mlp on cpu (x), node host [aaaa1111]", "mlp on cpu (x), node host [bbbb2222]"]
    again = Result.from_json(result.to_json())
    assert again.cells[0].node == Node("aaaa1111", hostname="host") and again.cells[0].lost is False
    from xfbench import reports

    markdown = reports.render(result, "md")
    assert r"ran on 2 Ray nodes: host \[aaaa1111\] (unknown CPU, ? cores); host \[bbbb2222\]" in markdown
    assert markdown.count(r"### mlp on cpu (x), node host \[") == 2
    rows = reports.render(result, "csv").splitlines()
    assert rows[0].endswith(",hostname,node") and rows[1].endswith(",host,aaaa1111"), rows[:2]


def test_schema_3_results_load_without_nodes():
    document = Result(cells=[Cell("mlp", "torch", Device("cpu", "x"), "ok")]).to_dict()
    document["schema_version"] = 3
    for cell in document["cells"]:
        del cell["node"], cell["lost"]
    loaded = Result.from_dict(document)
    assert loaded.cells[0].node is None and loaded.cells[0].lost is False and loaded.nodes() == []


@pytest.mark.processes
@pytest.mark.parametrize(("args", "message"), [
    (["--on-each", "kind=a"], "--on-each places cells on Ray nodes; add --ray"),
    (["--ray", "--on-each", "kind"], "--on-each takes LABEL=VALUE"),
    (["--executor", "slurm"], "unknown executor 'slurm'"),
    (["--ray", "--executor", "local"], "--ray runs on Ray, --executor local on this machine; choose one"),
])
def test_bad_executor_requests_are_one_line_before_any_work(args, message):
    done = subprocess.run([sys.executable, "-m", "xfbench", "run", "--backends", "torch", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.processes
def test_an_address_that_does_not_answer_is_one_line_at_once():
    pytest.importorskip("ray")
    done = subprocess.run([sys.executable, "-m", "xfbench", "run", "--ray", "127.0.0.1:1", "--backends", "torch"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == ("xfbench: error: cannot reach the Ray cluster at 127.0.0.1:1: Connection refused; "
                                   "is `ray start` running there?")
    done = subprocess.run([sys.executable, "-m", "xfbench", "run", "--ray", "somewhere", "--backends", "torch"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "give auto, HOST:PORT or ray://HOST:PORT" in done.stderr, done.stderr


def test_without_ray_the_ray_executor_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(XfbenchError, match=r"needs the ray package.*pip install 'xfbench\[ray\]'"):
        xfbench.run(tasks="regression", backends="torch", executor="ray")
    with pytest.raises(XfbenchError, match="unknown executor 'dask'"):
        xfbench.run(tasks="regression", backends="torch", executor="dask")


@pytest.mark.processes
def test_a_local_run_never_imports_ray():
    code = ("import sys, xfbench; xfbench.run(tasks='regression', backends='fake-ref', epochs=1, rounds=2, "
            "processes=1, threads=1); print('ray' in sys.modules)")
    env = {**os.environ, "XFBENCH_EXTRA_BACKENDS": "fake-ref=tests.fake_backend:ReferenceBackend",
           "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr[-2000:]
