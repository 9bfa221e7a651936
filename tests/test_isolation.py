"""Error paths of the runner: a cell that crashes its worker, one that hangs, one that raises, a backend whose
framework is missing. The other cells must survive each of them.

The misbehaving backends live in ``tests/fake_backend.py`` and are registered with ``XFBENCH_EXTRA_BACKENDS`` (read
by ``xfbench.backends`` at import, so the worker processes, started with ``python -m xfbench.compare.worker``, see
them) and in this process's registry.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

import xfbench
from tests.conftest import REPO, ready_backend, small
from tests.fake_backend import CrashingBackend
from tests.schema import check_result_schema
from xfbench import backends
from xfbench.compare.platforms import local
from xfbench.compare.protocol import TimingOptions
from xfbench.compare.results.result import Result

MISSING_HINT = "no_such_framework_xyz is not installed: pip install 'xfbench[no_such_framework_xyz]'"


def run(tasks, backend_names, timeout: float = 120.0) -> tuple[Result, list[str]]:
    progress: list[str] = []
    result = xfbench.run(tasks=tasks, backends=backend_names, threads=1, timeout=timeout,
                         timing=TimingOptions.quick(), progress=progress.append)
    return result, progress


def statuses(result: Result) -> dict[tuple[str, str], str]:
    return {(cell.task, cell.backend): cell.status for cell in result.cells}


def test_fake_backend_works(fakes):
    """The baseline: the NumPy reference adapter trains in a worker and reaches the regression's R²."""
    result, _ = run([small("ok-a")], ["fake-ref"])
    cell = result.cell("ok-a", "fake-ref")
    assert cell.status == "ok", cell.error
    assert cell.metrics["r2"] > 0.95
    assert cell.versions == {"numpy": np.__version__}
    check_result_schema(result.to_dict())


def test_crash_loses_only_its_cell(fakes):
    result, progress = run([small("ok-a"), small("crash"), small("ok-b")], ["fake-crash", "fake-missing"])
    check_result_schema(result.to_dict())
    assert statuses(result) == {
        ("ok-a", "fake-crash"): "ok", ("crash", "fake-crash"): "error", ("ok-b", "fake-crash"): "ok",
        ("ok-a", "fake-missing"): "unsupported", ("crash", "fake-missing"): "unsupported",
        ("ok-b", "fake-missing"): "unsupported",
    }
    crashed = result.cell("crash", "fake-crash")
    assert crashed.error.startswith(f"worker exited with code {CrashingBackend.EXIT_CODE}"), crashed.error
    assert result.cell("ok-b", "fake-crash").metrics["r2"] > 0.95  # a fresh worker ran the rest
    assert any("crash on fake-crash/cpu: error: worker exited with code 3" in line for line in progress)
    # plan order is kept: task by task, backends in the order asked for
    assert [cell.key[:2] for cell in result.cells] == [
        (task, backend) for task in ("ok-a", "crash", "ok-b") for backend in ("fake-crash", "fake-missing")]


def test_hang_times_out_and_the_next_task_runs(fakes):
    start = time.monotonic()
    result, _ = run([small("hang"), small("ok-b")], ["fake-crash"], timeout=5)
    elapsed = time.monotonic() - start
    check_result_schema(result.to_dict())
    hung = result.cell("hang", "fake-crash")
    assert hung.status == "error" and hung.error == "timed out after 5 s (running)", hung.error
    assert result.cell("ok-b", "fake-crash").status == "ok", result.cell("ok-b", "fake-crash").error
    assert 5 <= elapsed < 60


def test_exception_becomes_the_cell_error(fakes):
    result, _ = run([small("raise"), small("ok-a")], ["fake-crash"])
    check_result_schema(result.to_dict())
    failed = result.cell("raise", "fake-crash")
    assert failed.status == "error" and failed.error == "RuntimeError: deliberate failure in build"
    assert result.cell("ok-a", "fake-crash").status == "ok"


def test_missing_framework_is_unsupported_without_a_worker(fakes, monkeypatch: pytest.MonkeyPatch):
    def no_worker(*args, **kwargs):
        raise AssertionError("a worker was started for a backend whose framework is missing")

    monkeypatch.setattr(local.LocalExecutor, "start", no_worker)
    result, _ = run([small("ok-a"), small("ok-b")], ["fake-missing"])
    check_result_schema(result.to_dict())
    for cell in result.cells:
        assert cell.status == "unsupported" and cell.error == MISSING_HINT
    assert backends.get("fake-missing").unavailable_reason() == MISSING_HINT


def test_conformance_skips_a_missing_framework(fakes):
    """The conftest's ``backend`` fixture skips (with the install hint), never passes, when a framework is missing."""
    with pytest.raises(pytest.skip.Exception, match=re.escape(f"backend fake-missing: {MISSING_HINT}")):
        ready_backend("fake-missing")


def test_missing_framework_in_the_table(fakes):
    result, _ = run([small("ok-a")], ["fake-missing"])
    assert f"unsupported: {MISSING_HINT}" in xfbench.table(result)


def test_broken_adapter_module_is_an_error_cell(fakes, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(backends.BACKENDS, "fake-broken", ("tests.no_such_module:Nothing", {}))
    result, _ = run([small("ok-a")], ["fake-broken", "fake-ref"])
    assert result.cell("ok-a", "fake-broken").status == "error"
    assert "cannot load the adapter" in result.cell("ok-a", "fake-broken").error
    assert result.cell("ok-a", "fake-ref").status == "ok"


def test_registered_name_wins(fakes, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XFBENCH_EXTRA_BACKENDS", os.environ["XFBENCH_EXTRA_BACKENDS"]
                       + ",fake-alias=tests.fake_backend:ReferenceBackend")
    monkeypatch.setitem(backends.BACKENDS, "fake-alias", ("tests.fake_backend:ReferenceBackend", {}))
    result, _ = run([small("ok-a")], ["fake-alias"])
    assert result.cell("ok-a", "fake-alias").status == "ok"


@pytest.mark.processes
def test_malformed_extra_backends_is_one_line():
    env = {**os.environ, "XFBENCH_EXTRA_BACKENDS": "no-equals-sign"}
    done = subprocess.run([sys.executable, "-m", "xfbench.cli", "run", "--backends", "torch"], capture_output=True,
                          text=True, timeout=120, cwd=REPO, env=env)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "xfbench: error: XFBENCH_EXTRA_BACKENDS entry 'no-equals-sign' must look like name=package.module:ClassName"]


def test_keras_missing_is_unsupported_with_the_keras_hint(monkeypatch: pytest.MonkeyPatch):
    """Without Keras, every keras-* backend says so with the extra to install (the native framework being there)."""
    import importlib.util

    from xfbench.backends.keras import KerasBackend

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "keras" else real(name, *a))
    for framework in ("jax", "tensorflow", "torch"):
        assert KerasBackend(framework).unavailable_reason() == "keras is not installed: pip install 'xfbench[keras]'"


@pytest.mark.frameworks
@pytest.mark.processes
def test_two_keras_backends_in_one_run_each_in_its_own_worker():
    """keras-jax and keras-torch in one run: each worker sets KERAS_BACKEND before importing Keras, so both run, on
    their own framework, and say so in their fingerprint and versions."""
    for name in ("keras-jax", "keras-torch"):
        reason = backends.get(name).unavailable_reason()
        if reason:
            pytest.skip(f"{name}: {reason}")
    result = xfbench.run(tasks="regression", backends=["keras-jax", "keras-torch"], threads=2, epochs=3,
                         timing=TimingOptions.quick())
    check_result_schema(result.to_dict())
    for framework in ("jax", "torch"):
        cell = result.cell("regression", f"keras-{framework}")
        assert cell.status == "ok", cell.error
        assert cell.fingerprint["keras_backend"] == framework and framework in cell.versions
        assert cell.fingerprint["mode"].endswith(f"on {framework}") and cell.metrics["r2"] > 0.9
