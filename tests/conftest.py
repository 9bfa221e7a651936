"""Shared fixtures: every registered backend as a parameter, frameworks set up in-process once per backend, and one
small real ``xfbench run`` shared by the CLI and schema tests; and the test tiers.

A backend whose framework is not installed is *skipped* with ``Backend.unavailable_reason()`` (never a silent pass).

Tiers: a test is marked by what it needs, from the fixtures it uses (:data:`FIXTURE_MARKS`) or, for the few that
start a process with no fixture, by an explicit mark: ``frameworks`` (TensorFlow, PyTorch, JAX or Keras, in this
process or in workers), ``processes`` (worker or CLI processes; the fake backends are NumPy only), ``cluster`` (a Ray
cluster), ``browser`` (headless Chromium), ``notebook`` (a Jupyter kernel), ``venvs`` (virtual environments built
for the test). The fast tier (``make test-fast``) is everything else, and it checks itself: there, starting a
process fails the test that did it, and importing a framework fails the session. ``serial``: its assertions rest on
measured time (the gate's verdicts), so it never runs beside another test; ``make test`` runs the clusters serially
too, everything else two at a time.
"""

from __future__ import annotations

import os

# before anything imports TensorFlow (its C++ logging reads this at import time)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from xfbench import backends
from xfbench.backends.base import Backend
from xfbench.tasks import SGD, Task, get_task

REPO = Path(__file__).resolve().parent.parent
THREADS = 2  # threads per framework for in-process tests (the CI machine has 2 cores)
ALL_BACKENDS = ("tf-graph", "tf-eager", "torch", "jax")  # the built-in four, in the CLI's default order

_ready: dict[str, Backend] = {}


def ready_backend(name: str) -> Backend:
    """The backend ``name`` with its framework imported and threads configured (once per process), or a skip
    naming why its framework is unavailable."""
    backend = backends.get(name)
    reason = backend.unavailable_reason()
    if reason:
        pytest.skip(f"backend {name}: {reason}")
    if name not in _ready:
        os.environ.update(backend.process_env())
        backend.configure_threads(THREADS)
        backend.setup(THREADS)
        _ready[name] = backend
    return _ready[name]


def in_process_backends() -> list[str]:
    """The backends the in-process tests run on here: ``$XFBENCH_TEST_BACKENDS`` (comma-separated) when set, else
    every registered backend that can share this process, i.e. needs no environment of its own before its
    framework's import (Keras' ``KERAS_BACKEND``). Those others are tested each in a pytest process of its own
    (``test_conformance.py::test_own_process_backend``), with ``$XFBENCH_TEST_BACKENDS`` naming them."""
    chosen = os.environ.get("XFBENCH_TEST_BACKENDS")
    if chosen:
        return [backends.check_name(name.strip()) for name in chosen.split(",") if name.strip()]
    return [name for name in backends.backend_names() if not backends.get(name).process_env()]


def own_process_backends() -> list[str]:
    """Registered backends that need a process of their own (an environment set before their framework's import)."""
    return [name for name in backends.backend_names() if backends.get(name).process_env()]


# Backends that are costly to test on every task: a slow compile (torch-compile: seconds to tens of seconds per model)
# or a process of their own (Keras). By default they run the in-process tests on QUICK_TASKS only (a dense, a
# convolutional and a linear model) and skip the per-model layout test of slow compilers (their eager sibling runs
# it); XFBENCH_TEST_FULL=1 runs everything on every backend (``make test-full``).
FULL = os.environ.get("XFBENCH_TEST_FULL") == "1"
QUICK_TASKS = ("regression", "mlp", "cnn")
# ...and the parity tests of the costly backends cover the modern layers too, on tiny sizes of the two tasks that
# hold them (a compile of each tiny model is what they add)
QUICK_PARITY_TASKS = (*QUICK_TASKS, "transformer", "resnet")

# The sizes of the modern built-in tasks in the tests. Training (conformance): small enough to train in seconds on
# every in-process backend, big enough to learn (measured on jax and tf-eager, identical metrics: transformer token
# accuracy 0.369 after 62 steps, char unigram ~0.18; resnet 0.43 after 104 steps, chance 0.10). Parity: tiny (one
# batch and 10 steps of every layer kind; the built-in defaults are measured by ``xfbench parity``, docs/parity.md).
TRAIN_SIZES: dict[str, dict[str, Any]] = {
    "transformer": {"seq_len": 16, "width": 32, "num_sequences": 600, "batch_size": 16, "learning_rate": 0.01},
    "resnet": {"filters": 8, "num_samples": 2000},
}
PARITY_SIZES: dict[str, dict[str, Any]] = {
    "transformer": {"seq_len": 8, "width": 16, "heads": 2, "num_sequences": 60, "batch_size": 8},
    # SGD here: Adam's step m/sqrt(v) is a full learning-rate step whatever the gradient's size, so where a BatchNorm
    # beta's true gradient is near zero (a BatchNorm feeding another's input, at initialization) it turns float32
    # rounding noise into parameter movement: at this size after 10 Adam steps the betas sit 2e-3 (tf) and 1.5e-2
    # (torch, tf; 240 samples) from float64 while 3 float32 references sit within 3e-5 (docs/parity.md). The
    # default resnet's Adam is judged by `xfbench parity` (all 9 backends pass) and Adam's formula here by the others.
    "resnet": {"filters": 4, "num_samples": 120, "batch_size": 16, "optimizer": SGD(0.05, momentum=0.9)},
}


def sized_task(name: str, sizes: dict[str, dict[str, Any]]) -> Task:
    """A built-in task at the tests' size for it (the defaults where none is given; ``optimizer`` replaces the
    task's)."""
    size = dict(sizes.get(name, {}))
    optimizer = size.pop("optimizer", None)
    task = get_task(name, **size)
    return task if optimizer is None else dataclasses.replace(task, optimizer=optimizer)


def costly(name: str) -> bool:
    backend = backends.get(name)
    return backend.slow_compile or bool(backend.process_env())


# fixture -> the tiers a test using it (directly or through another fixture) belongs to
FIXTURE_MARKS = {
    "backend": ("frameworks",), "torch_backend": ("frameworks",),
    "fakes": ("processes",), "cli": ("processes",),
    "regression_run": ("frameworks", "processes"),
    "cluster_run": ("cluster", "processes"),
    # the gate's end-to-end verdicts rest on timing: serial
    "ab_env": ("venvs", "processes", "serial"), "pre_move_env": ("venvs", "processes", "serial"),
    "chromium": ("browser",),
    # tests/test_parity.py's: real frameworks, in this process or in workers
    "wrong_flatten_cli": ("frameworks", "processes"), "nonsquare_parity": ("frameworks",),
    "seeded_run": ("frameworks", "processes"),
}
TIERS = ("frameworks", "processes", "cluster", "browser", "notebook", "venvs")
FAST = os.environ.get("XFBENCH_TEST_TIER") == "fast"
PROVENANCE = ("git", "uname")  # what a result runs to record its commit and machine: allowed in the fast tier


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            for mark in FIXTURE_MARKS.get(fixture, ()):
                item.add_marker(mark)
    if FULL:
        return
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        name = params.get("backend")
        if not isinstance(name, str) or name not in backends.BACKENDS or not costly(name):
            continue
        task = params.get("task_name")
        quick = QUICK_PARITY_TASKS if item.module.__name__.endswith("test_parity") else QUICK_TASKS  # type: ignore[union-attr]
        if task is not None and task not in quick:
            item.add_marker(pytest.mark.skip(reason=f"{name} on {task}: XFBENCH_TEST_FULL=1 (make test-full) runs it"))
        elif "model" in params and backends.get(name).slow_compile:
            item.add_marker(pytest.mark.skip(reason=f"{name}: one compile per model; its eager sibling runs the layout "
                                                    "test, XFBENCH_TEST_FULL=1 (make test-full) runs it here"))


@pytest.hookimpl(trylast=True)  # after the tests' own parametrize marks, so ids read ``test_trains[mlp-torch]``
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", in_process_backends(), indirect=True, scope="session")


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each registered backend (parametrized by ``pytest_generate_tests``), set up in this process."""
    return ready_backend(request.param)


FRAMEWORKS = ("torch", "tensorflow", "jax", "keras")


@pytest.fixture(autouse=True)
def _fast_tier_starts_no_process(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Any:
    """The fast tier's promise, checked per test: a test that starts a process fails, naming the fix (a marking
    fixture or mark), and so does one after which a framework is imported (each xdist worker checks its own tests:
    a check at the session's end would run only in the controller). ``git`` and ``uname`` are allowed: a result
    records the commit and the machine it was made on (milliseconds)."""
    if not FAST or any(request.node.get_closest_marker(tier) for tier in TIERS):
        yield
        return
    start = subprocess.Popen.__init__

    def refuse(self: subprocess.Popen, args: Any, *rest: Any, **kwargs: Any) -> None:
        if os.path.basename(str(args[0] if isinstance(args, (list, tuple)) else args).split()[0]) not in PROVENANCE:
            raise RuntimeError(f"{request.node.nodeid} starts a process in the fast tier: use a fixture that "
                               "marks it (tests/conftest.py FIXTURE_MARKS) or mark it @pytest.mark.processes")
        start(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    before = {name for name in FRAMEWORKS if name in sys.modules}
    yield
    loaded = sorted(name for name in FRAMEWORKS if name in sys.modules and name not in before)
    if loaded:
        pytest.fail(f"{request.node.nodeid} imports {', '.join(loaded)} in the fast tier: mark it "
                    "@pytest.mark.frameworks (or use a fixture that does)", pytrace=False)


@pytest.fixture(scope="session")
def torch_backend() -> Backend:
    """PyTorch, the channels-first adapter (the one whose layouts need converting)."""
    return ready_backend("torch")


# ------------------------------------------------------------------------------------ fake backends
FAKES = {
    "fake-ref": "tests.fake_backend:ReferenceBackend",
    "fake-crash": "tests.fake_backend:CrashingBackend",
    "fake-missing": "tests.fake_backend:MissingBackend",
    "fake-scratch": "tests.fake_backend:ScratchBackend",
}


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register the fake backends (tests/fake_backend.py) here and, through the environment, in every worker."""
    monkeypatch.setenv("XFBENCH_EXTRA_BACKENDS", ",".join(f"{name}={target}" for name, target in FAKES.items()))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    for name, target in FAKES.items():
        monkeypatch.setitem(backends.BACKENDS, name, (target, {}))


def small(name: str) -> Task:
    """A small regression task (one Dense unit, 200 samples, 3 epochs) under another name."""
    return get_task("regression", num_samples=200, epochs=3).replace(name=name)


# ------------------------------------------------------------------------------------ one small real run
@dataclass(frozen=True)
class CliRun:
    """A finished ``python -m xfbench.cli ...`` subprocess."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    json_path: Path
    temp: Path | None = None  # the run's TMPDIR

    def document(self) -> dict[str, Any]:
        return json.loads(self.json_path.read_text(encoding="utf-8"))


@pytest.fixture
def cli() -> Any:
    """:func:`run_cli`, for a test that runs the command line (it marks the test ``processes``)."""
    return run_cli


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, or a skip naming how to install it (CI installs it: .ci/run)."""
    import shutil

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    return path


def run_cli(*args: str, timeout: float = 300, **variables: str) -> subprocess.CompletedProcess[str]:
    """``python -m xfbench.cli ARGS`` in a subprocess, from the repository root, with only the built-in backends
    (and the environment ``variables`` given)."""
    env = {key: value for key, value in os.environ.items() if key != "XFBENCH_EXTRA_BACKENDS"} | variables
    return subprocess.run([sys.executable, "-m", "xfbench.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)


@pytest.fixture(scope="session")
def regression_run(tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    """``xfbench run --tasks regression --backends <all four> --epochs 5 --rounds 4 --processes 2 --json PATH``, run
    once per session: the CLI end-to-end test and the schema test both read it."""
    path = tmp_path_factory.mktemp("run") / "sub" / "regression.json"  # a missing parent folder: save() creates it
    temp = tmp_path_factory.mktemp("tmpdir")  # the run's and its workers' temporary folder, checked empty after
    args = ["run", "--tasks", "regression", "--backends", ",".join(ALL_BACKENDS), "--epochs", "5", "--threads",
            str(THREADS), "--rounds", "4", "--processes", "2", "--json", str(path)]
    done = run_cli(*args, TMPDIR=str(temp))
    return CliRun(args, done.returncode, done.stdout, done.stderr, path, temp)
