"""Initial weights, created once in NumPy from the task's seed, in the neutral layout.

Every backend loads these exact arrays, so every backend starts from the same function. Kernels and embedding
tables use the layer's named initializer; biases and a normalization's beta start at zero, its gamma at one, a
BatchNorm's running mean at zero and running variance at one. Each layer draws from its own generator seeded with
its position (``(task.seed, layer_index)`` for a layer of the model's stack, and the path of indices into residual
blocks for a nested one), so adding a layer does not change the others' weights; a layer with several drawn tensors
(attention's four projections) draws them in order from that generator.
"""

from __future__ import annotations

import numpy as np

from xfbench.tasks.layers import walk
from xfbench.tasks.spec import Task


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return shape[-2] * receptive, shape[-1] * receptive


def initialize(shape: tuple[int, ...], name: str, rng: np.random.Generator) -> np.ndarray:
    """Draw a float32 tensor of ``shape`` (for kernels, the last two axes are in, out) with a named initializer.

    Example:
        >>> kernel = initialize((64, 10), "glorot_uniform", np.random.default_rng(0))
        >>> bool(np.abs(kernel).max() <= np.sqrt(6 / 74))
        True
    """
    if name == "zeros":
        return np.zeros(shape, np.float32)
    if name == "ones":
        return np.ones(shape, np.float32)
    if name == "small_normal":
        return (rng.normal(size=shape) * 0.02).astype(np.float32)
    fan_in, fan_out = _fans(shape)
    if name == "glorot_uniform":
        values = rng.uniform(-1.0, 1.0, size=shape) * np.sqrt(6.0 / (fan_in + fan_out))
    elif name == "glorot_normal":
        values = rng.normal(size=shape) * np.sqrt(2.0 / (fan_in + fan_out))
    elif name == "he_uniform":
        values = rng.uniform(-1.0, 1.0, size=shape) * np.sqrt(6.0 / fan_in)
    elif name == "he_normal":
        values = rng.normal(size=shape) * np.sqrt(2.0 / fan_in)
    else:  # the spec validates names; this guards direct calls
        raise ValueError(f"unknown initializer {name!r}")
    return values.astype(np.float32)


def _position(prefix: str) -> list[int]:
    """A layer's place as integers: ``"3.Residual.body.0.Conv2D"`` -> [3, 0, 0] (body 0, shortcut 1)."""
    parts = prefix.split(".")
    path = [int(parts[0])]
    for kind, index in zip(parts[2::3], parts[3::3], strict=False):
        path += [0 if kind == "body" else 1, int(index)]
    return path


def param_shapes(task: Task) -> dict[str, tuple[int, ...]]:
    """The neutral shape of every tensor of the model (parameters and state), keyed like :attr:`Task.tensors`."""
    return {name: tensor.shape for name, tensor in task.tensors.items()}


def initial_weights(task: Task, seed: int | None = None) -> dict[str, np.ndarray]:
    """The task's initial weights (float32, neutral layout): every tensor of :attr:`Task.tensors`, deterministic in
    ``seed`` (default: task.seed).

    Example:
        >>> from xfbench.tasks import get_task
        >>> weights = initial_weights(get_task("mlp"))
        >>> [(name, w.shape) for name, w in weights.items()][:2]
        [('0.Dense.kernel', (64, 64)), ('0.Dense.bias', (64,))]
    """
    seed = task.seed if seed is None else seed
    weights: dict[str, np.ndarray] = {}
    for site in walk(task.layers, task.input_shape):
        rng = np.random.default_rng([seed, *_position(site.prefix)])
        for name, tensor in site.layer.tensors(site.in_shape).items():
            weights[f"{site.prefix}.{name}"] = initialize(tensor.shape, tensor.init, rng)
    return {name: weights[name] for name in task.tensors}


__all__ = ["initial_weights", "initialize", "param_shapes"]
