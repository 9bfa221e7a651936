"""The float64 reference of the layers and training pieces of modern models (embeddings, attention, LayerNorm,
BatchNorm, GELU, residual blocks, sequence cross-entropy, AdamW, clipping, the schedule): forward passes against
direct loops, every backward pass against central finite differences, optimizer steps by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.test_reference import central_difference
from xfbench.errors import XfbenchError
from xfbench.tasks import (
    SGD,
    Activation,
    Adam,
    AdamW,
    BatchNorm,
    Conv2D,
    Dataset,
    Dense,
    Embedding,
    Flatten,
    GlobalAvgPool2D,
    LayerNorm,
    MaxPool2D,
    PositionEmbedding,
    Residual,
    SelfAttention,
    Task,
    WarmupCosine,
)
from xfbench.tasks import reference as ref
from xfbench.tasks.init import initial_weights


def float_task(input_shape, layers, loss="mse", n=5, optimizer=None, seed=0) -> Task:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *input_shape)).astype(np.float32)
    units = layers[-1].units
    y = rng.integers(0, units, size=n) if loss == "softmax_cross_entropy" else rng.normal(size=(n, units)).astype(
        np.float32)
    return Task(name="t", data=Dataset(x, y, x[:2], y[:2]), layers=tuple(layers), loss=loss,
                optimizer=optimizer or SGD(0.1), batch_size=n, epochs=1, seed=seed)


def token_task(layers, vocab=7, length=5, n=3, optimizer=None, seed=0) -> Task:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, vocab, size=(n, length)).astype(np.int32)
    y = rng.integers(0, layers[-1].units, size=(n, length))
    return Task(name="seq", data=Dataset(x, y, x[:1], y[:1]), layers=tuple(layers), loss="softmax_cross_entropy",
                optimizer=optimizer or SGD(0.1), batch_size=n, epochs=1, metrics=("token_accuracy",), seed=seed)


def perturbed(task: Task, seed: int = 1) -> dict[str, np.ndarray]:
    """Initial weights with every tensor moved off its initial value (zero biases, unit gammas and fresh running
    statistics would hide broadcasting and statistics bugs)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, value in initial_weights(task, seed).items():
        value = value.astype(np.float64) + 0.3 * rng.normal(size=value.shape)
        out[name] = np.abs(value) + 0.5 if name.endswith("running_var") else value
    return out


def finite_difference_check(task: Task, weights: dict[str, np.ndarray], h: float = 1e-6) -> None:
    x, y = task.data.x_train, task.data.y_train
    value, grads = ref.loss_and_grads(task, weights, x, y)
    assert value == pytest.approx(ref.loss(task, weights, x, y), rel=1e-14)
    assert list(grads) == task.param_names()
    for name in task.param_names():
        numeric = central_difference(task, weights, name, x, y, h)
        assert np.abs(numeric).max() > 1e-5, f"{name}: the gradient is trivially zero, the check is vacuous"
        np.testing.assert_allclose(grads[name], numeric, rtol=2e-5, atol=1e-8, err_msg=name)


GRADIENT_CASES = {
    "layernorm-gelu-exact": lambda: float_task((6,), [Dense(5), LayerNorm(1e-3), Dense(4, "gelu"), Dense(2)]),
    "gelu-tanh-activation": lambda: float_task((4,), [Dense(5), Activation("gelu_tanh"), Dense(3)],
                                               "softmax_cross_entropy"),
    "batchnorm-vectors": lambda: float_task((4,), [Dense(6, use_bias=False), BatchNorm(0.2, 1e-3), Activation("relu"), Dense(2)]),
    "batchnorm-images-gap": lambda: float_task(
        (5, 4, 2), [Conv2D(3, 2, padding="same", use_bias=False), BatchNorm(), Activation("tanh"),
                    GlobalAvgPool2D(), Dense(3)], "softmax_cross_entropy"),
    "residual-identity-and-projection": lambda: float_task(
        (6, 5, 2), [Conv2D(3, 3, padding="same", activation="tanh"),
                    Residual((Conv2D(3, 3, padding="same", use_bias=False), BatchNorm(), Activation("relu"),
                              Conv2D(3, (2, 3), padding="same")), activation="relu"),
                    MaxPool2D(2),
                    Residual((Conv2D(4, 3, padding="same"),), shortcut=(Conv2D(4, 1, use_bias=False), BatchNorm()),
                             activation="tanh"),
                    Flatten(), Dense(2)]),
    "nested-residual-dense-no-bias": lambda: float_task(
        (4,), [Dense(4, "tanh"), Residual((Dense(4, use_bias=False), Residual((LayerNorm(), Dense(4, "gelu"))))),
               Dense(2)]),
    "attention-causal-transformer-block": lambda: token_task(
        [Embedding(7, 6), PositionEmbedding(8),
         Residual((LayerNorm(), SelfAttention(2, 3, causal=True))),
         Residual((LayerNorm(), Dense(8, "gelu_tanh"), Dense(6))),
         LayerNorm(), Dense(7)]),
    "attention-full-no-bias-odd-scale": lambda: token_task(
        [Embedding(7, 4), SelfAttention(3, 2, causal=False, scale=0.9, use_bias=False), Dense(5)]),
}


@pytest.mark.parametrize("case", sorted(GRADIENT_CASES))
def test_gradients_match_central_finite_differences(case):
    task = GRADIENT_CASES[case]()
    finite_difference_check(task, perturbed(task))


def test_embedding_gradient_adds_repeated_tokens():
    task = token_task([Embedding(4, 3), Dense(2)], vocab=4, length=6, n=2)
    finite_difference_check(task, perturbed(task))
    ids = task.data.x_train
    _, grads = ref.loss_and_grads(task, perturbed(task), ids, task.data.y_train)
    unused = sorted(set(range(4)) - set(ids.ravel().tolist()))
    assert all(not grads["0.Embedding.embeddings"][token].any() for token in unused)


# ------------------------------------------------------------------------------------------ forward by hand
def test_attention_forward_matches_a_direct_loop():
    task = token_task([Embedding(5, 4), SelfAttention(2, 3, causal=True, scale=0.7), Dense(5)], vocab=5, length=4,
                      n=2)
    w = perturbed(task)
    ids = task.data.x_train
    out, acts = ref.forward(task, w, ids, return_activations=True)
    emb = w["0.Embedding.embeddings"][ids]
    expected = np.zeros((2, 4, 4))
    for b in range(2):
        for t in range(4):
            heads = []
            for h in range(2):
                cols = slice(3 * h, 3 * h + 3)
                q = emb[b, t] @ w["1.SelfAttention.query.kernel"][:, cols] + w["1.SelfAttention.query.bias"][cols]
                scores, values = [], []
                for s in range(t + 1):  # causal: positions up to t
                    k = emb[b, s] @ w["1.SelfAttention.key.kernel"][:, cols]  # no key bias (see SelfAttention)
                    scores.append(0.7 * q @ k)
                    values.append(emb[b, s] @ w["1.SelfAttention.value.kernel"][:, cols]
                                  + w["1.SelfAttention.value.bias"][cols])
                p = np.exp(np.array(scores) - max(scores))
                heads.append((p / p.sum()) @ np.array(values))
            expected[b, t] = np.concatenate(heads) @ w["1.SelfAttention.output.kernel"] + w[
                "1.SelfAttention.output.bias"]
    np.testing.assert_allclose(acts[1], expected, rtol=1e-12)
    assert out.shape == (2, 4, 5)


def test_layernorm_and_gelu_forward_by_hand():
    task = float_task((5,), [LayerNorm(0.01), Activation("gelu"), Activation("gelu_tanh"), Dense(1)])
    w = perturbed(task)
    x = task.data.x_train.astype(np.float64)
    _, acts = ref.forward(task, w, x, return_activations=True)
    normed = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 0.01) * w["0.LayerNorm.gamma"] + w[
        "0.LayerNorm.beta"]
    np.testing.assert_allclose(acts[0], normed, rtol=1e-12)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in normed.ravel()]).reshape(normed.shape)
    np.testing.assert_allclose(acts[1], exact, rtol=1e-12, atol=1e-15)
    tanh_form = 0.5 * exact * (1 + np.tanh(math.sqrt(2 / math.pi) * (exact + 0.044715 * exact**3)))
    np.testing.assert_allclose(acts[2], tanh_form, rtol=1e-12, atol=1e-15)
    assert abs(float(acts[1].ravel()[0]) - float(0.5 * normed.ravel()[0] * (1 + np.tanh(
        math.sqrt(2 / math.pi) * (normed.ravel()[0] + 0.044715 * normed.ravel()[0] ** 3))))) > 0  # the two differ


def test_batchnorm_trains_on_batch_statistics_and_evaluates_on_running_ones():
    task = float_task((3,), [BatchNorm(momentum=0.25, epsilon=0.01), Dense(1)], n=6,
                      optimizer=SGD(learning_rate=1e-9))
    w = perturbed(task)
    x = task.data.x_train.astype(np.float64)
    batch_mean, batch_var = x.mean(0), x.var(0)  # biased variance
    trained = ref.optimizer_steps(task, w, [(x, task.data.y_train)])
    np.testing.assert_allclose(trained["0.BatchNorm.running_mean"],
                               0.75 * w["0.BatchNorm.running_mean"] + 0.25 * batch_mean, rtol=1e-12)
    np.testing.assert_allclose(trained["0.BatchNorm.running_var"],
                               0.75 * w["0.BatchNorm.running_var"] + 0.25 * batch_var, rtol=1e-12)
    _, acts = ref.forward(task, w, x, return_activations=True)  # evaluation: the running statistics
    expected = (x - w["0.BatchNorm.running_mean"]) / np.sqrt(w["0.BatchNorm.running_var"] + 0.01) * w[
        "0.BatchNorm.gamma"] + w["0.BatchNorm.beta"]
    np.testing.assert_allclose(acts[0], expected, rtol=1e-12)
    # training: the batch's statistics, whatever the running ones hold
    normed = (x - batch_mean) / np.sqrt(batch_var + 0.01) * w["0.BatchNorm.gamma"] + w["0.BatchNorm.beta"]
    loss = ref.loss(task, w, x, task.data.y_train)
    out = normed @ w["1.Dense.kernel"] + w["1.Dense.bias"]
    assert loss == pytest.approx(float(np.mean((out - task.data.y_train) ** 2)), rel=1e-12)
    _, grads = ref.loss_and_grads(task, w, x, task.data.y_train)
    assert set(grads) == {"0.BatchNorm.gamma", "0.BatchNorm.beta", "1.Dense.kernel", "1.Dense.bias"}


def test_sequence_cross_entropy_is_the_mean_over_every_position():
    task = token_task([Embedding(4, 3), Dense(4)], vocab=4, length=3, n=2)
    w = perturbed(task)
    logits = ref.forward(task, w, task.data.x_train)
    y = task.data.y_train
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -np.mean([logp[b, t, y[b, t]] for b in range(2) for t in range(3)])
    assert ref.loss(task, w, task.data.x_train, y) == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------------------------------------ optimizers
def one_weight_task(optimizer) -> Task:
    x = np.array([[1.0], [2.0]], np.float32)
    y = np.array([[3.0], [1.0]], np.float32)
    return Task(name="w", data=Dataset(x, y, x, y), layers=(Dense(1, use_bias=False),), loss="mse",
                optimizer=optimizer, batch_size=2, epochs=1)


def test_adamw_clipping_and_schedule_two_steps_by_hand():
    schedule = WarmupCosine(warmup_steps=1, total_steps=3, final_ratio=0.2)
    opt = AdamW(learning_rate=0.1, beta1=0.8, beta2=0.9, epsilon=1e-3, weight_decay=0.5, clip_norm=0.5,
                schedule=schedule)
    task = one_weight_task(opt)
    x, y = task.data.x_train.astype(np.float64), task.data.y_train.astype(np.float64)
    w, m, v = 0.7, 0.0, 0.0
    for t in (1, 2):
        g = float(np.mean(2 * (x[:, 0] * w - y[:, 0]) * x[:, 0]))
        g = g * min(1.0, 0.5 / abs(g))  # the global norm of one tensor of one element
        rate = 0.1 * schedule.factor(t)
        w -= rate * 0.5 * w  # decoupled decay first
        m = 0.8 * m + 0.2 * g
        v = 0.9 * v + 0.1 * g * g
        w -= rate * (m / (1 - 0.8**t)) / (math.sqrt(v / (1 - 0.9**t)) + 1e-3)
    batches = [(task.data.x_train, task.data.y_train)] * 2
    out = ref.optimizer_steps(task, {"0.Dense.kernel": np.array([[0.7]])}, batches)
    assert out["0.Dense.kernel"][0, 0] == pytest.approx(w, rel=1e-12)
    assert schedule.factor(1) == 1.0 and schedule.factor(2) == pytest.approx(0.2 + 0.8 * 0.5)


def test_clipping_scales_every_gradient_by_the_global_norm():
    grads = {"a": np.array([[3.0, 0.0]]), "b": np.array([4.0])}
    clipped = ref.clip_by_global_norm(grads, 2.5)
    np.testing.assert_allclose(clipped["a"], [[1.5, 0.0]])
    np.testing.assert_allclose(clipped["b"], [2.0])
    assert ref.clip_by_global_norm(grads, 10.0)["b"][0] == 4.0  # under the norm: untouched


def test_keras_formula_decays_before_its_adam():
    opt = AdamW(learning_rate=0.1, weight_decay=0.5)
    task = one_weight_task(opt)
    batches = [(task.data.x_train, task.data.y_train)]
    keras = ref.optimizer_steps(task, {"0.Dense.kernel": np.array([[0.7]])}, batches, formula="keras")
    spec = ref.optimizer_steps(task, {"0.Dense.kernel": np.array([[0.7]])}, batches)
    # one step: both decay 0.7 by 5% and move by ~lr (Adam's first step is lr * sign(g)); they differ by epsilon
    assert keras["0.Dense.kernel"][0, 0] == pytest.approx(0.7 * 0.95 + 0.1, abs=1e-6)
    assert spec["0.Dense.kernel"][0, 0] == pytest.approx(0.7 * 0.95 + 0.1, abs=1e-6)


def test_adam_without_the_new_options_is_unchanged():
    plain, explicit = Adam(0.01), Adam(0.01, clip_norm=None, schedule=None)
    assert plain == explicit and plain.rate(5) == 0.01


def test_attention_has_no_key_bias():
    task = token_task([Embedding(5, 4), SelfAttention(2, 3), Dense(5)], vocab=5)
    assert [name for name in task.param_names() if "bias" in name] == [
        "1.SelfAttention.query.bias", "1.SelfAttention.value.bias", "1.SelfAttention.output.bias", "2.Dense.bias"]


def test_weights_of_another_model_are_one_line():
    task = float_task((3,), [BatchNorm(), Dense(1)])
    weights = initial_weights(task)
    del weights["0.BatchNorm.running_var"]
    with pytest.raises(XfbenchError, match=r"missing \['0.BatchNorm.running_var'\]"):
        ref.forward(task, weights, task.data.x_train)
