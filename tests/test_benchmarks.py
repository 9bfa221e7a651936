"""The benchmark scripts run: a native loop alone and on command (the interleaving protocol), the overhead benchmark
end to end on one backend, and its bad input. Speed targets live in the scripts, never here."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO, ready_backend

BENCH = REPO / "benchmarks"


def python(*args: str, stdin: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], input=stdin, capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)


@pytest.mark.frameworks
@pytest.mark.processes
def test_native_loop_once_and_on_command():
    ready_backend("torch")
    loop = str(BENCH / "native" / "torch_loop.py")
    once = python(loop, "--workload", "mlp", "--threads", "1", "--seconds", "0.05")
    assert once.returncode == 0, once.stderr
    line = json.loads(once.stdout.strip().splitlines()[-1])
    assert line["workload"] == "mlp" and line["step_ms"]["median"] > 0 and line["step_ms"]["n"] >= 10

    commands = "".join(json.dumps({"workload": workload, "seconds": 0.02}) + "\n" for workload in ("cnn", "mlp"))
    served = python(loop, "--workload", "mlp,cnn", "--threads", "1", "--serve", stdin=commands)
    assert served.returncode == 0, served.stderr
    ready, *turns = [json.loads(text) for text in served.stdout.strip().splitlines()]
    assert set(ready["ready"]["first_step_s"]) == {"mlp", "cnn"}
    assert len(turns) == 2 and all(len(turn["step_ms"]) >= 3 and min(turn["step_ms"]) > 0 for turn in turns)
    assert min(turns[0]["step_ms"]) > max(turns[1]["step_ms"]), "the CNN turn should be slower than the MLP turn"


@pytest.mark.frameworks
@pytest.mark.processes
def test_overhead_benchmark_end_to_end(tmp_path):
    ready_backend("torch")
    path = tmp_path / "overhead.json"
    done = python(str(BENCH / "native_overhead.py"), "--backends", "torch", "--pairs", "1", "--turns", "2",
                  "--seconds", "0.02", "--threads", "1", "--json", str(path))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert re.fullmatch(r"max ratio: \d+\.\d\d", lines[-1]), lines[-1]
    document = json.loads(path.read_text(encoding="utf-8"))
    assert [(row["workload"], row["backend"]) for row in document["rows"]] == [("mlp", "torch"), ("cnn", "torch")]
    for row in document["rows"]:
        turns = row["pairs"][0]
        assert len(turns["native"]) == len(turns["xfbench"]) == 2
        assert 0.2 < row["ratio"] < 5, row  # the same kernels on both sides: never an order of magnitude apart
        assert 0 < row["floor_fraction"] < 1.5, row
    assert float(lines[-1].split()[-1]) == pytest.approx(max(row["ratio"] for row in document["rows"]), abs=0.005)


@pytest.mark.processes
@pytest.mark.parametrize(("args", "message"), [
    (["--backends", "pytorch"], "unknown backend 'pytorch'; choose from: tf-graph, tf-eager, torch, jax, tf-xla, "
                                "torch-compile, keras-jax, keras-tensorflow, keras-torch"),
    (["--pairs", "0"], "--pairs must be at least 1, got 0"),
])
def test_overhead_benchmark_bad_input(args, message):
    done = python(str(BENCH / "native_overhead.py"), *args)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith(message), done.stderr


@pytest.mark.frameworks
@pytest.mark.processes
def test_process_noise_script():
    ready_backend("torch")
    done = python(str(BENCH / "process_noise.py"), "--backend", "torch", "--workload", "mlp", "--runs", "2",
                  "--seconds", "0.05", "--pairs", "1", "--turns", "2", "--threads", "1")
    assert done.returncode == 0, done.stderr
    fresh, pairs = done.stdout.strip().splitlines()
    assert re.search(r"2 fresh processes, median step \d+\.\d+ ms, .* minor page faults per step \d+-\d+$", fresh), fresh
    assert re.search(r"1 pairs of identical processes, 2 turns each: median ratio B / A per pair \d\.\d{3}$", pairs)


@pytest.mark.processes
def test_process_noise_bad_input():
    done = python(str(BENCH / "process_noise.py"), "--turns", "0")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith("--pairs must be at least 0 and --turns at least 1, got 3 and 0")


def test_kept_runs_statistics():
    """benchmarks/kept_runs.py's decomposition: the excess sd is what the runs' own errors leave unexplained, and the
    slope on the machine's state recovers each backend's known elasticity."""
    import numpy as np

    sys.path.insert(0, str(BENCH))
    try:
        import kept_runs
    finally:
        sys.path.remove(str(BENCH))
    key, other = ("mlp", "jax", "torch"), ("cnn28", "jax", "torch")
    runs = [{key: (0.00, 0.03), other: (0.0, 0.01)}, {key: (0.04, 0.03), other: (0.2, 0.01)}, {key: (0.02, 0.03)}]
    rows = kept_runs.between_and_within(runs)
    assert list(rows) == [key]  # only the ratios every run has
    between, within, excess = rows[key]
    assert (between, within, excess) == pytest.approx((0.02, 0.03, 0.0))  # explained by the runs' own errors
    state = np.array([-0.2, -0.05, 0.1, 0.15])
    levels = np.column_stack([0.5 * state + 3.0, 1.0 * state - 1.0, 1.5 * state])
    centred, found, slopes = kept_runs.slopes_on_state(levels)
    np.testing.assert_allclose(centred, levels - levels.mean(axis=0))
    np.testing.assert_allclose(found, state - state.mean())
    np.testing.assert_allclose(slopes, [0.5, 1.0, 1.5])
    assert all(np.isnan(kept_runs.slopes_on_state(np.ones((3, 2)))[2]))


@pytest.mark.processes
def test_kept_runs_bad_input(tmp_path):
    done = python(str(BENCH / "kept_runs.py"), str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith(f"need at least 2 kept interleaved runs in {str(tmp_path)!r}, found 0")
