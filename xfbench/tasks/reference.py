"""The NumPy float64 ground truth of a task: forward pass, loss, hand-written gradients and optimizer steps.

Every backend is compared against this module, so it is written to be read and checked rather than to be fast:
plain NumPy in float64, no framework imports, vectorized over pixels and tokens (loops only over kernel taps), with
a hand-written backward pass for every layer type of :mod:`xfbench.tasks.layers` (checked against finite
differences in ``tests/test_reference.py``).

Conventions (the neutral ones): images are NHWC, conv kernels HWIO, dense kernels (in, out) on the last axis,
``Flatten`` in H, W, C order, ``padding="same"`` with TensorFlow's split (the extra pixel at the bottom/right),
attention projections (width, heads x head_size) with the heads outermost. Weights are dicts keyed like
:attr:`Task.tensors` (``'0.Conv2D.kernel'``, ..., and a BatchNorm's ``running_mean``/``running_var``); gradients
are keyed like :meth:`Task.param_names` (the trainable tensors only).

Training and evaluation: :func:`loss_and_grads` and :func:`optimizer_steps` run the model in training mode (a
BatchNorm normalizes with the batch's statistics, and :func:`optimizer_steps` updates its running ones);
:func:`forward` is evaluation (a BatchNorm uses its running statistics). No layer differs otherwise.

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

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.special import erf

from xfbench.errors import XfbenchError, unknown_name
from xfbench.tasks.metrics import loss_value
from xfbench.tasks.spec import (
    SGD,
    Activation,
    Adam,
    AdamW,
    AvgPool2D,
    BatchNorm,
    Conv2D,
    Dense,
    Embedding,
    Flatten,
    GlobalAvgPool2D,
    Layer,
    LayerNorm,
    MaxPool2D,
    PositionEmbedding,
    Residual,
    SelfAttention,
    Task,
    same_padding,
)

Weights = dict[str, np.ndarray]
GELU_TANH_C = math.sqrt(2.0 / math.pi)  # the tanh approximation: 0.5 z (1 + tanh(c (z + 0.044715 z^3)))


# --------------------------------------------------------------------------------------------- activations
def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))  # 1 / (1 + exp(-z)) without overflow


def _activate(name: str, z: np.ndarray) -> np.ndarray:
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "sigmoid":
        return _sigmoid(z)
    if name == "tanh":
        return np.tanh(z)
    if name == "gelu":  # exact: z * Phi(z)
        return 0.5 * z * (1.0 + erf(z / math.sqrt(2.0)))
    if name == "gelu_tanh":
        return 0.5 * z * (1.0 + np.tanh(GELU_TANH_C * (z + 0.044715 * z**3)))
    return z  # linear


def _activation_backward(name: str, z: np.ndarray, out: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """The gradient w.r.t. the pre-activation ``z``, given the activation's output ``out``."""
    if name == "relu":
        return grad * (z > 0)  # derivative 0 at exactly 0
    if name == "sigmoid":
        return grad * out * (1.0 - out)
    if name == "tanh":
        return grad * (1.0 - out * out)
    if name == "gelu":  # Phi(z) + z phi(z)
        return grad * (0.5 * (1.0 + erf(z / math.sqrt(2.0))) + z * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi))
    if name == "gelu_tanh":
        t = np.tanh(GELU_TANH_C * (z + 0.044715 * z**3))
        return grad * (0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * GELU_TANH_C * (1.0 + 3 * 0.044715 * z * z))
    return grad


# ------------------------------------------------------------------------------------------ conv helpers
def _pad(x: np.ndarray, layer: Conv2D) -> tuple[np.ndarray, tuple[int, int]]:
    """``x`` zero-padded for ``layer`` and the (top, left) padding; TensorFlow's rule for 'same'."""
    if layer.padding == "valid":
        return x, (0, 0)
    (top, bottom), (left, right) = (
        same_padding(x.shape[axis + 1], layer.kernel_size[axis], layer.strides[axis]) for axis in (0, 1)  # type: ignore[index]
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


# --------------------------------------------------------------------------------------------- the pass
@dataclass
class _Pass:
    """One pass through the model: its weights (float64), training or evaluation, and what the pass produced:
    the gradients (backward) and a BatchNorm's new running statistics (a training forward)."""

    w: Weights
    train: bool
    grads: Weights = field(default_factory=dict)
    state: Weights = field(default_factory=dict)


Tape = list[tuple[Layer, str, Any]]


def _stack_forward(layers: Sequence[Layer], x: np.ndarray, prefix: str, run: _Pass,
                   outputs: list[np.ndarray] | None = None) -> tuple[np.ndarray, Tape]:
    """Apply a stack of layers (the model, or a residual block's body or shortcut); the tape holds what each
    layer's backward needs, in order."""
    tape: Tape = []
    for index, layer in enumerate(layers):
        name = f"{prefix}{index}.{type(layer).__name__}"
        x, cache = _layer_forward(layer, name, x, run)
        tape.append((layer, name, cache))
        if outputs is not None:
            outputs.append(x)
    return x, tape


def _stack_backward(tape: Tape, grad: np.ndarray, run: _Pass) -> np.ndarray:
    for layer, name, cache in reversed(tape):
        grad = _layer_backward(layer, name, cache, grad, run)
    return grad


def _normalize(x: np.ndarray, axes: tuple[int, ...], epsilon: float) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                                np.ndarray]:
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)  # biased, as every framework normalizes
    inv = 1.0 / np.sqrt(var + epsilon)
    return (x - mean) * inv, inv, mean, var


def _normalize_backward(xhat: np.ndarray, inv: np.ndarray, dxhat: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """d loss / d x of ``xhat = (x - mean(x)) / sqrt(var(x) + eps)``, the statistics over ``axes``."""
    return inv * (dxhat - dxhat.mean(axis=axes, keepdims=True) - xhat * (dxhat * xhat).mean(axis=axes, keepdims=True))


def _heads(x: np.ndarray, heads: int) -> np.ndarray:
    """(N, T, heads * size) -> (N, heads, T, size)."""
    n, t, inner = x.shape
    return x.reshape(n, t, heads, inner // heads).transpose(0, 2, 1, 3)


def _merge(x: np.ndarray) -> np.ndarray:
    """(N, heads, T, size) -> (N, T, heads * size)."""
    n, h, t, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(n, t, h * d)


def _project(x: np.ndarray, w: Weights, name: str) -> np.ndarray:
    out = x @ w[f"{name}.kernel"]
    return out + w[f"{name}.bias"] if f"{name}.bias" in w else out


def _project_backward(x: np.ndarray, dout: np.ndarray, w: Weights, name: str, grads: Weights) -> np.ndarray:
    grads[f"{name}.kernel"] = x.reshape(-1, x.shape[-1]).T @ dout.reshape(-1, dout.shape[-1])
    if f"{name}.bias" in w:
        grads[f"{name}.bias"] = dout.reshape(-1, dout.shape[-1]).sum(axis=0)
    return dout @ w[f"{name}.kernel"].T


# --------------------------------------------------------------------------------------------- forward
def _layer_forward(layer: Layer, name: str, x: np.ndarray, run: _Pass) -> tuple[np.ndarray, Any]:
    """The layer's output and its cache for the backward pass."""
    w = run.w
    if isinstance(layer, Dense):
        z = _project(x, w, name)
        out = _activate(layer.activation, z)
        return out, (x, z, out)
    if isinstance(layer, Conv2D):
        padded, _ = _pad(x, layer)
        windows = _windows(padded, layer.kernel_size, layer.strides)  # type: ignore[arg-type]  # (N, oh, ow, C, kh, kw)
        kernel = w[f"{name}.kernel"].transpose(2, 0, 1, 3)  # HWIO -> (C, kh, kw, O)
        z = np.tensordot(windows, kernel, axes=3)
        if layer.use_bias:
            z = z + w[f"{name}.bias"]
        out = _activate(layer.activation, z)
        return out, (x, z, out)
    if isinstance(layer, MaxPool2D):
        return _windows(x, layer.pool_size, layer.strides).max(axis=(4, 5)), x  # type: ignore[arg-type]
    if isinstance(layer, AvgPool2D):
        return _windows(x, layer.pool_size, layer.strides).mean(axis=(4, 5)), x  # type: ignore[arg-type]
    if isinstance(layer, GlobalAvgPool2D):
        return x.mean(axis=(1, 2)), x.shape
    if isinstance(layer, Flatten):
        return x.reshape(len(x), -1), x.shape  # C order of NHWC = H, W, C
    if isinstance(layer, Activation):
        out = _activate(layer.name, x)
        return out, (x, out)
    if isinstance(layer, LayerNorm):
        xhat, inv, _, _ = _normalize(x, (-1,), layer.epsilon)
        return xhat * w[f"{name}.gamma"] + w[f"{name}.beta"], (xhat, inv)
    if isinstance(layer, BatchNorm):
        axes = tuple(range(x.ndim - 1))
        if run.train:
            xhat, inv, mean, var = _normalize(x, axes, layer.epsilon)
            m = layer.momentum
            run.state[f"{name}.running_mean"] = (1 - m) * w[f"{name}.running_mean"] + m * mean.reshape(-1)
            run.state[f"{name}.running_var"] = (1 - m) * w[f"{name}.running_var"] + m * var.reshape(-1)
        else:
            inv = 1.0 / np.sqrt(w[f"{name}.running_var"] + layer.epsilon)
            xhat = (x - w[f"{name}.running_mean"]) * inv
        return xhat * w[f"{name}.gamma"] + w[f"{name}.beta"], (xhat, inv, axes, run.train)
    if isinstance(layer, Embedding):
        ids = np.asarray(x, np.int64)
        return w[f"{name}.embeddings"][ids], ids
    if isinstance(layer, PositionEmbedding):
        return x + w[f"{name}.embeddings"][: x.shape[1]], x.shape
    if isinstance(layer, SelfAttention):
        q, k, v = (_heads(_project(x, w, f"{name}.{part}"), layer.heads) for part in ("query", "key", "value"))
        scores = layer.scale * (q @ k.transpose(0, 1, 3, 2))  # (N, heads, T, T)
        if layer.causal:
            length = x.shape[1]
            scores = np.where(np.tril(np.ones((length, length), bool)), scores, -np.inf)
        probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        mixed = _merge(probs @ v)
        return _project(mixed, w, f"{name}.output"), (x, q, k, v, probs, mixed)
    if isinstance(layer, Residual):
        body, body_tape = _stack_forward(layer.body, x, f"{name}.body.", run)
        shortcut, shortcut_tape = _stack_forward(layer.shortcut, x, f"{name}.shortcut.", run)
        z = body + shortcut
        out = _activate(layer.activation, z)
        return out, (body_tape, shortcut_tape, z, out)
    raise XfbenchError(f"{type(layer).__name__} is not an xfbench layer")


# -------------------------------------------------------------------------------------------- backward
def _layer_backward(layer: Layer, name: str, cache: Any, grad: np.ndarray, run: _Pass) -> np.ndarray:
    """Given d loss / d output, store the layer's parameter gradients in ``run.grads``; return d loss / d input."""
    w, grads = run.w, run.grads
    if isinstance(layer, Dense):
        x, z, out = cache
        return _project_backward(x, _activation_backward(layer.activation, z, out, grad), w, name, grads)
    if isinstance(layer, Conv2D):
        x, z, out = cache
        dz = _activation_backward(layer.activation, z, out, grad)  # (N, oh, ow, O)
        padded, (top, left) = _pad(x, layer)
        windows = _windows(padded, layer.kernel_size, layer.strides)  # type: ignore[arg-type]
        grads[f"{name}.kernel"] = np.tensordot(windows, dz, axes=([0, 1, 2], [0, 1, 2])).transpose(1, 2, 0, 3)
        if layer.use_bias:
            grads[f"{name}.bias"] = dz.sum(axis=(0, 1, 2))
        kernel = w[f"{name}.kernel"]
        dpadded = _scatter_taps(padded.shape, layer.kernel_size, layer.strides,  # type: ignore[arg-type]
                                lambda i, j: dz @ kernel[i, j].T)
        return dpadded[:, top : top + x.shape[1], left : left + x.shape[2], :]
    if isinstance(layer, MaxPool2D):
        x = cache
        windows = _windows(x, layer.pool_size, layer.strides)  # type: ignore[arg-type]
        first_max = windows.reshape(*windows.shape[:4], -1).argmax(axis=-1)  # argmax: the first, row-major
        width = layer.pool_size[1]  # type: ignore[index]
        return _scatter_taps(x.shape, layer.pool_size, layer.strides,  # type: ignore[arg-type]
                             lambda i, j: grad * (first_max == i * width + j))
    if isinstance(layer, AvgPool2D):
        area = layer.pool_size[0] * layer.pool_size[1]  # type: ignore[index]
        return _scatter_taps(cache.shape, layer.pool_size, layer.strides,  # type: ignore[arg-type]
                             lambda i, j: grad / area)
    if isinstance(layer, GlobalAvgPool2D):
        height, width = cache[1:3]
        return np.broadcast_to(grad[:, None, None, :] / (height * width), cache).copy()
    if isinstance(layer, Flatten):
        return grad.reshape(cache)
    if isinstance(layer, Activation):
        z, out = cache
        return _activation_backward(layer.name, z, out, grad)
    if isinstance(layer, LayerNorm):
        xhat, inv = cache
        grads[f"{name}.gamma"] = (grad * xhat).reshape(-1, xhat.shape[-1]).sum(axis=0)
        grads[f"{name}.beta"] = grad.reshape(-1, grad.shape[-1]).sum(axis=0)
        return _normalize_backward(xhat, inv, grad * w[f"{name}.gamma"], (-1,))
    if isinstance(layer, BatchNorm):
        xhat, inv, axes, train = cache
        grads[f"{name}.gamma"] = (grad * xhat).sum(axis=axes)
        grads[f"{name}.beta"] = grad.sum(axis=axes)
        dxhat = grad * w[f"{name}.gamma"]
        return _normalize_backward(xhat, inv, dxhat, axes) if train else dxhat * inv
    if isinstance(layer, Embedding):
        table = np.zeros_like(w[f"{name}.embeddings"])
        np.add.at(table, cache.reshape(-1), grad.reshape(-1, grad.shape[-1]))
        grads[f"{name}.embeddings"] = table
        return np.zeros(cache.shape)  # token ids have no gradient
    if isinstance(layer, PositionEmbedding):
        table = np.zeros_like(w[f"{name}.embeddings"])
        table[: cache[1]] = grad.sum(axis=0)
        grads[f"{name}.embeddings"] = table
        return grad
    if isinstance(layer, SelfAttention):
        x, q, k, v, probs, mixed = cache
        dmixed = _heads(_project_backward(mixed, grad, w, f"{name}.output", grads), layer.heads)
        dprobs = dmixed @ v.transpose(0, 1, 3, 2)
        dv = probs.transpose(0, 1, 3, 2) @ dmixed
        dscores = probs * (dprobs - (dprobs * probs).sum(axis=-1, keepdims=True))  # softmax; masked entries are 0
        dq = layer.scale * (dscores @ k)
        dk = layer.scale * (dscores.transpose(0, 1, 3, 2) @ q)
        return sum(_project_backward(x, _merge(d), w, f"{name}.{part}", grads)  # type: ignore[return-value]
                   for part, d in (("query", dq), ("key", dk), ("value", dv)))
    if isinstance(layer, Residual):
        body_tape, shortcut_tape, z, out = cache
        dz = _activation_backward(layer.activation, z, out, grad)
        return _stack_backward(body_tape, dz, run) + _stack_backward(shortcut_tape, dz, run)
    raise XfbenchError(f"{type(layer).__name__} is not an xfbench layer")


# --------------------------------------------------------------------------------------------- checks
def _checked_weights(task: Task, weights: Mapping[str, np.ndarray], dtype: type = np.float64) -> Weights:
    expected = {name: tensor.shape for name, tensor in task.tensors.items()}
    if set(weights) != set(expected):
        missing, extra = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
        raise XfbenchError(
            f"task {task.name!r} expects other weights (missing {missing or 'none'}, unknown {extra or 'none'}); "
            "build them with xfbench.tasks.initial_weights(task)"
        )
    for name, shape in expected.items():
        if np.shape(weights[name]) != shape:
            raise XfbenchError(f"weight {name!r} has shape {np.shape(weights[name])}, expected {shape} (neutral layout)")
    return {name: np.asarray(weights[name], dtype) for name in expected}


def _checked_inputs(task: Task, x: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    x = np.asarray(x)
    if x.shape[1:] != task.input_shape:
        raise XfbenchError(f"inputs have shape {x.shape}, task {task.name!r} expects (batch, *{task.input_shape})")
    return x.astype(np.int64) if task.tokens else x.astype(dtype)


# --------------------------------------------------------------------------------------------- public
def forward(
    task: Task, weights: Mapping[str, np.ndarray], x: np.ndarray, return_activations: bool = False,
    dtype: type = np.float64,
) -> np.ndarray | tuple[np.ndarray, list[np.ndarray]]:
    """The model's outputs in evaluation mode (logits for the cross-entropy losses, raw values for mse) in float64.

    Args:
        task: The task whose layers define the model.
        weights: Neutral weights keyed like :attr:`Task.tensors` (any float dtype; computed in float64).
        x: A batch of inputs, shape ``(batch, *task.input_shape)`` (NHWC for images, token ids for sequences).
        return_activations: Also return the output of every layer of the model's stack (a residual block's is
            its sum after its activation), to find the first layer where a backend differs.
        dtype: ``np.float32`` evaluates in float32 instead (see :func:`loss_and_grads`).

    Returns:
        The outputs, or ``(outputs, activations)`` with ``len(activations) == len(task.layers)``.

    Example:
        >>> from xfbench.tasks import get_task, initial_weights
        >>> task = get_task("cnn")
        >>> out, acts = forward(task, initial_weights(task), task.data.x_test[:2], return_activations=True)
        >>> out.shape, out.dtype, [a.shape[1:] for a in acts] == list(task.shapes[1:])
        ((2, 10), dtype('float64'), True)
    """
    outputs: list[np.ndarray] = []
    out, _ = _stack_forward(task.layers, _checked_inputs(task, x, dtype), "",
                            _Pass(_checked_weights(task, weights, dtype), False), outputs)
    return (out, outputs) if return_activations else out


def _loss_and_output_grad(task: Task, outputs: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """The mean loss (metrics.loss_value's formula) and its gradient w.r.t. the model outputs."""
    if task.loss == "softmax_cross_entropy":
        labels = np.asarray(y, np.int64).reshape(-1)
        value = loss_value(task.loss, outputs, np.asarray(y, np.int64))
        logits = outputs.reshape(-1, outputs.shape[-1])
        shifted = logits - logits.max(axis=1, keepdims=True)
        grad = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)  # softmax
        grad[np.arange(len(labels)), labels] -= 1.0
        return value, (grad / len(labels)).reshape(outputs.shape)  # the mean over every sample (and position)
    targets = np.asarray(y, outputs.dtype)
    value = loss_value(task.loss, outputs, targets)
    if task.loss == "mse":  # the mean over every element, as metrics.loss_value
        return value, 2.0 * (outputs - targets) / outputs.size
    return value, (_sigmoid(outputs) - targets) / outputs.size  # sigmoid_binary_cross_entropy


def loss(task: Task, weights: Mapping[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    """The task's training loss on one batch (training mode: a BatchNorm uses the batch's statistics), with
    :func:`metrics.loss_value`'s formulas.

    Example:
        >>> from xfbench.tasks import get_task, initial_weights
        >>> task = get_task("mlp")
        >>> round(loss(task, initial_weights(task), task.data.x_test, task.data.y_test), 1)
        2.3
    """
    run = _Pass(_checked_weights(task, weights), True)
    out, _ = _stack_forward(task.layers, _checked_inputs(task, x), "", run)
    return loss_value(task.loss, out, y)


def _train_pass(task: Task, w: Weights, x: np.ndarray, y: np.ndarray) -> tuple[float, _Pass]:
    run = _Pass(w, True)
    dtype = next(iter(w.values())).dtype if w else np.float64
    out, tape = _stack_forward(task.layers, _checked_inputs(task, x, dtype), "", run)
    value, grad = _loss_and_output_grad(task, out, y)
    _stack_backward(tape, grad, run)
    return value, run


def loss_and_grads(
    task: Task, weights: Mapping[str, np.ndarray], x: np.ndarray, y: np.ndarray, dtype: type = np.float64,
) -> tuple[float, Weights]:
    """The mean training loss on one batch and its gradient w.r.t. every trainable tensor, by a hand-written
    backward pass (a BatchNorm's running statistics are neither used nor changed).

    Args:
        task: The task (layers and loss).
        weights: Neutral weights keyed like :attr:`Task.tensors`.
        x: A batch of inputs, shape ``(batch, *task.input_shape)``.
        y: Its targets: int labels ``(batch,)`` (or ``(batch, length)`` for a sequence model) for softmax
            cross-entropy, floats ``(batch, units)`` otherwise.

    Returns:
        ``(loss, grads)``: a float and float64 gradients keyed like :meth:`Task.param_names`, in neutral layouts.
        With ``dtype=np.float32`` every formula runs in float32 instead: the same computation with a float32
        rounding error, which parity uses to see how much of a backend's difference any float32 evaluation of the
        gradient would show (a sum that cancels loses more digits than a sum that does not).

    Example:
        >>> from xfbench.tasks import get_task, initial_weights
        >>> task = get_task("cnn")
        >>> x, y = task.data.x_train[:4], task.data.y_train[:4]
        >>> value, grads = loss_and_grads(task, initial_weights(task), x, y)
        >>> grads["0.Conv2D.kernel"].shape, value == loss(task, initial_weights(task), x, y)
        ((3, 3, 1, 16), True)
    """
    value, run = _train_pass(task, _checked_weights(task, weights, dtype), x, y)
    return value, {name: run.grads[name].astype(np.float64) for name in task.param_names()}


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
                       rate: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One step of Keras 3's Adam exactly as ``keras/src/optimizers/adam.py`` computes it: in the variables' dtype,
    float32, from the float64 gradient rounded to float32. ``alpha = lr * sqrt(1 - b2**t) / (1 - b1**t)``,
    ``m += (g - m) * (1 - b1)``, ``v += (g*g - v) * (1 - b2)``, ``w -= m * alpha / (sqrt(v) + eps)``; AdamW first
    decays ``w -= w * weight_decay * lr`` (``BaseOptimizer._apply_weight_decay``).

    In float32 (not float64) because that arithmetic is part of Keras' formula: measured on cnn28 after 10 steps,
    it moves the first conv bias by 1.2e-4 (relative in norm) from the same formula in float64, more than parity's
    tolerance; against this reference the Keras backends agree to ~1e-6, like the native ones against theirs.
    """
    f32 = np.float32
    one, t, lr = f32(1), f32(step), f32(rate)
    w32 = w.astype(f32)
    if isinstance(opt, AdamW) and opt.weight_decay:
        w32 = w32 - w32 * (f32(opt.weight_decay) * lr)
    alpha = lr * np.sqrt(one - f32(opt.beta2) ** t) / (one - f32(opt.beta1) ** t)
    g32, m32, v32 = g.astype(f32), m.astype(f32), v.astype(f32)
    m32 = m32 + (g32 - m32) * f32(1 - opt.beta1)
    v32 = v32 + (g32 * g32 - v32) * f32(1 - opt.beta2)
    w32 = w32 - (m32 * alpha) / (np.sqrt(v32) + f32(opt.epsilon))
    return w32.astype(np.float64), m32.astype(np.float64), v32.astype(np.float64)


def clip_by_global_norm(grads: Weights, clip_norm: float) -> Weights:
    """``g * min(1, clip_norm / ||g||)`` with ``||g||`` the norm of every gradient together (no epsilon).

    Example:
        >>> clipped = clip_by_global_norm({"a": np.array([3.0]), "b": np.array([4.0])}, 1.0)
        >>> [round(float(v[0]), 2) for v in clipped.values()]
        [0.6, 0.8]
    """
    norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
    scale = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    return {name: g * scale for name, g in grads.items()}


# optimizer formulas a backend can follow: the spec's, or Keras' (Adam's epsilon before the bias correction)
FORMULAS = ("spec", "keras")


def optimizer_steps(
    task: Task, weights: Mapping[str, np.ndarray], batches: Iterable[tuple[np.ndarray, np.ndarray]],
    num_steps: int | None = None, return_losses: bool = False, formula: str = "spec", dtype: type = np.float64,
) -> Weights | tuple[Weights, list[float]]:
    """Train from ``weights`` with the task's optimizer, one step per batch, in float64; a BatchNorm's running
    statistics follow each training forward pass.

    Per step t (from 1): the gradients, clipped by their global norm if the optimizer has ``clip_norm``; the
    learning rate ``lr_t`` (the schedule's, else constant). SGD: ``buf = momentum * buf + g; w -= lr * buf`` (buf
    starts at 0). AdamW first decays ``w -= lr_t * weight_decay * w``. Adam: ``m = b1*m + (1-b1)*g;
    v = b2*v + (1-b2)*g*g; w -= lr_t * (m / (1-b1**t)) / (sqrt(v / (1-b2**t)) + eps)``. With ``formula="keras"``
    Adam adds epsilon before the bias correction, as Keras does:
    ``w -= lr_t * sqrt(1-b2**t) / (1-b1**t) * m / (sqrt(v) + eps)``, with Keras' own float32 update arithmetic
    (:func:`_keras_adam_update`); the gradients stay float64. The optimizer state starts fresh at zero.

    Args:
        task: The task (model, loss and optimizer).
        weights: The starting weights (not modified).
        batches: ``(x, y)`` batches, e.g. :func:`task_batches`.
        num_steps: Take exactly this many batches (an error if there are fewer); default: all of them.
        return_losses: Also return the loss of each step (before its update).
        formula: ``"spec"`` (the task's formulas) or ``"keras"`` (Keras' Adam; its SGD is the spec's).
        dtype: ``np.float32`` runs every formula in float32 instead (see :func:`loss_and_grads`); the result is
            still returned as float64 arrays.

    Returns:
        The new float64 weights (every tensor, state included), or ``(weights, losses)``.

    Example:
        >>> from xfbench.tasks import get_task, initial_weights
        >>> task = get_task("regression", num_samples=100)
        >>> new, losses = optimizer_steps(task, initial_weights(task), task_batches(task, 3), return_losses=True)
        >>> len(losses), losses[2] < losses[0]
        (3, True)
    """
    if formula not in FORMULAS:
        raise unknown_name("optimizer formula", formula, FORMULAS)
    w = _checked_weights(task, weights, dtype)
    names = task.param_names()
    first = {name: np.zeros_like(w[name]) for name in names}  # SGD momentum buffer / Adam m
    second = {name: np.zeros_like(w[name]) for name in names}  # Adam v
    opt, losses = task.optimizer, []
    for step, (x, y) in enumerate(batches if num_steps is None else islice(batches, num_steps), start=1):
        value, run = _train_pass(task, w, x, y)
        losses.append(value)
        w.update(run.state)
        grads = {name: run.grads[name] for name in names}
        if isinstance(opt, SGD):
            for name, g in grads.items():
                first[name] = opt.momentum * first[name] + g
                w[name] = w[name] - opt.learning_rate * first[name]
            continue
        if opt.clip_norm is not None:
            grads = clip_by_global_norm(grads, opt.clip_norm)
        rate = opt.rate(step)
        for name, g in grads.items():
            if formula == "keras":
                w[name], first[name], second[name] = (value.astype(dtype) for value in _keras_adam_update(
                    opt, step, w[name], first[name], second[name], g, rate))
                continue
            if isinstance(opt, AdamW):
                w[name] = w[name] - rate * opt.weight_decay * w[name]
            first[name] = opt.beta1 * first[name] + (1 - opt.beta1) * g
            second[name] = opt.beta2 * second[name] + (1 - opt.beta2) * g * g
            m_hat = first[name] / (1 - opt.beta1**step)
            v_hat = second[name] / (1 - opt.beta2**step)
            w[name] = w[name] - rate * m_hat / (np.sqrt(v_hat) + opt.epsilon)
    if num_steps is not None and len(losses) < num_steps:
        raise XfbenchError(f"num_steps={num_steps} but only {len(losses)} batches were given; pass more batches")
    w = {name: value.astype(np.float64) for name, value in w.items()}
    return (w, losses) if return_losses else w
