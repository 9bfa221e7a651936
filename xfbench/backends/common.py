"""Helpers shared by the adapters: layout converters, the spec's numbers every adapter sets, and the per-layer plan
every adapter follows.

Layouts: the neutral layout is NHWC images, HWIO conv kernels, (in, out) dense kernels, H-W-C flatten order.
A channels-first adapter (PyTorch) computes in NCHW with OIHW kernels and (out, in) dense weights, so its
flatten order is C-H-W: the dense layer right after a Flatten of feature maps gets its input rows permuted (the
idiom of PyTorch code, ``nn.Flatten`` then ``nn.Linear``). That is the classic trap: with symmetric test data a
wrong flatten order passes unnoticed, so the tests use random, non-square shapes. A Flatten that feeds anything
else (a normalization, a residual block) flattens in H-W-C order instead (:func:`chw_flattens`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from xfbench.tasks.layers import Site, walk
from xfbench.tasks.spec import (
    Activation,
    Adam,
    AdamW,
    BatchNorm,
    Conv2D,
    Dense,
    Flatten,
    Residual,
    SelfAttention,
    Task,
    same_padding,
)


def chw_flatten_permutation(shape_hwc: tuple[int, int, int]) -> np.ndarray:
    """``perm`` such that a C-H-W flattened vector ``v_chw`` equals ``v_hwc[perm]``.

    Example:
        >>> chw_flatten_permutation((1, 2, 3)).tolist()  # C-H-W position -> H-W-C position
        [0, 3, 1, 4, 2, 5]
    """
    return np.arange(int(np.prod(shape_hwc))).reshape(shape_hwc).transpose(2, 0, 1).ravel()


def chw_flattens(task: Task) -> dict[str, str]:
    """The Flattens of feature maps a channels-first adapter may flatten in its own C-H-W order: those of the
    model's stack followed (past activations only) by a Dense, whose kernel rows absorb the permutation. Maps the
    Flatten's name to that Dense's kernel. Every other Flatten of feature maps flattens in H-W-C order."""
    found: dict[str, str] = {}
    for index, layer in enumerate(task.layers):
        if not (isinstance(layer, Flatten) and len(task.shapes[index]) == 3):
            continue
        following = index + 1
        while following < len(task.layers) and isinstance(task.layers[following], Activation):
            following += 1
        if following < len(task.layers) and isinstance(task.layers[following], Dense):
            found[f"{index}.Flatten"] = f"{following}.Dense.kernel"
    return found


def flatten_permutations(task: Task) -> dict[str, np.ndarray]:
    """For each dense kernel fed by a C-H-W Flatten (:func:`chw_flattens`): its row permutation."""
    return {kernel: chw_flatten_permutation(task.shapes[int(flatten.split(".")[0])])  # type: ignore[arg-type]
            for flatten, kernel in chw_flattens(task).items()}


def _linear_kernels(task: Task) -> set[str]:
    """Every (in, out) kernel an adapter stores as PyTorch's (out, in): dense layers and attention projections."""
    names = set()
    for site in walk(task.layers, task.input_shape):
        if isinstance(site.layer, Dense):
            names.add(f"{site.prefix}.kernel")
        elif isinstance(site.layer, SelfAttention):
            names.update(f"{site.prefix}.{part}.kernel" for part in ("query", "key", "value", "output"))
    return names


def to_channels_first(task: Task, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Neutral weights -> PyTorch layouts: conv OIHW, linear (out, in) with flatten rows permuted."""
    perms, linear = flatten_permutations(task), _linear_kernels(task)
    converted = {}
    for name, value in weights.items():
        if name.endswith("Conv2D.kernel"):
            value = value.transpose(3, 2, 0, 1)
        elif name in linear:
            value = (value[perms[name]] if name in perms else value).T
        converted[name] = np.ascontiguousarray(value, dtype=np.float32)
    return converted


def from_channels_first(task: Task, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """PyTorch layouts -> neutral weights (the inverse of :func:`to_channels_first`)."""
    perms, linear = flatten_permutations(task), _linear_kernels(task)
    converted = {}
    for name, value in weights.items():
        if name.endswith("Conv2D.kernel"):
            value = value.transpose(2, 3, 1, 0)
        elif name in linear:
            value = value.T
            if name in perms:
                restored = np.empty_like(value)
                restored[perms[name]] = value
                value = restored
        converted[name] = np.ascontiguousarray(value, dtype=np.float32)
    return converted


def sites(task: Task) -> list[Site]:
    """Every layer of the model, nested ones included, with its name and input shape (``tasks.layers.walk``)."""
    return list(walk(task.layers, task.input_shape))


def conv_padding(layer: Conv2D, in_shape: tuple[int, ...]) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) zero padding of a conv layer on (height, width, channels) inputs
    (TensorFlow's 'same' rule)."""
    if layer.padding == "valid":
        return (0, 0), (0, 0)
    height, width = in_shape[:2]
    return (
        same_padding(height, layer.kernel_size[0], layer.strides[0]),  # type: ignore[index]
        same_padding(width, layer.kernel_size[1], layer.strides[1]),  # type: ignore[index]
    )


def layer_activation(layer: object) -> str:
    """The activation a layer applies after its linear part (or its sum, for a residual block): 'linear' for none."""
    if isinstance(layer, (Dense, Conv2D, Residual)):
        return layer.activation
    if isinstance(layer, Activation):
        return layer.name
    return "linear"


def as_labels(task: Task, y: np.ndarray) -> np.ndarray:
    """Targets in the dtype every adapter feeds its loss: int64 labels or float32 columns."""
    return y.astype(np.int64) if task.loss == "softmax_cross_entropy" else y.astype(np.float32)


def as_inputs(task: Task, x: np.ndarray) -> np.ndarray:
    """Inputs in the dtype every adapter feeds its model: int32 token ids, else float32."""
    return x.astype(np.int32) if task.tokens else x.astype(np.float32)


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


def has_state(task: Task) -> bool:
    """Whether the model has tensors it updates itself (a BatchNorm's running statistics): it then trains and
    evaluates differently."""
    return any(isinstance(site.layer, BatchNorm) for site in sites(task))


def conventions(task: Task) -> dict[str, Any]:
    """The numbers of the spec an adapter sets where its framework's default differs, as the fingerprint records
    them: each GELU's form, each normalization's epsilon, BatchNorm's momentum convention, attention's scale, and
    the optimizer's decay, clipping and schedule."""
    out: dict[str, Any] = {}
    for site in sites(task):
        layer = site.layer
        activation = layer_activation(layer)
        if activation.startswith("gelu"):
            out.setdefault("gelu", set()).add("exact (erf)" if activation == "gelu" else "tanh approximation")
        if isinstance(layer, (BatchNorm,)) or type(layer).__name__ == "LayerNorm":
            out.setdefault(f"{type(layer).__name__}_epsilon", set()).add(layer.epsilon)  # type: ignore[union-attr]
        if isinstance(layer, BatchNorm):
            out.setdefault("BatchNorm_running", set()).add(
                f"running = (1 - {layer.momentum:g}) * running + {layer.momentum:g} * batch, biased variance")
        if isinstance(layer, SelfAttention):
            out.setdefault("attention_scale", set()).add(round(layer.scale, 9))  # type: ignore[arg-type]
    opt = task.optimizer
    if isinstance(opt, Adam):
        if isinstance(opt, AdamW):
            out["weight_decay"] = f"decoupled: w -= lr_t * {opt.weight_decay:g} * w, every trainable tensor"
        if opt.clip_norm is not None:
            out["gradient_clipping"] = f"global norm {opt.clip_norm:g}: g * min(1, clip / ||g||), no epsilon"
        if opt.schedule is not None:
            s = opt.schedule
            out["lr_schedule"] = (f"linear warm-up {s.warmup_steps} steps, cosine to {s.final_ratio:g} x at step "
                                  f"{s.total_steps} (update t from 1)")
    return {key: sorted(value) if isinstance(value, set) else value for key, value in out.items()}


def schedule_factor(task: Task, step: float, xp: Any = math) -> Any:
    """The learning-rate factor of update ``step`` (from 1) in an array library ``xp`` (``jax.numpy``,
    ``tf.math``...: anything with ``cos``, ``minimum`` and ``where``-free arithmetic): the spec's
    ``WarmupCosine.factor`` as traced arithmetic, 1 without a schedule."""
    opt = task.optimizer
    schedule = getattr(opt, "schedule", None)
    if schedule is None:
        return 1.0
    warm = max(schedule.warmup_steps, 1)
    rising = step / warm
    progress = xp.minimum(xp.maximum(step - schedule.warmup_steps, 0.0) / (schedule.total_steps
                                                                             - schedule.warmup_steps), 1.0)
    falling = schedule.final_ratio + (1 - schedule.final_ratio) * 0.5 * (1 + xp.cos(math.pi * progress))
    if schedule.warmup_steps == 0:
        return falling
    after = xp.minimum(xp.maximum(step - schedule.warmup_steps, 0.0), 1.0)  # 0 during the warm-up, 1 after it
    return xp.minimum(rising, 1.0) * (1 - after) + falling * after
