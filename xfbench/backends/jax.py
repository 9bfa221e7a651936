"""JAX adapter: pure functions of a parameter pytree, the whole optimizer step under ``jax.jit``.

The idiom: ``lax.conv_general_dilated`` on NHWC/HWIO (the neutral layout, so weights load as they are),
``lax.reduce_window`` for pooling, ``jax.nn.dot_product_attention`` for attention (heads on the axis the neutral
layout puts them), normalizations written out as Flax writes them, Adam / AdamW / SGD, clipping and the schedule
written with ``jax.tree_util`` (the formulas in ``xfbench.tasks.optim``), and the step jitted once with the
parameters, the optimizer state and the model's state (BatchNorm's running statistics) donated.
Thread count: XLA's CPU thread pool follows the process's CPU affinity, which the worker sets.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from xfbench.backends import common
from xfbench.backends.base import Backend, Trainer, Weights
from xfbench.machine import cpu_name
from xfbench.tasks.layers import infer_shapes
from xfbench.tasks.spec import (
    SGD,
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
)

if TYPE_CHECKING:
    import jax

# one layer: (params, state, x, train, new_state) -> x; a BatchNorm training writes its running statistics into
# new_state (a dict filled while tracing)
Step = Callable[[dict, dict, Any, bool, dict], Any]
ATTENTION = "jax.nn.dot_product_attention (implementation=None: XLA)"


def activation_fn(name: str) -> Callable[[Any], Any]:
    import jax
    import jax.numpy as jnp

    return {"linear": lambda x: x, "relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh,
            "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # jax's default is the tanh form: set explicitly
            "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True)}[name]


def _normalize(x: Any, mean: Any, var: Any, gamma: Any, beta: Any, epsilon: float) -> Any:
    from jax import lax

    return (x - mean) * lax.rsqrt(var + epsilon) * gamma + beta


def _layer_step(layer: Layer, name: str, in_shape: tuple[int, ...]) -> Step:
    import jax
    import jax.numpy as jnp
    from jax import lax

    if isinstance(layer, Dense):
        bias = layer.use_bias

        def dense(p, s, x, train, new):
            out = x @ p[f"{name}.kernel"]
            return out + p[f"{name}.bias"] if bias else out
        return dense
    if isinstance(layer, Conv2D):
        padding, strides, bias = common.conv_padding(layer, in_shape), layer.strides, layer.use_bias

        def conv(p, s, x, train, new):
            out = lax.conv_general_dilated(x, p[f"{name}.kernel"], strides, padding,
                                           dimension_numbers=("NHWC", "HWIO", "NHWC"))
            return out + p[f"{name}.bias"] if bias else out
        return conv
    if isinstance(layer, (MaxPool2D, AvgPool2D)):
        pool = make_pool(layer)
        return lambda p, s, x, train, new: pool(p, x)
    if isinstance(layer, GlobalAvgPool2D):
        return lambda p, s, x, train, new: x.mean(axis=(1, 2))
    if isinstance(layer, Flatten):
        return lambda p, s, x, train, new: x.reshape(x.shape[0], -1)
    if isinstance(layer, LayerNorm):
        def layer_norm(p, s, x, train, new):
            mean = x.mean(axis=-1, keepdims=True)
            var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
            return _normalize(x, mean, var, p[f"{name}.gamma"], p[f"{name}.beta"], layer.epsilon)
        return layer_norm
    if isinstance(layer, BatchNorm):
        axes, momentum = tuple(range(len(in_shape))), layer.momentum

        def batch_norm(p, s, x, train, new):
            if not train:
                return _normalize(x, s[f"{name}.running_mean"], s[f"{name}.running_var"], p[f"{name}.gamma"],
                                  p[f"{name}.beta"], layer.epsilon)
            mean = x.mean(axis=axes)
            var = jnp.mean(jnp.square(x - mean), axis=axes)  # biased, as the spec
            new[f"{name}.running_mean"] = (1 - momentum) * s[f"{name}.running_mean"] + momentum * lax.stop_gradient(mean)
            new[f"{name}.running_var"] = (1 - momentum) * s[f"{name}.running_var"] + momentum * lax.stop_gradient(var)
            return _normalize(x, mean, var, p[f"{name}.gamma"], p[f"{name}.beta"], layer.epsilon)
        return batch_norm
    if isinstance(layer, Embedding):
        return lambda p, s, x, train, new: jnp.take(p[f"{name}.embeddings"], x, axis=0)
    if isinstance(layer, PositionEmbedding):
        return lambda p, s, x, train, new: x + p[f"{name}.embeddings"][: x.shape[1]]
    if isinstance(layer, SelfAttention):
        heads, size, bias = layer.heads, layer.head_size, layer.use_bias

        def project(p, x, part):
            out = x @ p[f"{name}.{part}.kernel"]
            return out + p[f"{name}.{part}.bias"] if bias and part != "key" else out  # no key bias: see the spec

        def attention(p, s, x, train, new):
            batch, length = x.shape[0], x.shape[1]
            q, k, v = (project(p, x, part).reshape(batch, length, heads, size) for part in ("query", "key", "value"))
            mixed = jax.nn.dot_product_attention(q, k, v, scale=layer.scale, is_causal=layer.causal)
            return project(p, mixed.reshape(batch, length, heads * size), "output")
        return attention
    if isinstance(layer, Residual):
        body = _stack(layer.body, in_shape, f"{name}.body.")
        shortcut = _stack(layer.shortcut, in_shape, f"{name}.shortcut.") if layer.shortcut else None
        return lambda p, s, x, train, new: body(p, s, x, train, new) + (
            shortcut(p, s, x, train, new) if shortcut else x)
    return lambda p, s, x, train, new: x  # Activation: applied below


def _stack(layers: Sequence[Layer], in_shape: tuple[int, ...], prefix: str) -> Step:
    shapes = infer_shapes(in_shape, layers)
    steps: list[Step] = []
    for index, layer in enumerate(layers):
        steps.append(_layer_step(layer, f"{prefix}{index}.{type(layer).__name__}", shapes[index]))
        activation = common.layer_activation(layer)
        if activation != "linear":
            f = activation_fn(activation)
            steps.append(lambda p, s, x, train, new, f=f: f(x))

    def run(p, s, x, train, new):
        for step in steps:
            x = step(p, s, x, train, new)
        return x

    return run


def make_forward(task: Task):
    """``forward(params, state, x, train) -> (outputs, new_state)`` for the task's layers, in JAX: ``train``
    normalizes a BatchNorm with the batch's statistics and returns its new running ones (else the state as is)."""
    model = _stack(task.layers, task.input_shape, "")

    def forward(params: dict[str, jax.Array], state: dict[str, jax.Array], x: jax.Array, train: bool = False):
        new: dict[str, jax.Array] = {}
        out = model(params, state, x, train, new)
        return out, {**state, **new}

    return forward


def make_pool(layer: MaxPool2D | AvgPool2D):
    """Pooling. Non-overlapping windows (strides == pool size, the common case) pool by reshape + max/mean:
    on CPU its gradient is a cheap fusion, while ``lax.reduce_window``'s select-and-scatter gradient made the CNN
    step ~1.4x slower (measured in benchmarks/native). Overlapping windows use ``reduce_window``."""
    import jax.numpy as jnp
    from jax import lax

    is_max = isinstance(layer, MaxPool2D)
    (pool_h, pool_w), strides = layer.pool_size, layer.strides  # type: ignore[misc]
    if strides == layer.pool_size:
        def pool(p, x):
            n, height, width, channels = x.shape
            out_h, out_w = height // pool_h, width // pool_w
            x = x[:, :out_h * pool_h, :out_w * pool_w, :].reshape(n, out_h, pool_h, out_w, pool_w, channels)
            return x.max(axis=(2, 4)) if is_max else x.mean(axis=(2, 4))
        return pool
    window, stride = (1, pool_h, pool_w, 1), (1, *strides, 1)  # type: ignore[misc]
    if is_max:
        return lambda p, x: lax.reduce_window(x, -jnp.inf, lax.max, window, stride, "VALID")
    return lambda p, x: lax.reduce_window(x, 0.0, lax.add, window, stride, "VALID") / (pool_h * pool_w)


def make_loss(task: Task):
    """``forward`` (:func:`make_forward`) and ``loss(params, state, x, y) -> (loss, new_state)`` in training mode."""
    import jax
    import jax.numpy as jnp

    forward = make_forward(task)

    def loss(params: dict[str, jax.Array], state: dict[str, jax.Array], x: jax.Array, y: jax.Array):
        out, new_state = forward(params, state, x, True)
        if task.loss == "mse":
            value = jnp.mean((out - y) ** 2)
        elif task.loss == "softmax_cross_entropy":  # over every sample (and position of a sequence)
            logp = jax.nn.log_softmax(out)
            value = -jnp.mean(jnp.take_along_axis(logp, y[..., None], axis=-1))
        else:
            value = jnp.mean(jnp.maximum(out, 0) - out * y + jnp.log1p(jnp.exp(-jnp.abs(out))))
        return value, new_state

    return forward, loss


class JaxTrainer(Trainer):
    def __init__(self, task: Task, device: jax.Device, weights: Weights) -> None:
        import jax
        import jax.numpy as jnp

        self._jax = jax
        self.task = task
        self.device = device
        put = lambda value: jax.device_put(value, device)  # noqa: E731
        trainable = set(task.param_names())
        self.params = {name: put(value) for name, value in weights.items() if name in trainable}
        self.state = {name: put(value) for name, value in weights.items() if name not in trainable}
        opt = task.optimizer
        zeros = lambda: {name: put(np.zeros_like(weights[name])) for name in self.params}  # noqa: E731
        self.opt_state: Any = (zeros(),) if isinstance(opt, SGD) else (zeros(), zeros(), put(np.float32(0)))
        forward, loss_fn = make_loss(task)
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        tree_map = jax.tree_util.tree_map
        adam = common.adam_constants(opt.beta1, opt.beta2) if not isinstance(opt, SGD) else {}

        def step(params, opt_state, state, x, y):
            (loss, state), grads = grad_fn(params, state, x, y)
            if isinstance(opt, SGD):
                (buf,) = opt_state
                buf = tree_map(lambda b, g: opt.momentum * b + g, buf, grads)
                return tree_map(lambda p, b: p - opt.learning_rate * b, params, buf), (buf,), state, loss
            m, v, t = opt_state
            t = t + 1
            if opt.clip_norm is not None:  # g * min(1, clip / ||g||), the norm over every gradient together
                norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree_util.tree_leaves(grads)))
                grads = tree_map(lambda g: g * jnp.minimum(1.0, opt.clip_norm / norm), grads)
            rate = opt.learning_rate * common.schedule_factor(task, t, jnp)
            if isinstance(opt, AdamW):  # decoupled decay, before Adam's update
                params = tree_map(lambda p: p - rate * opt.weight_decay * p, params)
            m = tree_map(lambda m_, g: adam["beta1"] * m_ + adam["one_minus_beta1"] * g, m, grads)
            v = tree_map(lambda v_, g: adam["beta2"] * v_ + adam["one_minus_beta2"] * g * g, v, grads)
            correction1 = -jnp.expm1(t * adam["log_beta1"])
            correction2 = -jnp.expm1(t * adam["log_beta2"])
            params = tree_map(lambda p, m_, v_: p - rate * (m_ / correction1)
                              / (jnp.sqrt(v_ / correction2) + opt.epsilon), params, m, v)
            return params, (m, v, t), state, loss

        self._step = jax.jit(step, donate_argnums=(0, 1, 2))
        self._forward = jax.jit(lambda params, state, x: forward(params, state, x, False)[0])
        self._grads = jax.jit(grad_fn)
        self.x_train = put(common.as_inputs(task, task.data.x_train))
        self.y_train = put(common.as_labels(task, task.data.y_train).astype(
            np.int32 if task.loss == "softmax_cross_entropy" else np.float32))
        self.x_batches: list[jax.Array] = []
        self.y_batches: list[jax.Array] = []

    def set_epoch(self, order: np.ndarray) -> None:
        index = self._jax.device_put(order.astype(np.int32), self.device)
        self.x_batches = list(self.x_train[index])
        self.y_batches = list(self.y_train[index])

    def train_step(self, batch: int) -> Any:
        self.params, self.opt_state, self.state, loss = self._step(
            self.params, self.opt_state, self.state, self.x_batches[batch], self.y_batches[batch])
        return loss

    def sync(self, value: Any = None) -> None:
        self._jax.block_until_ready((self.params, self.opt_state, self.state, value))

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = common.as_inputs(self.task, x)
        chunks = [np.asarray(self._forward(self.params, self.state,
                                           self._jax.device_put(x[start:start + 4096], self.device)))
                  for start in range(0, len(x), 4096)]
        return np.concatenate(chunks)

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
        labels = common.as_labels(self.task, y)
        if self.task.loss == "softmax_cross_entropy":
            labels = labels.astype(np.int32)
        put = lambda value: self._jax.device_put(value, self.device)  # noqa: E731
        (loss, _), grads = self._grads(self.params, self.state, put(common.as_inputs(self.task, x)), put(labels))
        return float(loss), {name: np.asarray(grads[name]) for name in self.task.param_names()}

    def get_weights(self) -> Weights:
        values = {**self.params, **self.state}
        return {name: np.asarray(values[name]) for name in self.task.tensors}

    def describe(self) -> dict[str, Any]:
        described = {"mode": "jax.jit (XLA), params, optimizer and model state donated"}
        if any(isinstance(site.layer, SelfAttention) for site in common.sites(self.task)):
            described["attention"] = ATTENTION
        return {**described, **common.conventions(self.task)}

    def compile_count(self) -> int | None:
        return int(self._step._cache_size())

    def device_peak_mb(self) -> float | None:
        if self.device.platform == "cpu":
            return None
        stats = self.device.memory_stats() or {}
        peak = stats.get("peak_bytes_in_use")
        return None if peak is None else peak / 2**20


class JaxBackend(Backend):
    name = "jax"
    compiles = True
    module = "jax"
    distribution = "jax"
    extra = "jax"
    layout = "NHWC"
    # several frameworks' workers are alive at once: none may take a GPU's memory up front (JAX preallocates 75% by
    # default; untested on a GPU so far); XLA's C++ logs through absl
    quiet: ClassVar[dict[str, str]] = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "ABSL_MIN_LOG_LEVEL": "3"}

    def configure_threads(self, threads: int) -> None:
        """XLA:CPU sizes its pool from the cores it may use (the worker sets CPU affinity); with one thread it
        would still split work over several threads on that one core: measured 18.1 vs 13.5 ms for a
        1024x1024 matmul pinned to one core, so single-threaded runs switch the multi-threaded path off."""
        super().configure_threads(threads)
        if threads == 1:
            flags = os.environ.get("XLA_FLAGS", "")
            os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1".strip()

    def setup(self, threads: int) -> None:
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")  # full float32 on GPU (no TF32)
        self._threads = threads

    def versions(self) -> dict[str, str]:
        import jax
        import jaxlib

        return {"jax": jax.__version__, "jaxlib": jaxlib.__version__}

    def _device(self, kind: str) -> jax.Device | None:
        import jax

        try:
            found = jax.devices("cpu" if kind == "cpu" else "gpu")
        except RuntimeError:
            return None
        return found[0] if found else None

    def devices(self) -> list[dict[str, str]]:
        found = [{"kind": "cpu", "name": cpu_name()}]
        gpu = self._device("gpu")
        if gpu is not None:
            found.append({"kind": "gpu", "name": str(getattr(gpu, "device_kind", gpu))})
        return found

    def fingerprint(self, device_kind: str) -> dict[str, Any]:
        import jax

        return {
            "dtype": "float32",
            "layout": self.layout,
            "matmul_precision": str(jax.config.jax_default_matmul_precision),
            "threads": f"{self._threads} (XLA CPU pool follows CPU affinity)",
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "deterministic_ops": "XLA CPU is deterministic; GPU default",
            "jit": "jax.jit, params and optimizer state donated",
            "optimizer_impl": "hand-written tree_map (spec formula)",
        }

    def build(self, task: Task, device_kind: str, weights: Weights) -> Trainer:
        device = self._device(device_kind)
        assert device is not None  # unsupported_reason() ran first
        return JaxTrainer(task, device, weights)
