"""Interleaved timing with real worker processes (the fake backends of tests/fake_backend.py): the turns of a task
alternate between its workers, a worker that dies or hangs in the rounds costs only its own cell, and a run killed
with ``kill -9`` or interrupted by a signal keeps every finished cell, leaves no worker behind, and resumes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import xfbench
from tests.conftest import REPO, small
from tests.schema import check_result_schema
from xfbench.compare.protocol import TimingOptions
from xfbench.compare.results.files import partial_path
from xfbench.compare.results.result import Result

QUICK = TimingOptions.quick(rounds=4, processes=2)


def run(tasks, backend_names, timeout: float = 120.0, **kwargs) -> tuple[Result, list[str]]:
    progress: list[str] = []
    result = xfbench.run(tasks=tasks, backends=backend_names, threads=1, timeout=timeout,
                         timing=kwargs.pop("timing", QUICK), progress=progress.append, **kwargs)
    return result, progress


def test_turns_rotate_through_every_worker(fakes):
    """Two backends x two processes: every round gives each of the four workers one turn, positions 0-3, and the
    order shifts by one place every round, so each worker runs in every position once over four rounds."""
    result, progress = run([small("a")], ["fake-ref", "fake-crash"])
    check_result_schema(result.to_dict())
    turns = sorted((turn.round, turn.position, cell.backend, turn.process, turn.start_s)
                    for cell in result.cells for turn in cell.timing.turns)
    assert len(turns) == 4 * 4
    for round_index in range(4):
        in_round = [turn for turn in turns if turn[0] == round_index]
        assert [turn[1] for turn in in_round] == [0, 1, 2, 3]
        assert [turn[4] for turn in in_round] == sorted(turn[4] for turn in in_round)  # positions in time order
    workers = {(backend, process) for _, _, backend, process, _ in turns}
    for worker in workers:
        assert sorted(turn[1] for turn in turns if turn[2:4] == worker) == [0, 1, 2, 3]
    sessions = {cell.timing.session for cell in result.cells}
    assert len(sessions) == 1 and None not in sessions
    comparison = result.comparison("a")
    assert comparison is not None and comparison.paired and {r.backend for r in comparison.ratios} == {"fake-ref",
                                                                                                         "fake-crash"}
    assert any(line == "a on cpu: timing 4 workers in 4 rounds" for line in progress), progress
    for cell in result.cells:
        assert [process.trained_epochs for process in cell.timing.processes] == [3, 1]  # train, then prime


def test_sequential_times_one_backend_after_another(fakes):
    result, _ = run([small("a")], ["fake-ref", "fake-crash"], sequential=True)
    check_result_schema(result.to_dict())
    first, second = result.cells
    assert max(turn.start_s for turn in first.timing.turns) >= 0 and first.timing.session != second.timing.session
    comparison = result.comparison("a")
    assert comparison is not None and comparison.paired is False
    assert "timed one backend after another" in xfbench.table(result)
    assert first.timing.protocol["schedule"] == "sequential"


@pytest.mark.parametrize(("task", "expected"), [
    ("crash-timing", "during timing: worker exited with code 3"),
    ("raise-timing", "during timing: RuntimeError: deliberate failure while timed"),
])
def test_a_cell_dying_in_the_rounds_keeps_every_other_cell(fakes, tmp_path, task, expected):
    """fake-crash dies (or raises) in its first timing turn: its cell is an error that keeps what training measured,
    fake-ref is timed through every round, the next task runs on a fresh worker, and all of it is on disk."""
    path = tmp_path / "run.json"
    result, _ = run([small(task), small("ok-b")], ["fake-crash", "fake-ref"], output=str(path))
    check_result_schema(result.to_dict())
    broken = result.cell(task, "fake-crash")
    assert broken.status == "error" and broken.error.startswith(expected), broken.error
    assert broken.metrics["r2"] > 0.95  # trained before it died
    survivor = result.cell(task, "fake-ref")
    assert survivor.ok and len(survivor.timing.turns) == 4 * 2  # 4 rounds x 2 processes
    assert result.cell("ok-b", "fake-crash").ok and result.cell("ok-b", "fake-ref").ok
    assert [ratio.backend for ratio in result.comparison(task).ratios] == ["fake-ref"]  # type: ignore[union-attr]
    saved = xfbench.load(str(path))
    assert saved.to_dict()["cells"] == result.to_dict()["cells"] and not os.path.exists(partial_path(path))


def test_a_timing_only_process_dying_while_priming_costs_only_its_cell(fakes):
    """The timing-only processes prime together: one that dies fails its own cell (keeping what process 0 trained),
    its peer primes and is timed, and the next task gets a fresh worker in its place."""
    result, progress = run([small("crash-priming"), small("ok-b")], ["fake-crash", "fake-ref"])
    check_result_schema(result.to_dict())
    broken = result.cell("crash-priming", "fake-crash")
    assert broken.status == "error" and broken.error.startswith("worker exited with code 3"), broken.error
    assert broken.metrics["r2"] > 0.95 and not broken.timing.turns
    survivor = result.cell("crash-priming", "fake-ref")
    assert survivor.ok and len(survivor.timing.turns) == 4 * 2
    assert [process.trained_epochs for process in survivor.timing.processes] == [3, 1]
    assert result.cell("ok-b", "fake-crash").ok and result.cell("ok-b", "fake-ref").ok
    assert "crash-priming on cpu: priming 2 more processes together" in progress, progress


def test_a_worker_hanging_in_the_rounds_times_out(fakes):
    started = time.monotonic()
    result, _ = run([small("hang-timing")], ["fake-crash", "fake-ref"], timeout=4)
    assert result.cell("hang-timing", "fake-crash").error == "during timing: timed out after 4 s (timing)"
    assert result.cell("hang-timing", "fake-ref").ok
    assert time.monotonic() - started < 60


# ------------------------------------------------------------------------------------ kill -9 and signals
def alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_for_cells(path: Path, count: int, process: subprocess.Popen, timeout: float = 120) -> list[dict]:
    """The cells in ``PATH.partial`` once there are ``count`` of them (the run goes on meanwhile)."""
    partial = Path(partial_path(path))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if partial.exists():
            lines = [json.loads(line) for line in partial.read_text().splitlines() if line.strip()]
            cells = [line["cell"] for line in lines if line.get("kind") == "cell"]
            if len(cells) >= count:
                return cells
        time.sleep(0.2)
    raise AssertionError(f"no {count} cells in {partial} after {timeout} s")


def worker_pids(cells: list[dict]) -> set[int]:
    return {process["pid"] for cell in cells for process in cell["timing"]["processes"]}


def gone_within(pids: set[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(alive(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return False


API_RUN = """
import sys, xfbench
from tests.conftest import small
from xfbench.compare.protocol import TimingOptions
xfbench.run(tasks=[small("ok-a"), small("slow")], backends=["fake-ref", "fake-crash"], threads=1,
            timing=TimingOptions.quick(rounds=4, processes=2), output=sys.argv[1])
"""


def test_kill_9_keeps_every_finished_cell_and_resume_finishes(fakes, tmp_path):
    """``kill -9`` of a run while fake-crash hangs in its second task: the first task's cells are on disk, every
    worker is gone within two seconds (they die with their parent), and a resume runs only the missing cells."""
    path = tmp_path / "run.json"
    env = {**os.environ, "XFBENCH_FAKE_HANG_TASK": "slow"}
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(API_RUN), str(path)], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        cells = wait_for_cells(path, 2, process)
    finally:
        process.kill()
        process.wait()
    assert {cell["task"] for cell in cells} == {"ok-a"} and all(cell["status"] == "ok" for cell in cells)
    pids = worker_pids(cells)
    assert len(pids) == 4 and gone_within(pids, 2.0), [pid for pid in pids if alive(pid)]
    assert not path.exists()  # the whole result was never written; the partial file holds what was measured
    partial = xfbench.load(str(path))
    assert partial.complete is False and [cell.key[:2] for cell in partial.cells] == [("ok-a", "fake-ref"),
                                                                                       ("ok-a", "fake-crash")]
    resumed, progress = run([small("ok-a"), small("slow")], ["fake-ref", "fake-crash"], output=str(path), resume=True,
                            timing=TimingOptions.quick(rounds=4, processes=2))
    assert not any(line.startswith("ok-a on ") for line in progress), progress  # not run again
    assert [cell.status for cell in resumed.cells] == ["ok"] * 4
    assert resumed.cell("ok-a", "fake-ref").to_dict() == partial.cell("ok-a", "fake-ref").to_dict()
    check_result_schema(json.loads(path.read_text()))
    assert not os.path.exists(partial_path(path))


def test_resume_refuses_another_plan(fakes, tmp_path):
    path = tmp_path / "run.json"
    run([small("ok-a")], ["fake-ref"], output=str(path), timing=QUICK)
    with pytest.raises(xfbench.XfbenchError, match=r"cannot resume .* its backends"):
        run([small("ok-a")], ["fake-crash"], output=str(path), resume=True)
    with pytest.raises(xfbench.XfbenchError, match="nothing to resume"):
        run([small("ok-a")], ["fake-ref"], output=str(tmp_path / "other.json"), resume=True)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_signal_stops_every_worker_and_resume_finishes(fakes, tmp_path, signum, code):
    """Ctrl-C (SIGINT), SIGTERM or SIGHUP to ``xfbench run`` while a worker hangs: the exit code says which signal,
    the message says how to resume, no worker is left, and ``--resume`` finishes only the missing cells."""
    path = tmp_path / "run.json"
    args = ["run", "--tasks", "regression,mlp", "--backends", "fake-ref,fake-crash", "--epochs", "2", "--rounds", "3",
            "--turn-seconds", "0.01", "--threads", "1", "--json", str(path)]
    env = {**os.environ, "XFBENCH_FAKE_HANG_TASK": "mlp"}
    process = subprocess.Popen([sys.executable, "-m", "xfbench", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        cells = wait_for_cells(path, 2, process)
        time.sleep(0.5)  # into the hanging task
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == code, stderr
    name = signal.Signals(signum).name
    assert f"xfbench: interrupted ({name}); every worker was stopped" in stderr
    assert f"finish the run with: xfbench run --resume {path}" in stderr
    assert gone_within(worker_pids(cells), 2.0)
    done = subprocess.run([sys.executable, "-m", "xfbench", "run", "--resume", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "regression on fake" not in done.stderr and "mlp on fake-crash/cpu: ok" in done.stderr
    document = json.loads(path.read_text())
    check_result_schema(document)
    assert [cell["status"] for cell in document["cells"]] == ["ok"] * 4
