"""The Python API without frameworks: import hygiene, plan and task validation, the Result JSON round trip."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

import xfbench
from xfbench.compare.plan import make_plan
from xfbench.compare.protocol import TimingOptions
from xfbench.compare.results.cell import Cell, Memory, StepStats, Timing
from xfbench.compare.results.result import Result
from xfbench.compare.results.schema import SCHEMA_VERSION
from xfbench.errors import XfbenchError
from xfbench.tasks import SGD, Activation, Adam, AvgPool2D, Conv2D, Dataset, Dense, Flatten, MaxPool2D, Task, get_task

FRAMEWORKS = "{'torch', 'tensorflow', 'jax', 'jaxlib'}"
LOADED_FRAMEWORKS = f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS}))"


def loaded_frameworks(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter; the framework modules it left in ``sys.modules``."""
    done = subprocess.run([sys.executable, "-c", f"import sys\n{code}\n{LOADED_FRAMEWORKS}"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1].replace("'", '"'))


@pytest.mark.processes
def test_import_loads_no_framework():
    assert loaded_frameworks("import xfbench, xfbench.cli, xfbench.compare.runner, xfbench.reports.table") == []


@pytest.mark.processes
def test_the_probe_can_fail():
    """The probe sees a framework module when there is one (a stand-in here, so no framework is needed)."""
    code = "import types\nsys.modules['jaxlib.xla_client'] = types.ModuleType('jaxlib.xla_client')"
    assert loaded_frameworks(code) == ["jaxlib.xla_client"]


@pytest.mark.processes
def test_everything_short_of_setup_loads_no_framework():
    """Every xfbench module, the parser, and every adapter (``backends.get`` + ``unavailable_reason``) import no
    framework: that happens only in ``Backend.setup``, inside a worker."""
    code = """
import xfbench, xfbench.cli, xfbench.compare.runner, xfbench.compare.worker, xfbench.compare.engine.server
import xfbench.compare.engine.loop, xfbench.compare.engine.parity, xfbench.compare.stats.parity, xfbench.compare.ab
import xfbench.compare.session, xfbench.reports.table, xfbench.reports.parity, xfbench.tasks.reference
from xfbench import backends
from xfbench.compare.plan import make_plan
xfbench.cli.build_parser().parse_args(["run", "--backends", "torch"])
make_plan("regression,mlp,cnn", "tf-graph,tf-eager,torch,jax")
for name in backends.backend_names():
    backends.get(name).unavailable_reason()
"""
    assert loaded_frameworks(code) == []


# ------------------------------------------------------------------------------------------ plan validation
TASK_CHOICES = "choose one of: cnn, cnn28, mlp, mlp-binary, regression, resnet, transformer"
BACKEND_CHOICES = "choose one of: jax, keras-jax, keras-tensorflow, keras-torch, tf-eager, tf-graph, tf-xla, torch, torch-compile"


@pytest.mark.parametrize(("kwargs", "message"), [
    pytest.param({"tasks": "nope"}, f"unknown task 'nope'; {TASK_CHOICES}", id="task"),
    pytest.param({"tasks": "mlp,nope"}, f"unknown task 'nope'; {TASK_CHOICES}", id="second-task"),
    pytest.param({"backends_": "pytorch"}, f"unknown backend 'pytorch'; {BACKEND_CHOICES}", id="backend"),
    pytest.param({"backends_": ["torch", "tensorflow"]}, f"unknown backend 'tensorflow'; {BACKEND_CHOICES}",
                 id="backend-list"),
    pytest.param({"devices": "tpu"}, "unknown device 'tpu'; choose one of: cpu, gpu", id="device"),
])
def test_unknown_names(kwargs: dict, message: str):
    with pytest.raises(XfbenchError) as caught:
        make_plan(**kwargs)
    assert str(caught.value) == message


@pytest.mark.parametrize(("name", "value"), [
    ("threads", 0), ("threads", -2), ("threads", 1.5), ("threads", "2"), ("threads", True),
    ("epochs", 0), ("epochs", 2.5), ("epochs", "3"),
    ("timeout", 0), ("timeout", -1.0), ("timeout", "10"),
    ("timeout", math.nan), ("timeout", math.inf),
    ("seeds", 0), ("seeds", 1.5), ("seeds", None),
])
def test_bad_numbers(name: str, value: object):
    with pytest.raises(XfbenchError, match=f"--{name} must be a positive"):
        make_plan("regression", "torch", **{name: value})


def test_good_plan():
    plan = make_plan("regression, mlp", ["torch", "jax", "torch"], "cpu", threads=2.0, epochs=3, timeout=5, seeds=2)
    assert [task.name for task in plan.tasks] == ["regression", "mlp"]
    assert [task.epochs for task in plan.tasks] == [3, 3]
    assert plan.backends == ["torch", "jax"]  # duplicates dropped, order kept
    assert (plan.devices, plan.threads, plan.timeout, plan.seeds, plan.num_cells) == (["cpu"], 2, 5.0, 2, 4)
    assert isinstance(plan.threads, int) and isinstance(plan.timeout, float)
    config = plan.describe()
    assert config["epochs"] == {"regression": 3, "mlp": 3} and config["backends"] == ["torch", "jax"]


def test_duplicate_task_names():
    with pytest.raises(XfbenchError, match="unique"):
        make_plan(["mlp", get_task("regression").replace(name="mlp")], "torch")


def test_run_validates_before_starting_anything():
    with pytest.raises(XfbenchError, match="unknown backend 'pytorch'"):
        xfbench.run(tasks="regression", backends="pytorch")
    with pytest.raises(XfbenchError, match="unknown task"):
        xfbench.run(tasks="nope", backends="torch")


def test_bad_task_parameters():
    with pytest.raises(XfbenchError, match="bad parameters for task 'mlp'"):
        get_task("mlp", depth=3)
    with pytest.raises(XfbenchError, match="digit must be 0-9"):
        get_task("mlp-binary", digit=10)


# ------------------------------------------------------------------------------------------ task validation
def small_data(n: int = 12, features: int = 4, y=None, x_dtype="float32") -> Dataset:
    x = np.random.default_rng(0).normal(size=(n, features)).astype(x_dtype)
    y = np.arange(n) % 3 if y is None else y
    return Dataset(x[:8], y[:8], x[8:], y[8:])


def small_task(**changes) -> Task:
    fields = {"name": "t", "data": small_data(), "layers": (Dense(3),), "loss": "softmax_cross_entropy",
              "optimizer": SGD(0.1), "batch_size": 4, "epochs": 1}
    fields.update(changes)
    return Task(**fields)


def test_small_task_is_valid():
    task = small_task()
    assert task.shapes == ((4,), (3,)) and task.steps_per_epoch == 2


@pytest.mark.parametrize(("make", "match"), [
    pytest.param(lambda: Dense(0), "Dense units must be a positive int", id="dense-units"),
    pytest.param(lambda: Dense(3.0), "Dense units must be a positive int", id="dense-float-units"),
    pytest.param(lambda: Dense(3, activation="swish"), "unknown activation 'swish'; choose one of: linear, relu",
                 id="activation"),
    pytest.param(lambda: Dense(3, init="zeros"), "unknown initializer 'zeros'", id="initializer"),
    pytest.param(lambda: Conv2D(0), "Conv2D filters", id="conv-filters"),
    pytest.param(lambda: Conv2D(4, kernel_size=0), "Conv2D kernel_size", id="conv-kernel"),
    pytest.param(lambda: Conv2D(4, kernel_size=(3, 3, 3)), "Conv2D kernel_size", id="conv-kernel-3d"),
    pytest.param(lambda: Conv2D(4, strides=(1, -1)), "Conv2D strides", id="conv-strides"),
    pytest.param(lambda: Conv2D(4, padding="full"), "unknown padding 'full'; choose one of: valid, same",
                 id="conv-padding"),
    pytest.param(lambda: MaxPool2D(0), "MaxPool2D pool_size", id="maxpool"),
    pytest.param(lambda: AvgPool2D(2, strides=(2,)), "AvgPool2D strides", id="avgpool-strides"),
    pytest.param(lambda: Activation("softmax"), "unknown activation 'softmax'", id="standalone-activation"),
    pytest.param(lambda: SGD(0.0), "SGD learning_rate", id="sgd-lr"),
    pytest.param(lambda: SGD(0.1, momentum=1.0), "SGD momentum", id="sgd-momentum"),
    pytest.param(lambda: Adam(learning_rate=-1), "Adam learning_rate", id="adam-lr"),
    pytest.param(lambda: Adam(beta2=1.0), "Adam beta2", id="adam-beta2"),
    pytest.param(lambda: Adam(epsilon=0.0), "Adam epsilon", id="adam-epsilon"),
    pytest.param(lambda: small_task(loss="hinge"), "unknown loss 'hinge'", id="loss"),
    pytest.param(lambda: small_task(metrics=("f1",)), "unknown metric 'f1'", id="metric"),
    pytest.param(lambda: small_task(optimizer="adam"), "optimizer must be", id="optimizer"),
    pytest.param(lambda: small_task(epochs=0), "epochs must be a positive int", id="epochs"),
    pytest.param(lambda: small_task(batch_size=9), r"batch_size must be an int in \[1, 8\]", id="batch-size"),
    pytest.param(lambda: small_task(layers=()), "at least one layer", id="no-layers"),
    pytest.param(lambda: small_task(layers=(Conv2D(2), Flatten(), Dense(3))), "needs \\(height, width, channels\\)",
                 id="conv-on-vectors"),
    pytest.param(lambda: small_task(data=Dataset(np.zeros((8, 4, 4, 1), "float32"), np.arange(8) % 3,
                                                 np.zeros((4, 4, 4, 1), "float32"), np.arange(4) % 3),
                                    layers=(Conv2D(2), Dense(3))), "put Flatten\\(\\) before it", id="dense-on-images"),
    pytest.param(lambda: small_task(data=Dataset(np.zeros((8, 3, 3, 1), "float32"), np.arange(8) % 3,
                                                 np.zeros((4, 3, 3, 1), "float32"), np.arange(4) % 3),
                                    layers=(Conv2D(2, 5), Flatten(), Dense(3))), "does not fit", id="window-too-big"),
    pytest.param(lambda: small_task(layers=(Dense(3), Conv2D(2))), "needs \\(height, width, channels\\)",
                 id="ends-in-images"),
    pytest.param(lambda: small_task(layers=("dense",)), "is not an xfbench layer", id="not-a-layer"),
    pytest.param(lambda: small_task(data=small_data(y=np.arange(12) % 5)), r"labels must be in \[0, 3\)",
                 id="labels-out-of-range"),
    pytest.param(lambda: small_task(data=small_data(y=-(np.arange(12) % 3))), r"labels must be in \[0, 3\)",
                 id="negative-labels"),
    pytest.param(lambda: small_task(data=small_data(y=(np.arange(12) % 3).astype("float32"))),
                 "integer class labels", id="float-labels"),
    pytest.param(lambda: small_task(data=small_data(y=np.zeros((12, 1), "int64"))), "integer class labels of shape",
                 id="column-labels"),
    pytest.param(lambda: small_task(loss="mse", data=small_data(y=np.zeros((12, 2), "float32"))),
                 r"mse needs float32 targets of shape \(n, 3\)", id="mse-target-shape"),
    pytest.param(lambda: small_task(loss="mse", data=small_data(y=np.zeros((12, 3), "float64"))),
                 "mse needs float32 targets", id="mse-target-dtype"),
    pytest.param(lambda: small_task(loss="sigmoid_binary_cross_entropy", data=small_data(y=np.zeros(12, "float32"))),
                 "sigmoid_binary_cross_entropy needs float32 targets", id="binary-target-shape"),
    pytest.param(lambda: small_task(data=small_data(x_dtype="float64")), "inputs must be float32", id="float64-inputs"),
    pytest.param(lambda: small_task(data=small_data(x_dtype="int32")), "inputs must be float32", id="int-inputs"),
    pytest.param(lambda: Dataset.split(np.zeros((5, 2), "float32"), np.zeros(4)), "different lengths",
                 id="split-lengths"),
    pytest.param(lambda: Dataset.split(np.zeros((5, 2), "float32"), np.zeros(5), test_fraction=1.0), "test_fraction",
                 id="split-fraction"),
])
def test_task_validation(make, match: str):
    with pytest.raises(XfbenchError, match=match):
        make()


# ---------------------------------------------------------------------------------------------- Result JSON
def sample_result() -> Result:
    ok = Cell(task="mlp", backend="torch", device={"kind": "cpu", "name": "Some CPU"}, status="ok",
              versions={"torch": "2.0"}, threads=2, fingerprint={"dtype": "float32", "intra_op_threads": 2},
              metrics={"accuracy": 0.975, "loss": np.float64(0.1), "train_loss": 0.09},
              seed_metrics=[{"accuracy": 0.96}, {"accuracy": 0.98}],
              timing=Timing(build_s=0.1, step_ms=StepStats(median=1.5, iqr=0.1, min=1.4, n=10)),
              memory=Memory(peak_rss_mb=500.0))
    diverged = Cell(task="mlp", backend="jax", device={"kind": "cpu", "name": "Some CPU"}, status="ok",
                    metrics={"accuracy": 0.1, "loss": math.nan, "train_loss": math.inf})
    missing = Cell(task="mlp", backend="tf-graph", device={"kind": "cpu", "name": None}, status="unsupported",
                   error="tensorflow is not installed: pip install 'xfbench[tensorflow]'")
    return Result(cells=[ok, diverged, missing], config={"tasks": ["mlp"], "threads": 2})


def test_result_json_round_trip(tmp_path):
    result = sample_result()
    path = tmp_path / "new" / "folder" / "result.json"
    result.save(path)
    text = path.read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text  # standard JSON
    document = json.loads(text)
    assert next(iter(document)) == "schema_version" and document["schema_version"] == SCHEMA_VERSION == 4
    assert document["cells"][1]["metrics"] == {"accuracy": 0.1, "loss": None, "train_loss": None}
    loaded = xfbench.load(str(path))
    assert loaded.to_dict() == document
    assert loaded.created == result.created and loaded.machine == result.machine and loaded.config == result.config
    assert [cell.key for cell in loaded.cells] == [cell.key for cell in result.cells]
    assert loaded.cell("mlp", "torch") == Cell.from_dict(document["cells"][0]) == result.cell("mlp", "torch")
    assert loaded.cell("mlp", "torch").metrics["loss"] == 0.1
    assert loaded.cell("mlp", "torch").step_ms() == 1.5 and loaded.cell("mlp", "tf-graph").step_ms() is None
    assert Result.from_json(loaded.to_json()).to_dict() == document  # stable on a second round trip


def test_result_machine_and_created():
    result = Result()
    assert {"cpu", "cores", "os", "python"} <= set(result.machine)
    assert result.created.endswith("+00:00")


def test_result_errors(tmp_path):
    with pytest.raises(XfbenchError, match="no result file"):
        xfbench.load(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(XfbenchError, match="is not a JSON result"):
        xfbench.load(str(tmp_path / "bad.json"))
    (tmp_path / "v5.json").write_text(json.dumps({"schema_version": 5, "cells": []}), encoding="utf-8")
    with pytest.raises(XfbenchError, match="schema_version 5 is not one this xfbench reads"):
        xfbench.load(str(tmp_path / "v5.json"))
    with pytest.raises(XfbenchError, match="no cell for task 'cnn'"):
        sample_result().cell("cnn", "torch")


V1_CELL = {  # a cell as xfbench 0.1.0 wrote it (schema_version 1), trimmed
    "task": "mlp", "backend": "torch", "device": {"kind": "cpu", "name": "AMD EPYC"}, "status": "ok", "error": None,
    "versions": {"torch": "2.13.0+cpu"}, "threads": 2, "fingerprint": {"dtype": "float32", "layout": "NCHW"},
    "metrics": {"accuracy": 0.9749, "loss": 0.09, "train_loss": 0.05}, "seed_metrics": [],
    "timing": {"import_s": 0.87, "build_s": 0.001, "first_step_s": 0.007, "train_s": 0.15, "eval_s": 0.001,
               "step_ms": {"median": 0.184, "iqr": 0.05, "min": 0.15, "n": 34}, "block_steps": 341,
               "timed_steps": 11594, "samples_per_s": 174000.0, "recompiles": None, "page_faults_per_step": 0.0,
               "protocol": {"sync": "one device sync per block", "warmup_s": 0.3, "min_block_s": 0.05,
                            "min_blocks": 10, "max_blocks": 200, "budget_s": 2.0}},
    "memory": {"peak_rss_mb": 379.5, "device_peak_mb": None}, "parity": None,
}


def test_schema_1_results_are_migrated(tmp_path):
    """A result written by the first xfbench still loads: same cells and numbers, no raw turns, no comparisons."""
    path = tmp_path / "v1.json"
    path.write_text(json.dumps({"schema_version": 1, "created": "2026-11-24T03:50:00+00:00", "machine": {"cpu": "x"},
                                "config": {"tasks": ["mlp"]}, "cells": [V1_CELL]}), encoding="utf-8")
    loaded = xfbench.load(str(path))
    assert loaded.schema_version == SCHEMA_VERSION and loaded.comparisons == [] and loaded.complete
    cell = loaded.cell("mlp", "torch")
    assert cell.step_ms() == 0.184 and cell.timing.block_steps == 341 and cell.timing.turns == []
    assert cell.timing.import_s == 0.87 and cell.memory.peak_rss_mb == 379.5 and cell.device.name == "AMD EPYC"
    assert cell.metrics["accuracy"] == 0.9749
    again = Result.from_json(loaded.to_json())
    assert again.to_dict() == loaded.to_dict()
    assert xfbench.table(loaded).splitlines()[0] == "mlp on cpu (AMD EPYC)"


def test_table_shows_every_status():
    text = xfbench.table(sample_result())
    lines = text.splitlines()
    assert lines[0] == "mlp on cpu (Some CPU)"
    torch_row = next(line for line in lines if line.startswith("torch"))
    assert "0.970 ± 0.014" in torch_row and "1.50 ms ± 100 µs" in torch_row and torch_row.rstrip().endswith("ok")
    assert "unsupported: tensorflow is not installed" in text
    assert "MORE than" not in text  # one backend with seeds: no spread note


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"tasks": ""}, "--tasks is empty; give at least one, e.g. --tasks regression"),
    ({"backends_": ","}, "--backends is empty; give at least one, e.g. --backends tf-graph"),
    ({"threads": 10_000}, "--threads 10000 is more than the {cores} usable cores here; choose 1 to {cores}"),
])
def test_empty_lists_and_too_many_threads(kwargs: dict, message: str):
    from xfbench.machine import usable_cores

    with pytest.raises(XfbenchError) as caught:
        make_plan(**{"tasks": "regression", "backends_": "torch", **kwargs})
    assert str(caught.value) == message.format(cores=usable_cores())


def test_binary_targets_must_be_probabilities():
    from xfbench.tasks import Adam, Dataset, Dense, Task

    x = np.zeros((8, 2), np.float32)
    y = np.full((8, 1), 2.0, np.float32)
    with pytest.raises(XfbenchError, match=r"targets in \[0, 1\]"):
        Task("t", Dataset(x, y, x, y), (Dense(1),), "sigmoid_binary_cross_entropy", Adam(), batch_size=4, epochs=1)


@pytest.mark.parametrize(("timing", "message"), [
    (TimingOptions(min_blocks=0), "TimingOptions.min_blocks must be a positive integer, got 0"),
    (TimingOptions(min_block_s=-1.0), "TimingOptions.min_block_s must be a positive number, got -1.0"),
    (TimingOptions(warmup_rounds=-1), "TimingOptions.warmup_rounds must be an integer >= 0, got -1"),
    (TimingOptions(warmup_s=math.inf), "TimingOptions.warmup_s must be a number >= 0, got inf"),
    (TimingOptions(rounds=2.5), "--rounds must be a positive integer, got 2.5"),  # type: ignore[arg-type]
    (TimingOptions(schedule="parallel"), "unknown schedule 'parallel'; choose one of: interleaved, sequential"),
    ("fast", "timing must be an xfbench.TimingOptions, got str"),
])
def test_timing_options_are_checked_before_any_work(timing, message: str):
    with pytest.raises(XfbenchError) as caught:
        make_plan("regression", "torch", timing=timing)
    assert str(caught.value) == message


def test_backends_all_is_every_registered_backend_and_the_default_is_the_base_four():
    from xfbench.backends import backend_names

    assert make_plan("regression", "all").backends == backend_names()
    assert "tf-xla" in make_plan("regression", "all").backends
    assert make_plan("regression").backends == ["tf-graph", "tf-eager", "torch", "jax"]


def test_the_public_names_after_the_repackaging():
    """What moved when compare/ was repackaged is reachable from the package itself, and where the docs say."""
    import xfbench.compare.protocol
    import xfbench.compare.results.result
    import xfbench.compare.results.store

    assert xfbench.TimingOptions is xfbench.compare.protocol.TimingOptions
    assert xfbench.Result is xfbench.compare.results.result.Result
    assert xfbench.Store is xfbench.compare.results.store.Store
    assert callable(xfbench.reports.write)
    for name in ("run", "load", "ab", "check", "table"):
        assert callable(getattr(xfbench, name))
    for method in ("cell", "comparison", "compare", "nodes", "plot", "save", "load", "to_json", "from_json",
                   "_repr_html_"):
        assert callable(getattr(xfbench.Result, method))
