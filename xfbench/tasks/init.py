"""Initial weights, created once in NumPy from the task's seed, in the neutral layout.

Every backend loads these exact arrays, so every backend starts from the same function. Kernels use the layer's
named initializer; biases start at zero. Each layer draws from its own generator seeded with
``(task.seed, layer_index)``, so adding a layer does not change the others' weights.
"""

from __future__ import annotations

import numpy as np

from xfbench.tasks.spec import Conv2D, Dense, Task


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return shape[-2] * receptive, shape[-1] * receptive


def initialize(shape: tuple[int, ...], name: str, rng: np.random.Generator) -> np.ndarray:
    """Draw a float32 kernel of ``shape`` (last two axes: in, out) with a named initializer.

    Example:
        >>> kernel = initialize((64, 10), "glorot_uniform", np.random.default_rng(0))
        >>> bool(np.abs(kernel).max() <= np.sqrt(6 / 74))
        True
    """
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


def param_shapes(task: Task) -> dict[str, tuple[int, ...]]:
    """The neutral shape of every trainable tensor, keyed like :meth:`Task.param_names`."""
    shapes: dict[str, tuple[int, ...]] = {}
    for index, layer in enumerate(task.layers):
        in_shape = task.shapes[index]
        prefix = f"{index}.{type(layer).__name__}"
        if isinstance(layer, Dense):
            shapes[f"{prefix}.kernel"] = (in_shape[0], layer.units)
            shapes[f"{prefix}.bias"] = (layer.units,)
        elif isinstance(layer, Conv2D):
            shapes[f"{prefix}.kernel"] = (*layer.kernel_size, in_shape[2], layer.filters)
            shapes[f"{prefix}.bias"] = (layer.filters,)
    return shapes


def initial_weights(task: Task, seed: int | None = None) -> dict[str, np.ndarray]:
    """The task's initial weights (float32, neutral layout), deterministic in ``seed`` (default: task.seed).

    Example:
        >>> from xfbench.tasks import get_task
        >>> weights = initial_weights(get_task("mlp"))
        >>> [(name, w.shape) for name, w in weights.items()][:2]
        [('0.Dense.kernel', (64, 64)), ('0.Dense.bias', (64,))]
    """
    seed = task.seed if seed is None else seed
    weights: dict[str, np.ndarray] = {}
    for name, shape in param_shapes(task).items():
        index = int(name.split(".")[0])
        if name.endswith(".kernel"):
            layer = task.layers[index]
            weights[name] = initialize(shape, layer.init, np.random.default_rng([seed, index]))  # type: ignore[union-attr]
        else:
            weights[name] = np.zeros(shape, np.float32)
    return weights
