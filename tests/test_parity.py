"""Parity: every backend computes the float64 reference's function, and a wrong layout conversion is caught.

- in-process, every built-in task on every backend: forward, loss and gradients within ``ParityOptions``'
  tolerances, parameters after K optimizer steps within them too, and cnn28's backends within a tighter band of
  each other;
- PyTorch adapters with a deliberately wrong conversion (``tests/fake_backend.py``: dense rows after a Flatten left in
  H-W-C order; conv kernels loaded with H and W swapped) fail, through the ``xfbench parity`` CLI and in-process;
- ``xfbench.run(..., seeds=3, parity=True)``: seed metrics, the parity verdicts and the table's parity column and
  spread note; ``spread_note``, ``failures`` and ``summary`` on synthetic data;
- the ``xfbench parity`` CLI on a real small run, with ``--json``.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import statistics
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

import xfbench
from tests.conftest import ALL_BACKENDS, PARITY_SIZES, REPO, THREADS, ready_backend, run_cli, sized_task
from tests.fake_backend import SwappedKernelTorchBackend, WrongFlattenTorchBackend
from xfbench import backends
from xfbench.backends import common
from xfbench.backends.base import Backend
from xfbench.compare.engine.parity import cell_parity
from xfbench.compare.protocol import TimingOptions
from xfbench.compare.results.cell import Cell, Parity, TensorDiff
from xfbench.compare.results.result import Result
from xfbench.compare.stats.parity import ParityOptions, failures, judge, limit, reference_steps, summary
from xfbench.reports.model import spread_note
from xfbench.tasks import (
    SGD,
    Activation,
    Adam,
    Conv2D,
    Dataset,
    Dense,
    Flatten,
    Task,
    get_task,
    initial_weights,
    task_names,
)

OPTIONS = ParityOptions()
STEPS = OPTIONS.steps

# Between backends on cnn28 after 10 Adam steps, and each backend's forward vs the float64 reference: tighter than
# ParityOptions (measured on 2 CPU threads: parameters 7.7e-7 apart at most, forward 2.1e-6 from the reference).
CNN28_BETWEEN_REL = 5e-6
CNN28_FORWARD_ABS = 5e-6


def rel(a: Any, b: Any) -> float:
    """‖a − b‖ / ‖b‖ in float64, computed here rather than with the code under test."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def available(names: tuple[str, ...] = ALL_BACKENDS) -> list[str]:
    return [name for name in names if backends.get(name).unavailable_reason() is None]


# ------------------------------------------------------------------------------ in-process, every backend
_parity_cache: dict[tuple[str, str], dict[str, Any]] = {}


def parity_of(backend: Backend, task_name: str) -> dict[str, Any]:
    """``cell_parity`` of a built-in task on a set-up backend, computed once per session."""
    key = (backend.name, task_name)
    if key not in _parity_cache:
        _parity_cache[key] = cell_parity(backend, sized_task(task_name, PARITY_SIZES), "cpu", OPTIONS.as_dict())
    return _parity_cache[key]


@pytest.fixture(scope="module")
def reference_params():
    """The float64 reference's parameters after K steps per task name and optimizer formula, with the float32
    references (rows in a few orders) that say what float32 rounding alone does to them; computed once."""
    cache: dict[tuple[str, str], tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]] = {}

    def get(task_name: str, formula: str = "spec") -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
        if (task_name, formula) not in cache:
            cache[task_name, formula] = reference_steps(sized_task(task_name, PARITY_SIZES), OPTIONS, formula)
        return cache[task_name, formula]

    return get


@pytest.mark.parametrize("task_name", task_names())
def test_forward_loss_gradients_match_reference(task_name: str, backend: Backend):
    parity = parity_of(backend, task_name)
    task = sized_task(task_name, PARITY_SIZES)
    assert parity["steps"] == STEPS
    assert parity["forward_max_abs"] <= OPTIONS.forward_abs, parity["forward_max_abs"]
    assert parity["loss_rel"] <= OPTIONS.loss_rel, parity["loss_rel"]
    assert list(parity["grads"]) == task.param_names()
    for name, diff in parity["grads"].items():  # the fixed tolerance, or 10x what float32 itself loses there
        assert diff["rel"] <= limit(OPTIONS.grad_rel, TensorDiff(**diff), OPTIONS), f"gradient of {name}: {diff}"
        if task_name in ("mlp", "cnn", "regression", "transformer"):  # well conditioned: the fixed tolerance
            assert diff["rel"] <= OPTIONS.grad_rel, f"gradient of {name}: {diff}"
    assert failures(Parity.from_dict(parity), OPTIONS) == []


@pytest.mark.parametrize("task_name", task_names())
def test_parameters_after_steps_match_reference(task_name: str, backend: Backend, reference_params):
    parity = parity_of(backend, task_name)
    weights = parity["weights_after_steps"]
    # the formula the backend says it follows
    expected, rounded = reference_params(task_name, parity["optimizer_formula"])
    assert sorted(weights) == sorted(expected)
    start = initial_weights(sized_task(task_name, PARITY_SIZES))
    for name, value in expected.items():
        assert np.shape(weights[name]) == value.shape, name
        allowed = max(OPTIONS.param_rel, OPTIONS.float32_factor * max(rel(r[name], value) for r in rounded))
        assert rel(weights[name], value) <= allowed, f"{name}: rel {rel(weights[name], value):.3g}"
        assert not np.array_equal(value, start[name]), f"{name} did not move in {STEPS} steps: the check is vacuous"


@pytest.mark.frameworks
def test_cnn28_backends_agree_after_adam_steps():
    """The 28x28 CNN after 10 Adam steps: every pair of backends within CNN28_BETWEEN_REL per tensor, every forward
    within CNN28_FORWARD_ABS of the reference."""
    task = get_task("cnn28")
    assert isinstance(task.optimizer, Adam)
    names = available()
    if len(names) < 2:
        pytest.skip(f"needs two frameworks; available: {names}")
    results = {name: parity_of(ready_backend(name), "cnn28") for name in names}
    for name, parity in results.items():
        assert parity["forward_max_abs"] <= CNN28_FORWARD_ABS, (name, parity["forward_max_abs"])
    worst = 0.0
    for first, second in itertools.combinations(names, 2):
        for tensor in task.param_names():
            value = rel(results[first]["weights_after_steps"][tensor], results[second]["weights_after_steps"][tensor])
            assert value <= CNN28_BETWEEN_REL, f"{tensor}: {first} vs {second} rel {value:.3g}"
            worst = max(worst, value)
    assert worst > 0  # float32 frameworks never agree bit for bit on a CNN: identical results would mean a mix-up


# ----------------------------------------------------------------------------- wrong conversions are caught
FAKES = {
    "fake-torch-flatten": "tests.fake_backend:WrongFlattenTorchBackend",
    "fake-torch-kernel-hw": "tests.fake_backend:SwappedKernelTorchBackend",
}


def table_rows(text: str, task: str) -> dict[str, list[str]]:
    """The rows of one task's table in ``xfbench parity`` output: backend -> cells (columns split on 2+ spaces)."""
    lines = text.split(f"{task}\n", 1)[1].splitlines()
    assert lines[0].startswith("backend") and set(lines[1]) <= {"-", " "}
    rows = {}
    for line in lines[2:]:
        if not line.strip() or line.startswith("failures:"):
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells
    return rows


@pytest.fixture(scope="module")
def wrong_flatten_cli() -> subprocess.CompletedProcess[str]:
    """``xfbench parity --tasks cnn --backends fake-torch-flatten,torch`` with the fake registered in the workers."""
    reason = WrongFlattenTorchBackend().unavailable_reason()
    if reason:
        pytest.skip(f"torch: {reason}")
    env = {**os.environ, "XFBENCH_EXTRA_BACKENDS": ",".join(f"{name}={target}" for name, target in FAKES.items()),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "xfbench.cli", "parity", "--tasks", "cnn", "--backends",
                           "fake-torch-flatten,torch"], capture_output=True, text=True, timeout=300, cwd=REPO, env=env)


def test_wrong_flatten_order_fails_parity_cli(wrong_flatten_cli: subprocess.CompletedProcess[str]):
    done = wrong_flatten_cli
    assert done.returncode == 1, done.stdout + done.stderr
    rows = table_rows(done.stdout, "cnn")
    assert list(rows) == ["fake-torch-flatten", "torch"]
    assert rows["fake-torch-flatten"][-1] == "FAIL"
    assert rows["fake-torch-flatten"][5].endswith("(5.Dense.kernel)")  # the worst gradient: the dense after Flatten
    lines = done.stdout.split("failures:\n", 1)[1].splitlines()
    fake = [line.strip() for line in lines if line.startswith("  fake-torch-flatten: ")]
    assert any(line.startswith("fake-torch-flatten: forward output max abs diff") for line in fake), fake
    assert any(line.startswith("fake-torch-flatten: gradient of 5.Dense.kernel: rel diff") for line in fake), fake
    assert any(line.startswith("fake-torch-flatten: 5.Dense.kernel after 10 steps vs reference") for line in fake), fake
    # torch itself meets every tolerance against the reference; only its distance to the broken fake is over
    torch_lines = [line.strip() for line in lines if line.startswith("  torch: ")]
    assert all(line.endswith(f"> {OPTIONS.param_rel:g}") and " vs fake-torch-flatten: " in line
               for line in torch_lines), torch_lines
    assert rows["torch"][1] == "spec" and float(rows["torch"][2]) <= OPTIONS.forward_abs  # formula, fwd max abs


def test_correct_backend_passes_next_to_a_broken_one(wrong_flatten_cli: subprocess.CompletedProcess[str]):
    assert table_rows(wrong_flatten_cli.stdout, "cnn")["torch"][-1] == "pass"


def conventions_task() -> Task:
    """Every convention a framework's default could get wrong, where getting it wrong shows: BatchNorm on a batch of
    4 vectors (PyTorch's unbiased running variance would be 4/3 of the spec's; Keras' momentum is 1 - the spec's),
    an exact GELU (JAX's default is the tanh form), a LayerNorm epsilon of 0.1 (Keras' default is 1e-3, PyTorch's
    1e-5), attention with a scale other than 1/sqrt(head size) on a non-causal sequence (Keras cannot: unsupported),
    AdamW with clipping and a schedule."""
    from xfbench.tasks import (
        AdamW,
        BatchNorm,
        Embedding,
        LayerNorm,
        PositionEmbedding,
        Residual,
        SelfAttention,
        WarmupCosine,
    )

    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 5)).astype(np.float32)
    y = rng.integers(0, 3, size=16)
    optimizer = AdamW(0.05, weight_decay=0.3, clip_norm=0.05, schedule=WarmupCosine(3, 8, 0.2))
    vectors = Task(name="conventions", data=Dataset(x, y, x[:4], y[:4]),
                   layers=(Dense(6, use_bias=False), BatchNorm(momentum=0.3, epsilon=0.01), Activation("gelu"),
                           LayerNorm(0.1), Dense(3)), loss="softmax_cross_entropy", optimizer=optimizer,
                   batch_size=4, epochs=3)
    ids = rng.integers(0, 7, size=(16, 5)).astype(np.int32)
    targets = rng.integers(0, 7, size=(16, 5))
    tokens = Task(name="conventions-attention", data=Dataset(ids, targets, ids[:4], targets[:4]),
                  layers=(Embedding(7, 6), PositionEmbedding(5),
                          Residual((LayerNorm(0.1), SelfAttention(2, 4, causal=False, scale=0.3)), activation="gelu"),
                          Dense(7)), loss="softmax_cross_entropy", optimizer=optimizer, batch_size=4, epochs=3,
                  metrics=("token_accuracy",))
    return vectors, tokens


@pytest.mark.parametrize("which", [0, 1])
def test_conventions_where_they_show(backend: Backend, which: int):
    """The spec's conventions on tiny models where each would show (``conventions_task``): forward, gradients,
    parameters and running statistics after 10 steps, and evaluation then, all at the fixed tolerances."""
    task = conventions_task()[which]
    reason = backend.unsupported_reason(task, "cpu")
    if reason:
        assert backend.name.startswith("keras") and "1/sqrt(head_size)" in reason, reason
        return
    parity = Parity.from_dict(cell_parity(backend, task, "cpu", OPTIONS.as_dict()))
    result = Result(cells=[Cell(task=task.name, backend=backend.name, device={"kind": "cpu", "name": None},
                                status="ok", parity=parity)], config={"parity": OPTIONS.as_dict()})
    judge(result, {task.name: task}, OPTIONS)
    assert parity.failures == [] and parity.passed, parity.failures
    for diff in (*parity.grads.values(), *parity.params_vs_reference.values()):  # well conditioned: no float32 slack
        assert diff.rel <= OPTIONS.param_rel and (diff.float32_rel or 0) < 1e-5, diff
    assert parity.eval_after_steps_rel is not None and parity.eval_after_steps_rel <= OPTIONS.eval_rel
    if which == 0:  # PyTorch's unbiased running variance (x 4/3 per update) would be ~10% off after 10 steps
        assert parity.params_vs_reference["1.BatchNorm.running_var"].rel <= OPTIONS.param_rel
        assert parity.params_vs_reference["1.BatchNorm.running_mean"].rel <= OPTIONS.param_rel


def nonsquare_task() -> Task:
    """Random 7x5x3 images through a (3, 2) conv, Flatten, Dense: non-square everywhere, so neither a swapped kernel
    nor a wrong flatten order can cancel out."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 7, 5, 3)).astype(np.float32)
    y = rng.integers(0, 6, size=16)
    return Task(name="nonsquare", data=Dataset(x, y, x[:4], y[:4]),
                layers=(Conv2D(4, (3, 2), activation="tanh"), Flatten(), Dense(6)), loss="softmax_cross_entropy",
                optimizer=SGD(0.1, momentum=0.5), batch_size=4, epochs=1)


@pytest.fixture(scope="module")
def nonsquare_parity() -> Result:
    """Parity of the non-square task on torch and both wrong fakes, in-process, judged by ``judge``."""
    ready_backend("torch")  # PyTorch imported and threaded here (or a skip naming why not)
    task = nonsquare_task()
    cells = []
    for backend in (backends.get("torch"), WrongFlattenTorchBackend(), SwappedKernelTorchBackend()):
        cells.append(Cell(task=task.name, backend=backend.name, device={"kind": "cpu", "name": None}, status="ok",
                          parity=cell_parity(backend, task, "cpu", OPTIONS.as_dict())))
    result = Result(cells=cells, config={"parity": OPTIONS.as_dict()})
    judge(result, {task.name: task}, OPTIONS)
    return result


@pytest.mark.frameworks
@pytest.mark.parametrize("fake", [WrongFlattenTorchBackend, SwappedKernelTorchBackend])
def test_fakes_only_break_the_layout(fake: type[Backend]):
    """The fakes read back exactly the weights they were given, and differ from torch only in the function."""
    ready_backend("torch")
    task = nonsquare_task()
    weights = initial_weights(task)
    trainer = fake().build(task, "cpu", weights)
    for name, value in trainer.get_weights().items():
        np.testing.assert_array_equal(value, weights[name], err_msg=name)
    torch_out = backends.get("torch").build(task, "cpu", weights).predict(task.data.x_test)
    assert np.abs(trainer.predict(task.data.x_test) - torch_out).max() > 100 * OPTIONS.forward_abs


@pytest.mark.parametrize(("fake", "tensor"), [("fake-torch-flatten", "2.Dense.kernel"),
                                              ("fake-torch-kernel-hw", "0.Conv2D.kernel")])
def test_wrong_conversion_on_nonsquare_task_is_caught(nonsquare_parity: Result, fake: str, tensor: str):
    assert nonsquare_parity.cell("nonsquare", fake).parity.weights_after_steps is None  # dropped by judge()
    parity = nonsquare_parity.cell("nonsquare", fake).parity.to_dict()
    assert parity["passed"] is False
    assert parity["forward_max_abs"] > 100 * OPTIONS.forward_abs
    assert parity["grads"][tensor]["rel"] > 100 * OPTIONS.grad_rel
    assert parity["params_vs_reference"][tensor]["rel"] > 10 * OPTIONS.param_rel
    lines = parity["failures"]
    assert lines[0].startswith("forward output max abs diff ")
    assert any(line.startswith(f"gradient of {tensor}: rel diff ") for line in lines), lines
    assert any(line.startswith(f"{tensor} after {STEPS} steps vs reference: rel diff ") for line in lines), lines
    assert any(line.startswith(f"{tensor} after {STEPS} steps vs torch: rel diff ") for line in lines), lines


def test_torch_on_nonsquare_task_meets_reference(nonsquare_parity: Result):
    """The control: the real adapter on the same task meets every tolerance against the float64 reference."""
    parity = nonsquare_parity.cell("nonsquare", "torch").parity.to_dict()
    against_reference = {**parity, "params_vs_backends": {}}
    assert failures(Parity.from_dict(against_reference), OPTIONS) == []
    assert set(parity["params_vs_backends"]) == {"fake-torch-flatten", "fake-torch-kernel-hw"}
    assert max(diff["rel"] for diff in parity["params_vs_reference"].values()) <= OPTIONS.param_rel
    assert common.flatten_permutations(nonsquare_task()).keys() == {"2.Dense.kernel"}


# -------------------------------------------------------------------------------- run(seeds=3, parity=True)
@pytest.fixture(scope="module")
def seeded_run() -> Result:
    names = available()
    if len(names) < 2:
        pytest.skip(f"needs two frameworks; available: {names}")
    return xfbench.run(tasks="regression", backends=names, epochs=5, seeds=3, parity=True, threads=THREADS,
                       timing=TimingOptions.quick())


def test_run_with_seeds_and_parity(seeded_run: Result):
    names = [cell.backend for cell in seeded_run.cells]
    assert names == available()
    for cell in seeded_run.cells:
        assert cell.status == "ok", cell.error
        assert len(cell.seed_metrics) == 3
        assert cell.metrics == cell.seed_metrics[0]
        assert len({metrics["r2"] for metrics in cell.seed_metrics}) == 3  # three different seeds, three results
        assert cell.parity.weights_after_steps is None
        parity = cell.parity.to_dict()
        assert parity["passed"] is True, parity["failures"]
        assert parity["forward_max_abs"] <= OPTIONS.forward_abs
        assert set(parity["params_vs_backends"]) == set(names) - {cell.backend}
    # the same seed gives the same R² on every backend (to float32 rounding)
    for seed in range(3):
        values = [cell.seed_metrics[seed]["r2"] for cell in seeded_run.cells]
        assert max(values) - min(values) < 1e-5, values


def test_table_with_seeds_and_parity(seeded_run: Result):
    text = xfbench.table(seeded_run)
    lines = text.splitlines()
    header = next(index for index, line in enumerate(lines) if line.startswith("backend"))
    columns = re.split(r"\s{2,}", lines[header].strip())
    assert "parity" in columns
    quality, parity = columns.index("R²"), columns.index("parity")
    for cell in seeded_run.cells:
        row = next(re.split(r"\s{2,}", line.strip()) for line in lines[header + 2:] if line.startswith(cell.backend + " "))
        values = [metrics["r2"] for metrics in cell.seed_metrics]
        assert row[quality] == f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"
        assert re.fullmatch(r"pass \(\S+\)", row[parity]), row[parity]
    note = next(line for line in lines if line.startswith("R² gap between backends "))
    assert "what seed-to-seed spread explains" in note
    assert " is within " in note  # same seeds, same function: the backends' means differ by float32 rounding only


def seeded_cell(backend: str, values: list[float]) -> Cell:
    return Cell(task="t", backend=backend, device={"kind": "cpu", "name": None}, status="ok",
                metrics={"accuracy": values[0]}, seed_metrics=[{"accuracy": value} for value in values])


def test_spread_note_identical_means():
    note = spread_note([seeded_cell("a", [0.90, 0.91, 0.92]), seeded_cell("b", [0.92, 0.90, 0.91])])
    # band: 2 * std 0.01 * sqrt(2 / 3 seeds) = 0.0163
    assert note == ("accuracy gap between backends 0.0000 is within what seed-to-seed spread explains "
                    "(±0.0163, 2 standard errors over 3 seeds)")


@pytest.mark.parametrize(("shift", "verdict"), [(0.015, "within"), (0.02, "MORE than"), (0.05, "MORE than")])
def test_spread_note_around_the_band(shift: float, verdict: str):
    """Spread 0.01 over 3 seeds gives a band of 0.0163: a gap of 0.015 is within it, 0.02 is not."""
    note = spread_note([seeded_cell("a", [0.90, 0.91, 0.92]), seeded_cell("b", [0.90 + shift, 0.91 + shift, 0.92 + shift])])
    assert f"gap between backends {shift:.4f} is {verdict} what" in note, note


def test_spread_note_tiny_spread_clear_gap():
    note = spread_note([seeded_cell("a", [0.9, 0.9001, 0.9002]), seeded_cell("b", [0.95, 0.9501, 0.9502])])
    assert note.startswith("accuracy gap between backends 0.0500 is MORE than what seed-to-seed spread explains")


def test_spread_note_needs_two_seeded_backends():
    assert spread_note([seeded_cell("a", [0.9, 0.91])]) is None
    assert spread_note([seeded_cell("a", [0.9]), seeded_cell("b", [0.95])]) is None


# ----------------------------------------------------------------------------------- failures() and summary()
def diff(value: float) -> dict[str, float]:
    return {"rel": value, "max_abs": value / 10}


def clean_parity() -> dict[str, Any]:
    """A cell's parity under every tolerance (numbers like the measured ones)."""
    return {
        "forward_max_abs": 4.7e-7, "forward_rel": 5.4e-8, "forward_max_rel": 8e-8, "loss_abs": 1e-6, "loss_rel": 7e-8,
        "grads": {"0.Dense.kernel": diff(2e-7), "0.Dense.bias": diff(9e-7)}, "steps": 10,
        "params_vs_reference": {"0.Dense.kernel": diff(3e-7), "0.Dense.bias": diff(5e-7)},
        "params_vs_backends": {"jax": {"0.Dense.kernel": diff(1e-7), "0.Dense.bias": diff(2e-7)},
                               "tf-graph": {"0.Dense.kernel": diff(4e-7), "0.Dense.bias": diff(6e-8)}},
    }


def test_failures_none_under_tolerance():
    assert failures(Parity.from_dict(clean_parity()), OPTIONS) == []
    at_tolerance = clean_parity()  # the tolerance itself passes ("within")
    at_tolerance.update(forward_max_abs=OPTIONS.forward_abs, loss_rel=OPTIONS.loss_rel)
    at_tolerance["grads"]["0.Dense.bias"] = diff(OPTIONS.grad_rel)
    at_tolerance["params_vs_backends"]["jax"]["0.Dense.bias"] = diff(OPTIONS.param_rel)
    assert failures(Parity.from_dict(at_tolerance), OPTIONS) == []


@pytest.mark.parametrize(("path", "expected"), [
    (("forward_max_abs",), "forward output max abs diff 0.003 > 1e-05"),
    (("loss_rel",), "loss rel diff 0.003 > 1e-05"),
    (("grads", "0.Dense.bias"), "gradient of 0.Dense.bias: rel diff 0.003 > 0.0001 (max abs 0.0003)"),
    (("params_vs_reference", "0.Dense.kernel"), "0.Dense.kernel after 10 steps vs reference: rel diff 0.003 > 0.0001"),
    (("params_vs_backends", "tf-graph", "0.Dense.bias"),
     "0.Dense.bias after 10 steps vs tf-graph: rel diff 0.003 > 0.0001"),
])
def test_failures_name_the_tensor_and_measure(path: tuple[str, ...], expected: str):
    parity = clean_parity()
    *parents, last = path
    target = parity
    for key in parents:
        target = target[key]
    target[last] = diff(3e-3) if parents else 3e-3
    assert failures(Parity.from_dict(parity), OPTIONS) == [expected]


def test_summary_headline_numbers():
    parity = clean_parity()
    assert summary(Parity.from_dict(parity)) == {
        "forward_max_abs": 4.7e-7, "forward_rel": 5.4e-8, "loss_rel": 7e-8, "grad_rel": 9e-7,
        "grad_tensor": "0.Dense.bias", "params_vs_reference_rel": 5e-7, "params_vs_backends_rel": 4e-7,
        "params_vs_backends_max_abs": 4e-8, "optimizer_formula": "spec", "params_vs_spec_rel": None,
    }
    parity["grads"]["0.Dense.kernel"] = diff(0.2)
    parity["params_vs_backends"]["jax"]["0.Dense.bias"] = diff(0.5)
    numbers = summary(Parity.from_dict(parity))
    assert (numbers["grad_tensor"], numbers["grad_rel"]) == ("0.Dense.kernel", 0.2)
    assert (numbers["params_vs_backends_rel"], numbers["params_vs_backends_max_abs"]) == (0.5, 0.05)


def test_another_formula_is_judged_by_its_own_reference_and_shown_beside_the_spec():
    """A backend of another optimizer formula (Keras' Adam): its divergence from backends of the spec's formula is
    recorded and shown, but neither fails it nor them; the summary's "between backends" counts its own formula."""
    parity = clean_parity()
    parity["params_vs_backends"]["keras-jax"] = {"0.Dense.bias": diff(0.03), "0.Dense.kernel": diff(0.02)}
    parity["formulas"] = {"torch": "spec", "jax": "spec", "keras-jax": "keras"}
    spec_cell = Parity.from_dict(parity)
    assert failures(spec_cell, OPTIONS) == []
    assert summary(spec_cell)["params_vs_backends_rel"] == 4e-7
    keras = clean_parity()
    keras.update(optimizer_formula="keras", formulas=parity["formulas"],
                 params_vs_spec_reference={"0.Dense.bias": diff(0.027)})
    keras["params_vs_backends"] = {"jax": {"0.Dense.bias": diff(0.03)}, "keras-torch": {"0.Dense.bias": diff(3e-3)}}
    keras["formulas"]["keras-torch"] = "keras"
    keras_cell = Parity.from_dict(keras)
    assert failures(keras_cell, OPTIONS) == [
        "0.Dense.bias after 10 steps vs keras-torch: rel diff 0.003 > 0.0001"]  # same formula: judged
    numbers = summary(keras_cell)
    assert (numbers["optimizer_formula"], numbers["params_vs_spec_rel"], numbers["params_vs_backends_rel"]) == (
        "keras", 0.027, 3e-3)
    assert Parity.from_dict(keras_cell.to_dict()) == keras_cell


def test_summary_without_other_backends():
    parity = clean_parity()
    del parity["params_vs_reference"]
    parity["params_vs_backends"] = {}
    numbers = summary(Parity.from_dict(parity))
    assert "params_vs_reference_rel" not in numbers
    assert numbers["params_vs_backends_rel"] is None and numbers["params_vs_backends_max_abs"] is None


# ---------------------------------------------------------------------------------------------- the CLI
@pytest.mark.frameworks
@pytest.mark.processes
def test_parity_cli_real_run(tmp_path):
    names = available(("torch", "jax"))
    if len(names) < 2:
        pytest.skip(f"needs torch and jax; available: {names}")
    path = tmp_path / "parity.json"
    done = run_cli("parity", "--tasks", "regression,mlp", "--backends", "torch,jax", "--json", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    for task in ("regression", "mlp"):
        rows = table_rows(done.stdout, task)
        assert list(rows) == ["torch", "jax"]
        assert all(row[-1] == "pass" for row in rows.values()), rows
    assert f"params rel vs ref ({STEPS} steps)" in done.stdout
    assert "FAIL" not in done.stdout and "failures:" not in done.stdout
    assert f"result written to {path}" in done.stdout
    result = xfbench.load(str(path))
    assert [(cell.task, cell.backend) for cell in result.cells] == [
        ("regression", "torch"), ("regression", "jax"), ("mlp", "torch"), ("mlp", "jax")]
    for cell in result.cells:
        assert cell.status == "ok", cell.error
        parity = cell.parity.to_dict()
        assert parity["passed"] is True, parity["failures"]
        assert 0 < parity["forward_max_abs"] <= OPTIONS.forward_abs
        assert list(parity["params_vs_backends"]) == [{"torch": "jax", "jax": "torch"}[cell.backend]]
        assert "weights_after_steps" not in json.loads(path.read_text())["cells"][0]["parity"]
        assert parity["tolerances"] == OPTIONS.as_dict()


@pytest.mark.processes
def test_parity_cli_steps_zero():
    done = run_cli("parity", "--steps", "0", "--tasks", "regression", "--backends", "torch")
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["xfbench: error: --steps must be a positive integer, got 0"]
    assert done.stdout == ""
