"""Tests of the NumPy float64 reference: naive-loop forward checks, finite-difference gradients, optimizer steps."""

from __future__ import annotations

import numpy as np
import pytest

from xfbench.errors import XfbenchError
from xfbench.tasks import SGD, Activation, Adam, AvgPool2D, Conv2D, Dataset, Dense, Flatten, MaxPool2D, Task
from xfbench.tasks import reference as ref
from xfbench.tasks.init import initial_weights
from xfbench.tasks.metrics import loss_value


def make_task(input_shape, layers, loss, n=8, optimizer=None, batch_size=4, seed=0) -> Task:
    """A task with random float32 inputs and targets of the right kind for ``loss``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *input_shape)).astype(np.float32)
    units = layers[-1].units
    if loss == "softmax_cross_entropy":
        y = rng.integers(0, units, size=n)
    elif loss == "mse":
        y = rng.normal(size=(n, units)).astype(np.float32)
    else:
        y = rng.integers(0, 2, size=(n, units)).astype(np.float32)
    return Task(name="t", data=Dataset(x, y, x[:2], y[:2]), layers=tuple(layers), loss=loss,
                optimizer=optimizer or SGD(0.1), batch_size=min(batch_size, n), epochs=1, seed=seed)


def random_weights(task: Task, seed: int = 1) -> dict[str, np.ndarray]:
    """Initial kernels plus non-zero biases (zero biases would hide bias-broadcasting bugs)."""
    rng = np.random.default_rng(seed)
    return {name: value.astype(np.float64) + (0.3 * rng.normal(size=value.shape) if name.endswith("bias") else 0)
            for name, value in initial_weights(task, seed).items()}


# --------------------------------------------------------------------------------------- naive references
def naive_conv(x, kernel, bias, strides, padding):
    """Direct loop over batch, output pixels and channels, padding computed from TensorFlow's rule by hand."""
    n, h, w, _ = x.shape
    kh, kw, _, o = kernel.shape
    sh, sw = strides
    if padding == "same":
        oh, ow = -(-h // sh), -(-w // sw)
        pad_h, pad_w = max((oh - 1) * sh + kh - h, 0), max((ow - 1) * sw + kw - w, 0)
        top, left = pad_h // 2, pad_w // 2
    else:
        oh, ow, top, left = (h - kh) // sh + 1, (w - kw) // sw + 1, 0, 0
    out = np.zeros((n, oh, ow, o))
    for b in range(n):
        for r in range(oh):
            for s in range(ow):
                for f in range(o):
                    total = bias[f]
                    for i in range(kh):
                        for j in range(kw):
                            row, col = r * sh + i - top, s * sw + j - left
                            if 0 <= row < h and 0 <= col < w:
                                total += x[b, row, col, :] @ kernel[i, j, :, f]
                    out[b, r, s, f] = total
    return out


def naive_pool(x, size, strides, reduce):
    n, h, w, c = x.shape
    oh, ow = (h - size[0]) // strides[0] + 1, (w - size[1]) // strides[1] + 1
    out = np.zeros((n, oh, ow, c))
    for r in range(oh):
        for s in range(ow):
            window = x[:, r * strides[0]: r * strides[0] + size[0], s * strides[1]: s * strides[1] + size[1], :]
            out[:, r, s, :] = reduce(window, axis=(1, 2))
    return out


# ------------------------------------------------------------------------------------------- forward
@pytest.mark.parametrize("kernel_size, strides, padding", [
    ((3, 2), (2, 2), "same"), ((2, 4), (1, 1), "same"), ((4, 3), (2, 3), "same"), ((3, 2), (2, 1), "valid"),
])
def test_conv_forward_matches_naive_loop(kernel_size, strides, padding):
    task = make_task((7, 5, 3), [Conv2D(4, kernel_size, strides, padding), Flatten(), Dense(2)], "mse", n=2)
    weights = random_weights(task)
    x = task.data.x_train.astype(np.float64)
    _, acts = ref.forward(task, weights, x, return_activations=True)
    expected = naive_conv(x, weights["0.Conv2D.kernel"], weights["0.Conv2D.bias"], strides, padding)
    assert acts[0].shape == expected.shape == (2, *task.shapes[1])
    np.testing.assert_allclose(acts[0], expected, rtol=1e-12, atol=1e-12)


def test_same_padding_puts_the_extra_pixel_bottom_right():
    # 1x1 input channel of ones; a 2x2 kernel that only reads its top-left tap. With 'same', stride 1 the
    # total padding is 1 per axis, all of it after: the output equals the input (no shift).
    x = np.arange(12, dtype=np.float32).reshape(1, 3, 4, 1)
    task = make_task((3, 4, 1), [Conv2D(1, 2, padding="same"), Flatten(), Dense(1)], "mse", n=2)
    weights = random_weights(task)
    weights["0.Conv2D.kernel"] = np.array([[1.0, 0.0], [0.0, 0.0]]).reshape(2, 2, 1, 1)
    weights["0.Conv2D.bias"] = np.zeros(1)
    _, acts = ref.forward(task, weights, x, return_activations=True)
    np.testing.assert_array_equal(acts[0], x)


@pytest.mark.parametrize("pool_size, strides", [((2, 2), None), ((3, 2), (2, 1)), ((2, 3), (1, 2))])
def test_pools_match_naive_loop(pool_size, strides):
    layers = [MaxPool2D(pool_size, strides), AvgPool2D(1), Flatten(), Dense(1)]
    task = make_task((7, 5, 3), layers, "mse", n=2)
    x = task.data.x_train.astype(np.float64)
    stride_pair = pool_size if strides is None else strides
    _, acts = ref.forward(task, random_weights(task), x, return_activations=True)
    np.testing.assert_array_equal(acts[0], naive_pool(x, pool_size, stride_pair, np.max))
    avg = make_task((7, 5, 3), [AvgPool2D(pool_size, strides), Flatten(), Dense(1)], "mse", n=2)
    _, acts = ref.forward(avg, random_weights(avg), x, return_activations=True)
    np.testing.assert_allclose(acts[0], naive_pool(x, pool_size, stride_pair, np.mean), rtol=1e-13)


def test_forward_dense_activations_and_flatten_order():
    task = make_task((2, 3, 2), [Flatten(), Dense(3, "relu"), Dense(2, "sigmoid"), Activation("tanh"), Dense(2)], "mse")
    w = random_weights(task)
    x = task.data.x_train.astype(np.float64)
    flat = np.stack([x[:, r, c, ch] for r in range(2) for c in range(3) for ch in range(2)], axis=1)  # H, W, C
    h1 = np.maximum(flat @ w["1.Dense.kernel"] + w["1.Dense.bias"], 0)
    h2 = np.tanh(1 / (1 + np.exp(-(h1 @ w["2.Dense.kernel"] + w["2.Dense.bias"]))))
    out, acts = ref.forward(task, w, task.data.x_train, return_activations=True)
    np.testing.assert_array_equal(acts[0], flat)
    np.testing.assert_allclose(out, h2 @ w["4.Dense.kernel"] + w["4.Dense.bias"], rtol=1e-12)
    assert out.dtype == np.float64 and [a.shape[1:] for a in acts] == list(task.shapes[1:])
    assert ref.loss(task, w, task.data.x_train, task.data.y_train) == pytest.approx(
        loss_value("mse", out, task.data.y_train), rel=1e-15)


# ------------------------------------------------------------------------------------------ gradients
GRADIENT_CASES = {
    "conv-same-stride2-maxpool-overlap-softmax": (
        (7, 5, 3),
        [Conv2D(4, (3, 2), strides=2, padding="same", activation="tanh"), MaxPool2D(2, strides=1), Flatten(),
         Dense(5, "relu"), Dense(3)],
        "softmax_cross_entropy",
    ),
    "conv-valid-strided-avgpool-mse": (
        (7, 5, 3),
        [Conv2D(3, 2, strides=(2, 1), activation="sigmoid"), AvgPool2D((2, 3), strides=1), Activation("tanh"),
         Flatten(), Dense(2)],
        "mse",
    ),
    "conv-same-even-kernel-pools-drop-edges-bce": (
        (7, 5, 3),
        [Conv2D(3, (2, 4), padding="same", activation="relu"), MaxPool2D(2), Conv2D(2, (2, 1), strides=(1, 2),
         padding="same"), AvgPool2D((1, 1)), Activation("sigmoid"), Flatten(), Dense(1)],
        "sigmoid_binary_cross_entropy",
    ),
    "mlp-activations-bce": (
        (6,), [Dense(4, "relu"), Dense(4, "sigmoid"), Activation("relu"), Dense(3, "tanh"), Activation("linear"),
               Dense(2)],
        "sigmoid_binary_cross_entropy",
    ),
}


def central_difference(task, weights: dict[str, np.ndarray], name: str, x: np.ndarray, y: np.ndarray,
                       h: float) -> np.ndarray:
    """The gradient of the reference's loss with respect to tensor ``name``, by central differences of step ``h``."""
    w = weights[name]
    numeric = np.zeros_like(w)
    for index in np.ndindex(w.shape):
        plus, minus = dict(weights), dict(weights)
        plus[name], minus[name] = w.copy(), w.copy()
        plus[name][index] += h
        minus[name][index] -= h
        numeric[index] = (ref.loss(task, plus, x, y) - ref.loss(task, minus, x, y)) / (2 * h)
    return numeric


@pytest.mark.parametrize("case", sorted(GRADIENT_CASES))
def test_gradients_match_central_finite_differences(case):
    input_shape, layers, loss = GRADIENT_CASES[case]
    task = make_task(input_shape, layers, loss, n=5, batch_size=5)
    weights = random_weights(task)
    x, y = task.data.x_train, task.data.y_train
    value, grads = ref.loss_and_grads(task, weights, x, y)
    assert value == pytest.approx(ref.loss(task, weights, x, y), rel=1e-14)
    assert list(grads) == task.param_names()
    h = 1e-6
    for name, w in weights.items():
        assert grads[name].shape == w.shape and grads[name].dtype == np.float64
        numeric = central_difference(task, weights, name, x, y, h)
        assert np.abs(numeric).max() > 1e-4, f"{name}: the gradient is trivially zero, the check is vacuous"
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-5, atol=1e-8, err_msg=name)


def test_max_pool_gradient_goes_to_the_first_maximum():
    # Channel 0 is constant, so with kernel (1, 0) every pooled value ties; channel 1 records the position.
    # d loss / d kernel[.., 1, 0] = upstream * channel1[routed position], so it reveals which tie won.
    x = np.zeros((1, 2, 4, 2), np.float32)
    x[..., 0] = 1.0
    x[0, :, :, 1] = [[1, 2, 5, 6], [3, 4, 7, 8]]
    task = make_task((2, 4, 2), [Conv2D(1, 1), MaxPool2D(2), Flatten(), Dense(1)], "mse")
    weights = {"0.Conv2D.kernel": np.array([1.0, 0.0]).reshape(1, 1, 2, 1), "0.Conv2D.bias": np.zeros(1),
               "3.Dense.kernel": np.array([[1.0], [10.0]]), "3.Dense.bias": np.zeros(1)}
    _, grads = ref.loss_and_grads(task, weights, x, np.zeros((1, 1)))
    upstream = 2 * (1.0 + 10.0)  # d mse / d output = 2 * (11 - 0); pooled values are both 1
    assert grads["0.Conv2D.kernel"][0, 0, 1, 0] == pytest.approx(upstream * (1 * 1 + 10 * 5))


# ------------------------------------------------------------------------------------------ optimizers
def linear_task(optimizer):
    x = np.array([[1.0, 2.0], [0.5, -1.0], [2.0, 0.0], [-1.0, 1.0]], np.float32)
    y = np.array([[1.0], [0.0], [2.0], [-1.0]], np.float32)
    return Task(name="lin", data=Dataset(x, y, x, y), layers=(Dense(1),), loss="mse", optimizer=optimizer,
                batch_size=2, epochs=1)


def hand_grad(w, b, x, y):
    """d mean((x w + b - y)^2) for a linear model, written out."""
    residual = x @ w + b - y
    return 2 * x.T @ residual / len(x), 2 * residual.sum(axis=0) / len(x)


BATCHES = [(np.array([[1.0, 2.0], [0.5, -1.0]]), np.array([[1.0], [0.0]])),
           (np.array([[2.0, 0.0], [-1.0, 1.0]]), np.array([[2.0], [-1.0]]))]
START = {"0.Dense.kernel": np.array([[0.3], [-0.2]]), "0.Dense.bias": np.array([0.1])}


def test_sgd_momentum_two_steps_by_hand():
    lr, mu = 0.1, 0.9
    w, b = START["0.Dense.kernel"], START["0.Dense.bias"]
    gw, gb = hand_grad(w, b, *BATCHES[0])
    bw, bb = gw, gb                          # buf = 0.9 * 0 + g
    w, b = w - lr * bw, b - lr * bb
    gw, gb = hand_grad(w, b, *BATCHES[1])
    bw, bb = mu * bw + gw, mu * bb + gb
    w, b = w - lr * bw, b - lr * bb
    new = ref.optimizer_steps(linear_task(SGD(lr, momentum=mu)), START, iter(BATCHES), num_steps=2)
    np.testing.assert_allclose(new["0.Dense.kernel"], w, rtol=1e-14)
    np.testing.assert_allclose(new["0.Dense.bias"], b, rtol=1e-14)
    # the first step by numbers: residuals [-1, 0.45]; grad w = [-1 + 0.225, -2 - 0.45] = [-0.775, -2.45]
    one = ref.optimizer_steps(linear_task(SGD(lr, momentum=mu)), START, BATCHES[:1])
    np.testing.assert_allclose(one["0.Dense.kernel"], [[0.3 + 0.0775], [-0.2 + 0.245]], rtol=1e-14)


def adam_by_hand(update) -> dict[str, np.ndarray]:
    """Two Adam steps (lr 0.05, betas 0.8 / 0.9, eps 1e-3) on BATCHES from START, written out; ``update(m, v, t)``
    is the step subtracted from a weight, the one place the spec's and Keras' formulas differ."""
    params = {name: value.copy() for name, value in START.items()}
    m = {name: 0.0 for name in params}
    v = {name: 0.0 for name in params}
    for t, (x, y) in enumerate(BATCHES, start=1):
        gw, gb = hand_grad(params["0.Dense.kernel"], params["0.Dense.bias"], x, y)
        for name, g in (("0.Dense.kernel", gw), ("0.Dense.bias", gb)):
            m[name] = 0.8 * m[name] + 0.2 * g
            v[name] = 0.9 * v[name] + 0.1 * g * g
            params[name] = params[name] - update(m[name], v[name], t)
    return params


def test_adam_two_steps_by_hand():
    opt = Adam(learning_rate=0.05, beta1=0.8, beta2=0.9, epsilon=1e-3)
    params = adam_by_hand(lambda m, v, t: 0.05 * (m / (1 - 0.8**t)) / (np.sqrt(v / (1 - 0.9**t)) + 1e-3))
    new, losses = ref.optimizer_steps(linear_task(opt), START, BATCHES, return_losses=True)
    for name, value in params.items():
        np.testing.assert_allclose(new[name], value, rtol=1e-14)
    # step 1 of Adam moves each weight by lr * |g| / (|g| + eps) against the gradient's sign
    assert new is not START and START["0.Dense.kernel"][0, 0] == 0.3
    assert losses[0] == pytest.approx(np.mean([1.0, 0.45**2]), rel=1e-14)
    first = ref.optimizer_steps(linear_task(opt), START, BATCHES[:1])
    np.testing.assert_allclose(first["0.Dense.kernel"][1, 0], -0.2 + 0.05 * 2.45 / (2.45 + 1e-3), rtol=1e-14)


def test_keras_adam_two_steps_by_hand():
    """Keras' Adam: epsilon before the bias correction, ``w -= lr*sqrt(1-b2**t)/(1-b1**t) * m/(sqrt(v)+eps)``, with
    Keras' float32 arithmetic. Written out in float64 it agrees to float32 precision and is measurably not the spec's
    formula; SGD's formula is the same under both names."""
    opt = Adam(learning_rate=0.05, beta1=0.8, beta2=0.9, epsilon=1e-3)
    params = adam_by_hand(lambda m, v, t: 0.05 * np.sqrt(1 - 0.9**t) / (1 - 0.8**t) * m / (np.sqrt(v) + 1e-3))
    keras = ref.optimizer_steps(linear_task(opt), START, BATCHES, formula="keras")
    spec = ref.optimizer_steps(linear_task(opt), START, BATCHES)
    for name, value in params.items():
        np.testing.assert_allclose(keras[name], value, rtol=3e-7)
        assert np.abs(keras[name] - spec[name]).max() > 1e-4  # epsilon's place matters at eps = 1e-3
    sgd = linear_task(SGD(0.1, momentum=0.9))
    for name, value in ref.optimizer_steps(sgd, START, BATCHES, formula="keras").items():
        np.testing.assert_array_equal(value, ref.optimizer_steps(sgd, START, BATCHES)[name])
    with pytest.raises(XfbenchError, match="unknown optimizer formula 'optax'; choose one of: keras, spec"):
        ref.optimizer_steps(sgd, START, BATCHES, formula="optax")


def test_num_steps_and_task_batches():
    task = linear_task(SGD(0.1))
    batches = list(ref.task_batches(task, 3))  # 2 steps per epoch: epoch 0 then the first batch of epoch 1
    expected = [*task.epoch_order(0), task.epoch_order(1)[0]]
    assert len(batches) == 3
    for (x, _), indices in zip(batches, expected, strict=True):
        np.testing.assert_array_equal(x, task.data.x_train[indices])
    with pytest.raises(XfbenchError, match="only 2 batches"):
        ref.optimizer_steps(task, START, BATCHES, num_steps=3)
    with pytest.raises(XfbenchError, match="expects"):
        ref.forward(task, {"0.Dense.kernel": np.zeros((2, 1))}, BATCHES[0][0])
