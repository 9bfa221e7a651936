"""Bad input and faults, as a new user meets them: every class gets one clear line (or a clear status), nothing
finished is lost, nothing outlives the run.

Classes (the README's table lists them with what each gets):
1. a Task, Dataset, layer or optimizer that cannot work -> ``XfbenchError`` at construction, before any framework;
2. wrong argument types to the Python API -> ``XfbenchError``;
3. a loss that becomes NaN or infinite -> the cell is ``diverged`` with the epoch and step (real frameworks);
4. names that would lie (an extra backend under a built-in name, an unknown table format) -> refused;
5. malformed, truncated or hostile result files -> one line from ``load`` and ``xfbench report``;
6. a full disk, a reader polling during saves, a closed stdout -> the previous file intact, never half a file,
   the result file written;
7. a stopped (SIGSTOP) worker when the run is ended by SIGTERM or ``kill -9`` -> no process left; a temporary
   folder left by ``kill -9`` -> removed by the next run;
8. generated tasks (hypothesis): raise ``XfbenchError`` or train to ok / diverged on every installed backend;
   generated command lines: a plan or one line with exit code 2.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import xfbench
from tests.conftest import REPO, run_cli, small
from tests.test_api import loaded_frameworks
from tests.test_interleaved import alive, gone_within, wait_for_cells, worker_pids
from xfbench.compare.engine.loop import DivergedError, train_cell
from xfbench.compare.platforms.local import FOLDER_PREFIX, LocalExecutor
from xfbench.compare.protocol import TimingOptions
from xfbench.compare.results.files import write_atomic
from xfbench.compare.results.result import Result
from xfbench.errors import XfbenchError
from xfbench.tasks import SGD, Adam, Conv2D, Dataset, Dense, MaxPool2D, Task, get_task

RNG = np.random.default_rng(0)
X = RNG.random((40, 4), dtype=np.float32)
LABELS = RNG.integers(0, 3, 40)


def data(x=X, y=LABELS) -> Dataset:
    return Dataset.split(x, y, test_fraction=0.25, seed=0)


def task(**changes) -> Task:
    values = {"name": "t", "data": data(), "layers": (Dense(8, "relu"), Dense(3)), "loss": "softmax_cross_entropy",
              "optimizer": Adam(), "batch_size": 10, "epochs": 2, **changes}
    return Task(**values)


# ------------------------------------------------------------------------------------ 1. construction
BAD_SPECS = [
    (lambda: Dense(True), "Dense units must be a positive int, got True"),
    (lambda: Dense(0), "Dense units must be a positive int, got 0"),
    (lambda: Dense(2.5), "Dense units must be a positive int, got 2.5"),
    (lambda: Conv2D(8, kernel_size=0), "Conv2D kernel_size must be a positive int or a pair of them, got 0"),
    (lambda: Conv2D(8, kernel_size="3"), "Conv2D kernel_size must be a positive int or a pair of them, got '3'"),
    (lambda: MaxPool2D(True), "MaxPool2D pool_size must be a positive int or a pair of them, got True"),
    (lambda: Dense(4, activation="swish"),
     "unknown activation 'swish'; choose one of: linear, relu, sigmoid, tanh, gelu, gelu_tanh"),
    (lambda: SGD(-0.1), "SGD learning_rate must be a finite number in (0, inf), got -0.1"),
    (lambda: SGD(math.inf), "SGD learning_rate must be a finite number in (0, inf), got inf"),
    (lambda: SGD(math.nan), "SGD learning_rate must be a finite number in (0, inf), got nan"),
    (lambda: SGD(0.1, momentum=1.0), "SGD momentum must be a finite number in [0, 1), got 1.0"),
    (lambda: Adam(beta2=1.5), "Adam beta2 must be a finite number in [0, 1), got 1.5"),
    (lambda: Adam(epsilon=0), "Adam epsilon must be a finite number in (0, inf), got 0"),
    (lambda: Adam(learning_rate="fast"), "Adam learning_rate must be a finite number in (0, inf), got 'fast'"),
    (lambda: Dataset(X, LABELS[:-1], X, LABELS), "Dataset x_train and y_train have different lengths: 40 vs 39"),
    (lambda: Dataset.split(X, LABELS[:-3]), "x and y have different lengths: 40 vs 37"),
    (lambda: data(x=np.where(X > 0.9, np.nan, X)), "Dataset.x_train holds "),
    (lambda: task(loss="mse", layers=(Dense(1),), data=data(y=np.full((40, 1), np.inf, np.float32))),
     "Dataset.y_train holds 30 NaN or infinite values; every value must be finite"),
    (lambda: Dataset(X, LABELS, X[:0], LABELS[:0]), "Dataset test split is empty; it needs at least one sample"),
    (lambda: Dataset.split(X[:1], LABELS[:1]), "Dataset.split needs at least 2 samples (one for each split), got 1"),
    (lambda: Dataset.split(X, LABELS, test_fraction=1.0), "test_fraction must be a finite number in (0, 1), got 1.0"),
    (lambda: Dataset.split(X, LABELS, seed=-1), "Dataset.split seed must be an int >= 0, got -1"),
    (lambda: Dataset([[1.0]], [1], [[1.0]], [1]), "Dataset.x_train must be a NumPy array, got list"),
    (lambda: task(data=data(x=X.astype(np.float64))), "inputs must be float32 arrays"),
    (lambda: task(data=data(x=np.zeros((40, 0), np.float32))), "each input sample needs a shape with no empty axis"),
    (lambda: task(data=data(y=LABELS + 5)), "labels must be in [0, 3) for a model with 3 outputs"),
    (lambda: task(data=data(y=LABELS.astype(np.float32))), "softmax_cross_entropy needs integer class labels"),
    (lambda: task(batch_size=31), "batch_size must be an int in [1, 30] (the training set size), got 31"),
    (lambda: task(batch_size=True), "batch_size must be an int in [1, 30] (the training set size), got True"),
    (lambda: task(epochs=0), "epochs must be a positive int, got 0"),
    (lambda: task(seed=-3), "Task seed must be an int >= 0, got -3"),
    (lambda: task(name=""), "Task name must be a non-empty string without surrounding spaces, got ''"),
    (lambda: task(name="a,b"), "Task name 'a,b' must not contain a comma"),
    (lambda: task(layers=(Conv2D(4),)), "layer 0 (Conv2D) needs (height, width, channels) inputs but gets shape (4,)"),
    (lambda: task(metrics="accuracy"), "Task metrics must be a tuple of names, e.g. ('accuracy',), got a string"),
    (lambda: task(target=math.nan), "target must be a finite number (the test metric to reach) or None, got nan"),
    (lambda: get_task("regression", num_samples=-5), "regression num_samples must be a positive int, got -5"),
    (lambda: get_task("regression", noise=-1.0), "regression noise must be a finite number in [0, inf), got -1.0"),
    (lambda: get_task("regression", num_features=0), "regression num_features must be a positive int, got 0"),
    (lambda: get_task("mlp", seed=-1), "mlp seed must be an int >= 0, got -1"),
    (lambda: get_task("mlp", width=True), "mlp width must be a positive int, got True"),
    (lambda: get_task("cnn28", num_samples=5), "cnn28 num_samples must be at least 12 (a 1/6 test split), got 5"),
    (lambda: get_task("mlp", depth=3), "bad parameters for task 'mlp': "),
]


@pytest.mark.parametrize(("build", "message"), BAD_SPECS, ids=[f"spec-{i}" for i in range(len(BAD_SPECS))])
def test_bad_specs_fail_at_construction(build, message: str):
    with pytest.raises(XfbenchError) as caught:
        build()
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.processes
def test_a_bad_task_fails_before_any_framework_is_imported():
    code = textwrap.dedent("""
        import numpy as np, xfbench
        from xfbench.tasks import Dataset
        try:
            xfbench.run(tasks=[Dataset(np.zeros((4, 2), np.float32), np.zeros(3, np.int64),
                                       np.zeros((2, 2), np.float32), np.zeros(2, np.int64))])
        except xfbench.XfbenchError as error:
            print("refused:", error)
    """)
    assert loaded_frameworks(code) == []


# --------------------------------------------------------------------------------------- 2. API types
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"tasks": 123}, "expected a comma-separated string or a list of names, got int 123"),
    ({"tasks": [1.5]}, "expected names (strings) or xfbench.tasks.Task objects, got float 1.5"),
    ({"backends": {"torch": 1}}, "expected a comma-separated string or a list of names, got dict {'torch': 1}"),
    ({"threads": "2"}, "--threads must be a positive integer, got '2'"),
    ({"seeds": 1.5}, "--seeds must be a positive integer, got 1.5"),
    ({"timeout": -1}, "--timeout must be a positive number, got -1"),
    ({"target": "high"}, "--target must be a finite number (e.g. 0.95 accuracy), got 'high'"),
    ({"output": ""}, "the output path is empty; give a file name, e.g. --json results/run.json"),
])
def test_api_argument_types(kwargs, message: str):
    with pytest.raises(XfbenchError) as caught:
        xfbench.run(**{"tasks": "regression", **kwargs})
    assert str(caught.value) == message


# ----------------------------------------------------------------------------------------- 3. diverged
# 10 steps an epoch at a learning rate of a million: float32 overflows within the first epoch, float64 a few later
DIVERGING = get_task("regression", num_samples=200, epochs=60, batch_size=16).replace(name="diverging",
                                                                                     optimizer=SGD(1e6, 0.9))


def test_diverging_training_is_its_own_status_on_every_backend(backend):
    """A learning rate far too large overflows the loss on every framework: DivergedError names where."""
    with pytest.raises(DivergedError) as caught:
        train_cell(backend, DIVERGING, "cpu")
    message = str(caught.value)
    assert re.fullmatch(r"the training loss became (nan|inf|-inf) at epoch \d+, step \d+ of 10 \(loss before: .+\)",
                        message), message


def test_a_diverged_cell_is_reported_not_timed_and_fails_the_run(fakes, tmp_path):
    path = tmp_path / "run.json"
    result = xfbench.run(tasks=[DIVERGING, small("fine")], backends=["fake-ref"], threads=1,
                         timing=TimingOptions.quick(), output=str(path))
    cell = result.cell("diverging", "fake-ref")
    assert cell.status == "diverged" and not cell.ok and cell.error.startswith("the training loss became ")
    assert cell.timing.turns == [] and cell.timing.step_ms is None  # nothing meaningful to time
    assert result.cell("fine", "fake-ref").ok
    assert "diverged: the training loss became" in xfbench.table(result)
    assert xfbench.load(str(path)).cell("diverging", "fake-ref").status == "diverged"
    assert [c.task for c in result.comparisons] == ["fine"]


# ------------------------------------------------------------------------------------------- 4. names
@pytest.mark.processes
def test_an_extra_backend_cannot_take_a_built_in_name():
    env = {**os.environ, "XFBENCH_EXTRA_BACKENDS": "torch=xfbench.backends.jax:JaxBackend"}
    done = subprocess.run([sys.executable, "-m", "xfbench", "list"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == ("xfbench: error: XFBENCH_EXTRA_BACKENDS cannot replace the built-in backend "
                                   "'torch'; give your adapter another name (built in: jax, keras-jax, keras-tensorflow, "
                                   "keras-torch, tf-eager, tf-graph, tf-xla, torch, torch-compile)")


def test_every_cell_records_the_adapter_it_ran(fakes):
    result = xfbench.run(tasks=[small("a")], backends=["fake-ref"], threads=1, timing=TimingOptions.quick())
    assert result.cell("a", "fake-ref").fingerprint["adapter"] == "tests.fake_backend:ReferenceBackend"


@pytest.mark.processes
def test_unknown_table_format_is_refused():
    with pytest.raises(XfbenchError, match=r"^unknown table format 'fancy'; choose one of: .*github"):
        xfbench.table(Result(), "fancy")
    done = run_cli("run", "--format", "fancy")
    assert done.returncode == 2 and done.stderr.startswith("xfbench: error: unknown table format 'fancy'; choose one of")


# -------------------------------------------------------------------------------- 5. hostile result files
def valid_document() -> dict:
    return json.loads(Result(config={"tasks": ["t"]}).to_json())


HOSTILE_FILES = [
    ("[]", "a result is a JSON object, got list"),
    ('{"schema_version": 4, "cells": "abc"}', "malformed result: cells must be a list, got 'abc'"),
    ('{"schema_version": 4, "cells": [1]}', "malformed result: cells[0] must be an object, got 1"),
    ('{"schema_version": 4, "cells": [{"task": 1}]}', "malformed result: cells[0].task must be a non-empty string"),
    ('{"schema_version": 4, "cells": [{"task": "t", "backend": "b", "status": "pwned", "device": {"kind": "cpu"}}]}',
     "malformed result: cells[0].status must be one of ok, diverged, unsupported, error, got 'pwned'"),
    ('{"schema_version": 4, "cells": [{"task": "t", "backend": "b", "status": "ok", "device": {"kind": "cpu"}, '
     '"timing": {"step_ms": {"median": "fast"}}}]}', "malformed result: cells[0].timing.step_ms.median must be a "
                                                     "number or null, got 'fast'"),
    ('{"schema_version": 4, "cells": [{"task": "t", "backend": "b", "status": "ok", "device": {"kind": "cpu"}, '
     '"timing": {"turns": [{"block_ms": []}]}}]}', "malformed result: cells[0].timing.turns[0].block_ms must be a "
                                                   "list of positive numbers"),
    ('{"schema_version": 1, "cells": [3]}', "malformed result: cells must be a list of objects"),
    ('{"schema_version": "__import__(\'os\')"}', "result schema_version \"__import__('os')\" is not one this"),
    ('{"schema_version": 4, "comparisons": [{"task": 1}]}', "malformed result: comparisons[0].task must be a string"),
    ("\x80\x81 not text", "cannot read"),
    ('{"schema_version": 4, "cells": [', "is not a JSON result: Expecting value"),
]


@pytest.mark.processes
@pytest.mark.parametrize(("text", "message"), HOSTILE_FILES, ids=[f"file-{i}" for i in range(len(HOSTILE_FILES))])
def test_malformed_result_files_are_one_line(tmp_path, text: str, message: str):
    path = tmp_path / "result.json"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(XfbenchError) as caught:
        xfbench.load(str(path))
    assert message in str(caught.value) and "\n" not in str(caught.value), str(caught.value)
    done = run_cli("report", str(path))
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr


def test_a_truncated_partial_file_keeps_its_whole_lines(fakes, tmp_path):
    path = tmp_path / "run.json"
    xfbench.run(tasks=[small("a"), small("b")], backends=["fake-ref"], threads=1, timing=TimingOptions.quick(),
                output=str(path))
    lines = [json.dumps({"kind": "header", **{k: v for k, v in json.loads(path.read_text()).items()
                                              if k not in ("cells", "comparisons")}})]
    cells = json.loads(path.read_text())["cells"]
    lines += [json.dumps({"kind": "cell", "cell": cell}) for cell in cells]
    partial = tmp_path / "run.json.partial"
    partial.write_text("\n".join(lines)[:-40])  # the last cell cut mid-write
    loaded = xfbench.load(str(partial))
    assert [cell.task for cell in loaded.cells] == ["a"] and loaded.complete is False


# ------------------------------------------------------------------------------------------ 6. writes
def _mount_tmpfs(folder: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    return done.returncode == 0


@pytest.mark.processes
def test_a_full_disk_keeps_the_previous_result(tmp_path):
    """On a 256 KiB tmpfs: a valid result saved, the disk filled, a bigger save fails with ENOSPC and leaves the
    previous file whole and no temporary file behind; the CLI says so in one line."""
    folder = tmp_path / "small"
    folder.mkdir()
    if not _mount_tmpfs(folder, "256k"):
        pytest.skip("needs root and tmpfs to make a small full file system")
    try:
        target = folder / "result.json"
        first = Result(config={"tasks": ["t"], "note": "first"})
        first.save(target)
        before = target.read_bytes()
        filler = folder / "filler"
        descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(descriptor, b"\0" * 4096)
        except OSError:
            pass
        finally:
            os.close(descriptor)
        big = Result(config={"tasks": ["t"], "note": "x" * 200_000})
        with pytest.raises(OSError) as caught:
            big.save(target)
        assert caught.value.errno == 28  # ENOSPC
        assert target.read_bytes() == before and xfbench.load(str(target)).config["note"] == "first"
        assert sorted(path.name for path in folder.iterdir()) == ["filler", "result.json"]
        code = textwrap.dedent(f"""
            import sys
            from xfbench.cli import main
            from xfbench.compare.results.result import Result
            import xfbench.compare.session as session

            def execute(plan, progress=None, output=None, **kwargs):  # the run's work, without training
                result = Result(config={{"note": "x" * 200_000}})
                result.save(output)
                return result

            session.execute = execute
            sys.exit(main(["run", "--tasks", "regression", "--json", {str(folder / 'cli.json')!r}, "--quiet"]))
        """)
        done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, done.stderr
        (line,) = done.stderr.splitlines()
        assert line.startswith("xfbench: error: No space left on device: "), line
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_a_reader_never_sees_half_a_file(tmp_path):
    """One thread saves results of changing size 200 times; another parses the file the whole time."""
    target = tmp_path / "result.json"
    Result().save(target)
    stop = threading.Event()
    failures: list[str] = []
    reads = 0

    def read() -> None:
        nonlocal reads
        while not stop.is_set():
            try:
                json.loads(target.read_text(encoding="utf-8"))
                reads += 1
            except (json.JSONDecodeError, FileNotFoundError) as error:
                failures.append(repr(error))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for index in range(200):
            write_atomic(target, json.dumps({"index": index, "pad": "x" * (index * 997 % 50_000)}))
    finally:
        stop.set()
        reader.join()
    assert failures == [] and reads > 0


def test_a_closed_stdout_does_not_cost_the_result(fakes, tmp_path):
    path = tmp_path / "run.json"
    command = (f"{sys.executable} -m xfbench run --tasks regression,mlp --backends fake-ref --epochs 2 --rounds 3 "
               f"--processes 1 --threads 1 --json {path} --quiet | head -c 10")
    done = subprocess.run(["sh", "-c", command], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Broken pipe" not in done.stderr
    assert [cell.status for cell in xfbench.load(str(path)).cells] == ["ok", "ok"]


# ------------------------------------------------------------------------------------------- 7. processes
API_RUN = """
import sys, xfbench
from tests.conftest import small
from xfbench.compare.protocol import TimingOptions
xfbench.run(tasks=[small("ok-a"), small("slow")], backends=["fake-ref", "fake-crash"], threads=1,
            timing=TimingOptions.quick(rounds=4, processes=2), output=sys.argv[1])
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_worker_does_not_outlive_the_run(fakes, tmp_path, signum):
    """One worker frozen with SIGSTOP, then the parent ended by SIGTERM or kill -9: every worker is gone within two
    seconds, the stopped one included (killed, not waited for)."""
    path = tmp_path / "run.json"
    env = {**os.environ, "XFBENCH_FAKE_HANG_TASK": "slow"}
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(API_RUN), str(path)], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pids = worker_pids(wait_for_cells(path, 2, process))
        frozen = sorted(pids)[0]
        os.kill(frozen, signal.SIGSTOP)
        time.sleep(0.3)
        process.send_signal(signum)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert gone_within(pids, 2.0), [pid for pid in pids if alive(pid)]


@pytest.mark.processes
def test_a_temporary_folder_left_by_kill_9_is_swept(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"{FOLDER_PREFIX}{dead.stdout.strip()}-abc"
    stale.mkdir()
    (stale / "worker.log").write_text("left behind")
    mine = tmp_path / f"{FOLDER_PREFIX}{os.getpid()}-live"
    mine.mkdir()
    with LocalExecutor() as executor:
        assert Path(executor.folder).parent == tmp_path
        assert not stale.exists() and mine.exists()  # a live run's folder is left alone
    assert not Path(executor.folder).exists()
