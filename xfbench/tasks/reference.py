"""The NumPy float64 ground truth of a task: forward pass, loss, hand-written gradients and optimizer steps.

Every backend is compared against this module, so it is written to be read and checked rather than to be fast:
plain NumPy in float64, no framework imports, vectorized over pixels (loops only over kernel taps), with a
hand-written backward pass for every layer type of :mod:`xfbench.tasks.spec`.

Conventions (the neutral ones): images are NHWC, conv kernels HWIO, dense kernels (in, out), ``Flatten`` in
H, W, C order, ``padding="same"`` with TensorFlow's split (the extra pixel at the bottom/right). Weights are dicts
keyed like :meth:`Task.param_names` (``'0.Conv2D.kernel'``, ...); gradients use the same keys and layouts.

Conventions at non-differentiable points, chosen to match the frameworks:

- relu: the derivative at exactly 0 is 0.
- max pool: the gradient of a window goes to its *first* maximum in row-major order (top-to-bottom, then
  left-to-right), as TensorFlow, PyTorch and XLA do; overlapping windows add their gradients.

Example:
    >>> import numpy as np
    >>> from xfbench.tasks import Task, Dataset, Dense, SGD, initial_weights
    >>> x = np.arange(12, dtype="float32").reshape(4, 3) / 10
    >>> task = Task(name="t", data=Dataset.split(x, x[:, :1] * 2, 0.25), layers=(Dense(1),), loss="mse",
    ...             optimizer=SGD(0.1), batch_size=3, epochs=1)
    >>> value, grads = loss_and_grads(task, initial_weights(task), task.data.x_train, task.data.y_train)
    >>> sorted(grads), grads["0.Dense.kernel"].shape
    (['0.Dense.bias', '0.Dense.kernel'], (3, 1))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import islice

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from xfbench.errors import XfbenchError, unknown_name
from xfbench.tasks.init import param_shapes
from xfbench.tasks.metrics import loss_value
from xfbench.tasks.spec import (
    SGD,
    Activation,
    Adam,
    AvgPool2D,
    Conv2D,
    Dense,
    Flatten,
    Layer,
    MaxPool2D,
    Task,
    same_padding,
)

Weights = dict[str, np.ndarray]


# --------------------------------------------------------------------------------------------- helpers
def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))  # 1 / (1 + exp(-z)) without overflow


def _activate(name: str, z: np.ndarray) -> np.ndarray:
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "sigmoid":
        return _sigmoid(z)
    if name == "tanh":
        return np.tanh(z)
    return z  # linear


def _activation_backward(name: str, out: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """The gradient w.r.t. the pre-activation, from the activation's *output* (enough for all four)."""
    if name == "relu":
        return grad * (out > 0)  # derivative 0 at exactly 0
    if name == "sigmoid":
        return grad * out * (1.0 - out)
    if name == "tanh":
        return grad * (1.0 - out * out)
    return grad


def _prefix(index: int, layer: Layer) -> str:
    return f"{index}.{type(layer).__name__}"


def _pad(x: np.ndarray, layer: Conv2D) -> tuple[np.ndarray, tuple[int, int]]:
    """``x`` zero-padded for ``layer`` and the (top, left) padding; TensorFlow's rule for 'same'."""
    if layer.padding == "valid":
        return x, (0, 0)
    (top, bottom), (left, right) = (
        same_padding(x.shape[axis + 1], layer.kernel_size[axis], layer.strides[axis]) for axis in (0, 1)
    )
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0))), (top, left)


def _windows(x: np.ndarray, size: tuple[int, int], strides: tuple[int, int]) -> np.ndarray:
    """A read-only view of the (N, out_h, out_w, C, kh, kw) windows of an NHWC batch (valid padding)."""
    return sliding_window_view(x, size, axis=(1, 2))[:, :: strides[0], :: strides[1]]


def _scatter_taps(
    shape: tuple[int, ...], size: tuple[int, int], strides: tuple[int, int],
    tap_grad: Callable[[int, int], np.ndarray],
) -> np.ndarray:
    """Sum window gradients back onto the input: tap (i, j) of every window sees input pixel
    (i + stride_h * oh, j + stride_w * ow); ``tap_grad(i, j)`` is its (N, out_h, out_w, C) gradient."""
    dx = np.zeros(shape)
    for i in range(size[0]):
        for j in range(size[1]):
            g = tap_grad(i, j)
            rows = slice(i, i + strides[0] * (g.shape[1] - 1) + 1, strides[0])
            cols = slice(j, j + strides[1] * (g.shape[2] - 1) + 1, strides[1])
            dx[:, rows, cols, :] += g
    return dx


def _checked_weights(task: Task, weights: Mapping[str, np.ndarray]) -> Weights:
    expected = param_shapes(task)
    if set(weights) != set(expected):
        raise XfbenchError(
            f"weights have keys {sorted(weights)}, task {task.name!r} expects {sorted(expected)}; "
            "build them with xfbench.tasks.initial_weights(task)"
        )
    for name, shape in expected.items():
        if np.shape(weights[name]) != shape:
            raise XfbenchError(f"weight {name!r} has shape {np.shape(weights[name])}, expected {shape} (neutral layout)")
    return {name: np.asarray(weights[name], np.float64) for name in expected}


def _checked_inputs(task: Task, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.shape[1:] != task.input_shape:
        raise XfbenchError(f"inputs have shape {x.shape}, task {task.name!r} expects (batch, *{task.input_shape})")
    return x


# --------------------------------------------------------------------------------------------- forward
def _layer_forward(layer: Layer, prefix: str, weights: Weights, x: np.ndarray) -> np.ndarray:
    if isinstance(layer, Dense):
        z = x @ weights[f"{prefix}.kernel"] + weights[f"{prefix}.bias"]
        return _activate(layer.activation, z)
    if isinstance(layer, Conv2D):
        padded, _ = _pad(x, layer)
        windows = _windows(padded, layer.kernel_size, layer.strides)  # (N, oh, ow, C, kh, kw)
        kernel = weights[f"{prefix}.kernel"].transpose(2, 0, 1, 3)  # HWIO -> (C, kh, kw, O)
        z = np.tensordot(windows, kernel, axes=3) + weights[f"{prefix}.bias"]
        return _activate(layer.activation, z)
    if isinstance(layer, MaxPool2D):
        return _windows(x, layer.pool_size, layer.strides).max(axis=(4, 5))
    if isinstance(layer, AvgPool2D):
        return _windows(x, layer.pool_size, layer.strides).mean(axis=(4, 5))
    if isinstance(layer, Flatten):
        return x.reshape(len(x), -1)  # C order of NHWC = H, W, C
    if isinstance(layer, Activation):
        return _activate(layer.name, x)
    raise XfbenchError(f"{type(layer).__name__} is not an xfbench layer")


def _forward_all(task: Task, weights: Weights, x: np.ndarray) -> list[np.ndarray]:
    """``[input, output of layer 0, output of layer 1, ...]`` in float64."""
    values = [x]
    for index, layer in enumerate(task.layers):
        values.append(_layer_forward(layer, _prefix(index, layer), weights, values[-1]))
    return values


def forward(
    task: Task, weights: Mapping[str, np.ndarray], x: np.ndarray, return_activations: bool = False
) -> np.ndarray | tuple[np.ndarray, list[np.ndarray]]:
    """The model's outputs (logits for the cross-entropy losses, raw values for mse) in float64.

    Args:
        task: The task whose layers define the model.
        weights: Neutral weights keyed like :meth:`Task.param_names` (any float dtype; computed in float64).
        x: A batch of inputs, shape ``(batch, *task.input_shape)`` (NHWC for images).
        return_activations: Also return every layer's output (after its activation), one per layer, to find
            the first layer where a backend differs.

    Returns:
        The outputs ``(batch, units)``, or ``(outputs, activations)`` with ``len(activations) == len(task.layers)``.

    Example:
        >>> from xfbench.tasks import get_task, initial_weights
        >>> task = get_task("cnn")
        >>> out, acts = forward(task, initial_weights(task), task.data.x_test[:2], return_activations=True)
        >>> out.shape, out.dtype, [a.shape[1:] for a in acts] == list(task.shapes[1:])
        ((2, 10), dtype('float64'), True)
    """
    values = _forward_all(task, _checked_weights(task, weights), _checked_inputs(task, x))
    return (values[-1], values[1:]) if return_activations else values[-1]


# ---------------------------------------------------------------------------------------------- losses
def _loss_and_output_grad(task: Task, outputs: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """The mean loss (metrics.loss_value's formula) and its gradient w.r.t. the model outputs."""
    if task.loss == "softmax_cross_entropy":
        labels = np.asarray(y, np.int64)
        value = loss_value(task.loss, outputs, labels)
        shifted = outputs - outputs.max(axis=1, keepdims=True)
        grad = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)  # softmax
        grad[np.arange(len(labels)), labels] -= 1.0
        return value, grad / len(labels)
    targets = np.asarray(y, np.float64)
    value = loss_value(task.loss, outputs, targets)
    if task.loss == "mse":  # the mean over every element, as metrics.loss_value
        return value, 2.0 * (outputs - targets) / outputs.size
    return value, (_sigmoid(outputs) - targets) / outputs.size  # sigmoid_binary_cross_entropy


def loss(task: Task, weights: Mapping[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    """The task's loss on one batch: the mean over the batch, with :func:`metrics.loss_value`'s formulas.

    Example:
        >>> from xfbench.tasks import get_task, initial_weights
        >>> task = get_task("mlp")
        >>> round(loss(task, initial_weights(task), task.data.x_test, task.data.y_test), 1)
        2.3
    """
    return loss_value(task.loss, forward(task, weights, x), y)  # type: ignore[arg-type]


# -------------------------------------------------------------------------------------------- backward
def _layer_backward(
    layer: Layer, prefix: str, weights: Weights, x: np.ndarray, out: np.ndarray, grad: np.ndarray, grads: Weights
) -> np.ndarray:
    """Given d loss / d ``out``, store the layer's parameter gradients in ``grads``; return d loss / d ``x``."""
    if isinstance(layer, Dense):
        dz = _activation_backward(layer.activation, out, grad)
        grads[f"{prefix}.kernel"] = x.T @ dz
        grads[f"{prefix}.bias"] = dz.sum(axis=0)
        return dz @ weights[f"{prefix}.kernel"].T
    if isinstance(layer, Conv2D):
        dz = _activation_backward(layer.activation, out, grad)  # (N, oh, ow, O)
        padded, (top, left) = _pad(x, layer)
        windows = _windows(padded, layer.kernel_size, layer.strides)
        grads[f"{prefix}.kernel"] = np.tensordot(windows, dz, axes=([0, 1, 2], [0, 1, 2])).transpose(1, 2, 0, 3)
        grads[f"{prefix}.bias"] = dz.sum(axis=(0, 1, 2))
        kernel = weights[f"{prefix}.kernel"]
        dpadded = _scatter_taps(padded.shape, layer.kernel_size, layer.strides, lambda i, j: dz @ kernel[i, j].T)
        return dpadded[:, top : top + x.shape[1], left : left + x.shape[2], :]
    if isinstance(layer, MaxPool2D):
        windows = _windows(x, layer.pool_size, layer.strides)
        first_max = windows.reshape(*windows.shape[:4], -1).argmax(axis=-1)  # argmax: the first, row-major
        width = layer.pool_size[1]
        return _scatter_taps(x.shape, layer.pool_size, layer.strides, lambda i, j: grad * (first_max == i * width + j))
    if isinstance(layer, AvgPool2D):
        area = layer.pool_size[0] * layer.pool_size[1]
        return _scatter_taps(x.shape, layer.pool_size, layer.strides, lambda i, j: grad / area)
    if isinstance(layer, Flatten):
        return grad.reshape(x.shape)
    if isinstance(layer, Activation):
        return _activation_backward(layer.name, out, grad)
    raise XfbenchError(f"{type(layer).__name__} is not an xfbench layer")


def loss_and_grads(
    task: Task, weights: Mapping[str, np.ndarray], x: np.ndarray, y: np.ndarray
) -> tuple[float, Weights]:
    """The mean loss on one batch and its gradient w.r.t. every weight, by a hand-written backward pass.

    Args:
        task: The task (layers and loss).
        weights: Neutral weights keyed like :meth:`Task.param_names`.
        x: A batch of inputs, shape ``(batch, *task.input_shape)``.
        y: Its targets: int labels ``(batch,)`` for softmax cross-entropy, floats ``(batch, units)`` otherwise.

    Returns:
        ``(loss, grads)``: a float and float64 gradients keyed and laid out like ``weights``.

    Example:
        >>> from xfbench.tasks import get_task, initial_weights
        >>> task = get_task("cnn")
        >>> x, y = task.data.x_train[:4], task.data.y_train[:4]
        >>> value, grads = loss_and_grads(task, initial_weights(task), x, y)
        >>> grads["0.Conv2D.kernel"].shape, value == loss(task, initial_weights(task), x, y)
        ((3, 3, 1, 16), True)
    """
    w = _checked_weights(task, weights)
    values = _forward_all(task, w, _checked_inputs(task, x))
    value, grad = _loss_and_output_grad(task, values[-1], y)
    grads: Weights = {}
    for index in reversed(range(len(task.layers))):
        layer = task.layers[index]
        grad = _layer_backward(layer, _prefix(index, layer), w, values[index], values[index + 1], grad, grads)
    return value, {name: grads[name] for name in w}


# ------------------------------------------------------------------------------------------- optimizers
def task_batches(task: Task, num_steps: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The task's training batches ``(x, y)`` in training order: epoch 0, 1, ... by :meth:`Task.epoch_order`.

    Args:
        task: The task.
        num_steps: How many batches (default: ``task.num_steps``, every step of training).

    Example:
        >>> from xfbench.tasks import get_task
        >>> task = get_task("mlp")
        >>> [x.shape for x, _ in task_batches(task, 2)]
        [(32, 64), (32, 64)]
    """
    num_steps = task.num_steps if num_steps is None else num_steps
    step, epoch = 0, 0
    while step < num_steps:
        for indices in task.epoch_order(epoch)[: num_steps - step]:
            yield task.data.x_train[indices], task.data.y_train[indices]
            step += 1
        epoch += 1


def _keras_adam_update(opt: Adam, step: int, w: np.ndarray, m: np.ndarray, v: np.ndarray, g: np.ndarray,
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One step of Keras 3's Adam exactly as ``keras/src/optimizers/adam.py`` computes it: in the variables' dtype,
    float32, from the float64 gradient rounded to float32. ``alpha = lr * sqrt(1 - b2**t) / (1 - b1**t)``,
    ``m += (g - m) * (1 - b1)``, ``v += (g*g - v) * (1 - b2)``, ``w -= m * alpha / (sqrt(v) + eps)``.

    In float32 (not float64) because that arithmetic is part of Keras' formula: measured on cnn28 after 10 steps,
    it moves the first conv bias by 1.2e-4 (relative in norm) from the same formula in float64, more than parity's
    tolerance; against this reference the Keras backends agree to ~1e-6, like the native ones against theirs.
    """
    f32 = np.float32
    one, t = f32(1), f32(step)
    alpha = f32(opt.learning_rate) * np.sqrt(one - f32(opt.beta2) ** t) / (one - f32(opt.beta1) ** t)
    g32, m32, v32 = g.astype(f32), m.astype(f32), v.astype(f32)
    m32 = m32 + (g32 - m32) * f32(1 - opt.beta1)
    v32 = v32 + (g32 * g32 - v32) * f32(1 - opt.beta2)
    w32 = w.astype(f32) - (m32 * alpha) / (np.sqrt(v32) + f32(opt.epsilon))
    return w32.astype(np.float64), m32.astype(np.float64), v32.astype(np.float64)


# optimizer formulas a backend can follow: the spec's, or Keras' (Adam's epsilon before the bias correction)
FORMULAS = ("spec", "keras")


def optimizer_steps(
    task: Task, weights: Mapping[str, np.ndarray], batches: Iterable[tuple[np.ndarray, np.ndarray]],
    num_steps: int | None = None, return_losses: bool = False, formula: str = "spec",
) -> Weights | tuple[Weights, list[float]]:
    """Train from ``weights`` with the task's optimizer, one step per batch, in float64.

    SGD: ``buf = momentum * buf + g; w -= lr * buf`` (buf starts at 0). Adam, at step t from 1:
    ``m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g; w -= lr * (m / (1-b1**t)) / (sqrt(v / (1-b2**t)) + eps)``.
    With ``formula="keras"`` Adam adds epsilon before the bias correction, as Keras does:
    ``w -= lr * sqrt(1-b2**t) / (1-b1**t) * m / (sqrt(v) + eps)``, with Keras' own float32 update arithmetic
    (:func:`_keras_adam_update`); the gradients stay float64. The optimizer state starts fresh at zero.

    Args:
        task: The task (model, loss and optimizer).
        weights: The starting weights (not modified).
        batches: ``(x, y)`` batches, e.g. :func:`task_batches`.
        num_steps: Take exactly this many batches (an error if there are fewer); default: all of them.
        return_losses: Also return the loss of each step (before its update).
        formula: ``"spec"`` (the task's formulas) or ``"keras"`` (Keras' Adam; its SGD is the spec's).

    Returns:
        The new float64 weights, or ``(weights, losses)``.

    Example:
        >>> from xfbench.tasks import get_task, initial_weights
        >>> task = get_task("regression", num_samples=100)
        >>> new, losses = optimizer_steps(task, initial_weights(task), task_batches(task, 3), return_losses=True)
        >>> len(losses), losses[2] < losses[0]
        (3, True)
    """
    if formula not in FORMULAS:
        raise unknown_name("optimizer formula", formula, FORMULAS)
    w = _checked_weights(task, weights)
    first = {name: np.zeros_like(value) for name, value in w.items()}  # SGD momentum buffer / Adam m
    second = {name: np.zeros_like(value) for name, value in w.items()}  # Adam v
    opt, losses = task.optimizer, []
    for step, (x, y) in enumerate(batches if num_steps is None else islice(batches, num_steps), start=1):
        value, grads = loss_and_grads(task, w, x, y)
        losses.append(value)
        for name, g in grads.items():
            if isinstance(opt, SGD):
                first[name] = opt.momentum * first[name] + g
                w[name] = w[name] - opt.learning_rate * first[name]
            elif formula == "keras":
                w[name], first[name], second[name] = _keras_adam_update(opt, step, w[name], first[name],
                                                                        second[name], g)
            else:
                first[name] = opt.beta1 * first[name] + (1 - opt.beta1) * g
                second[name] = opt.beta2 * second[name] + (1 - opt.beta2) * g * g
                m_hat = first[name] / (1 - opt.beta1**step)
                v_hat = second[name] / (1 - opt.beta2**step)
                w[name] = w[name] - opt.learning_rate * m_hat / (np.sqrt(v_hat) + opt.epsilon)
    if num_steps is not None and len(losses) < num_steps:
        raise XfbenchError(f"num_steps={num_steps} but only {len(losses)} batches were given; pass more batches")
    return (w, losses) if return_losses else w
