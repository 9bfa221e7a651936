"""Helpers shared by the adapters: layout converters and the per-layer plan every adapter follows.

Layouts: the neutral layout is NHWC images, HWIO conv kernels, (in, out) dense kernels, H-W-C flatten order.
A channels-first adapter (PyTorch) computes in NCHW with OIHW kernels and (out, in) dense weights, so its
flatten order is C-H-W: the dense layer after a Flatten of feature maps gets its input rows permuted. That is
the classic trap: with symmetric test data a wrong flatten order passes unnoticed, so the tests use random,
non-square shapes.
"""

from __future__ import annotations

import numpy as np

from xfbench.tasks.spec import Activation, Conv2D, Dense, Flatten, Task, same_padding


def chw_flatten_permutation(shape_hwc: tuple[int, int, int]) -> np.ndarray:
    """``perm`` such that a C-H-W flattened vector ``v_chw`` equals ``v_hwc[perm]``.

    Example:
        >>> chw_flatten_permutation((1, 2, 3)).tolist()  # C-H-W position -> H-W-C position
        [0, 3, 1, 4, 2, 5]
    """
    return np.arange(int(np.prod(shape_hwc))).reshape(shape_hwc).transpose(2, 0, 1).ravel()


def flatten_permutations(task: Task) -> dict[str, np.ndarray]:
    """For each dense kernel fed by a Flatten of feature maps: the row permutation a channels-first layout needs."""
    perms: dict[str, np.ndarray] = {}
    pending: np.ndarray | None = None
    for index, layer in enumerate(task.layers):
        if isinstance(layer, Flatten) and len(task.shapes[index]) == 3:
            pending = chw_flatten_permutation(task.shapes[index])  # type: ignore[arg-type]
        elif isinstance(layer, Dense):
            if pending is not None:
                perms[f"{index}.Dense.kernel"] = pending
            pending = None
    return perms


def to_channels_first(task: Task, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Neutral weights -> PyTorch layouts: conv OIHW, dense (out, in) with flatten rows permuted."""
    perms = flatten_permutations(task)
    converted = {}
    for name, value in weights.items():
        if name.endswith("Conv2D.kernel"):
            value = value.transpose(3, 2, 0, 1)
        elif name.endswith("Dense.kernel"):
            value = (value[perms[name]] if name in perms else value).T
        converted[name] = np.ascontiguousarray(value, dtype=np.float32)
    return converted


def from_channels_first(task: Task, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """PyTorch layouts -> neutral weights (the inverse of :func:`to_channels_first`)."""
    perms = flatten_permutations(task)
    converted = {}
    for name, value in weights.items():
        if name.endswith("Conv2D.kernel"):
            value = value.transpose(2, 3, 1, 0)
        elif name.endswith("Dense.kernel"):
            value = value.T
            if name in perms:
                restored = np.empty_like(value)
                restored[perms[name]] = value
                value = restored
        converted[name] = np.ascontiguousarray(value, dtype=np.float32)
    return converted


def conv_padding(task: Task, index: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) zero padding of conv layer ``index`` (TensorFlow's 'same' rule)."""
    layer = task.layers[index]
    assert isinstance(layer, Conv2D)
    if layer.padding == "valid":
        return (0, 0), (0, 0)
    height, width = task.shapes[index][:2]
    return (
        same_padding(height, layer.kernel_size[0], layer.strides[0]),
        same_padding(width, layer.kernel_size[1], layer.strides[1]),
    )


def layer_activation(layer: object) -> str:
    """The activation a layer applies after its linear part ('linear' for none)."""
    if isinstance(layer, (Dense, Conv2D)):
        return layer.activation
    if isinstance(layer, Activation):
        return layer.name
    return "linear"


def as_labels(task: Task, y: np.ndarray) -> np.ndarray:
    """Targets in the dtype every adapter feeds its loss: int64 labels or float32 columns."""
    return y.astype(np.int64) if task.loss == "softmax_cross_entropy" else y.astype(np.float32)


def adam_constants(beta1: float, beta2: float) -> dict[str, float]:
    """Adam constants for adapters that run the update in float32 (JAX, TensorFlow).

    The moment updates use the float32 betas, so ``1 - beta`` is exact (Sterbenz) and the bias corrections
    must be ``1 - beta_f32**t`` for the same betas. Computed as ``-expm1(t * log(beta_f32))`` they are accurate to
    ~1e-7 relative; a float32 ``1 - beta**t`` loses up to ~1e-5 to cancellation, which after 10 steps shows as
    parameter drift against the float64 reference (measured: 7e-6 on the MLP, 1e-3 on cnn28's conv biases).
    """
    beta1_f32, beta2_f32 = float(np.float32(beta1)), float(np.float32(beta2))
    return {
        "beta1": beta1_f32, "beta2": beta2_f32, "one_minus_beta1": 1.0 - beta1_f32, "one_minus_beta2": 1.0 - beta2_f32,
        "log_beta1": float(np.log(beta1_f32)), "log_beta2": float(np.log(beta2_f32)),
    }
