"""JAX adapter: pure functions of a parameter pytree, the whole optimizer step under ``jax.jit``.

The idiom: ``lax.conv_general_dilated`` on NHWC/HWIO (the neutral layout, so weights load as they are),
``lax.reduce_window`` for pooling, Adam / SGD written with ``jax.tree_util`` (the formulas in
``xfbench.tasks.spec``), and the step jitted once with the parameter and optimizer buffers donated.
Thread count: XLA's CPU thread pool follows the process's CPU affinity, which the worker sets.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from xfbench.backends import common
from xfbench.backends.base import Backend, Trainer, Weights
from xfbench.machine import cpu_name
from xfbench.tasks.spec import SGD, AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D, Task

if TYPE_CHECKING:
    import jax


def make_forward(task: Task):
    """``forward(params, x)`` for the task's layers, in JAX."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    activations = {"linear": lambda x: x, "relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh}
    steps = []
    for index, layer in enumerate(task.layers):
        prefix = f"{index}.{type(layer).__name__}"
        if isinstance(layer, Dense):
            steps.append(lambda p, x, k=prefix: x @ p[f"{k}.kernel"] + p[f"{k}.bias"])
        elif isinstance(layer, Conv2D):
            padding = common.conv_padding(task, index)
            steps.append(lambda p, x, k=prefix, s=layer.strides, pad=padding: lax.conv_general_dilated(
                x, p[f"{k}.kernel"], s, pad, dimension_numbers=("NHWC", "HWIO", "NHWC")) + p[f"{k}.bias"])
        elif isinstance(layer, (MaxPool2D, AvgPool2D)):
            steps.append(make_pool(layer))
        elif isinstance(layer, Flatten):
            steps.append(lambda p, x: x.reshape(x.shape[0], -1))
        activation = common.layer_activation(layer)
        if activation != "linear":
            steps.append(lambda p, x, f=activations[activation]: f(x))

    def forward(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
        for step in steps:
            x = step(params, x)
        return x

    return forward


def make_pool(layer: MaxPool2D | AvgPool2D):
    """Pooling. Non-overlapping windows (strides == pool size, the common case) pool by reshape + max/mean:
    on CPU its gradient is a cheap fusion, while ``lax.reduce_window``'s select-and-scatter gradient made the CNN
    step ~1.4x slower (measured in benchmarks/native). Overlapping windows use ``reduce_window``."""
    import jax.numpy as jnp
    from jax import lax

    is_max = isinstance(layer, MaxPool2D)
    (pool_h, pool_w), strides = layer.pool_size, layer.strides
    if strides == layer.pool_size:
        def pool(p, x):
            n, height, width, channels = x.shape
            out_h, out_w = height // pool_h, width // pool_w
            x = x[:, :out_h * pool_h, :out_w * pool_w, :].reshape(n, out_h, pool_h, out_w, pool_w, channels)
            return x.max(axis=(2, 4)) if is_max else x.mean(axis=(2, 4))
        return pool
    window, stride = (1, pool_h, pool_w, 1), (1, *strides, 1)
    if is_max:
        return lambda p, x: lax.reduce_window(x, -jnp.inf, lax.max, window, stride, "VALID")
    return lambda p, x: lax.reduce_window(x, 0.0, lax.add, window, stride, "VALID") / (pool_h * pool_w)


def make_loss(task: Task):
    import jax
    import jax.numpy as jnp

    forward = make_forward(task)

    def loss(params: dict[str, jax.Array], x: jax.Array, y: jax.Array) -> jax.Array:
        out = forward(params, x)
        if task.loss == "mse":
            return jnp.mean((out - y) ** 2)
        if task.loss == "softmax_cross_entropy":
            logp = jax.nn.log_softmax(out)
            return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))
        return jnp.mean(jnp.maximum(out, 0) - out * y + jnp.log1p(jnp.exp(-jnp.abs(out))))

    return forward, loss


class JaxTrainer(Trainer):
    def __init__(self, task: Task, device: jax.Device, weights: Weights) -> None:
        import jax
        import jax.numpy as jnp

        self._jax = jax
        self.task = task
        self.device = device
        put = lambda value: jax.device_put(value, device)  # noqa: E731
        self.params = {name: put(value) for name, value in weights.items()}
        opt = task.optimizer
        zeros = lambda: {name: put(np.zeros_like(value)) for name, value in weights.items()}  # noqa: E731
        self.opt_state: Any = (zeros(),) if isinstance(opt, SGD) else (zeros(), zeros(), put(np.float32(0)))
        forward, loss_fn = make_loss(task)
        grad_fn = jax.value_and_grad(loss_fn)
        tree_map = jax.tree_util.tree_map
        adam = common.adam_constants(opt.beta1, opt.beta2) if not isinstance(opt, SGD) else {}

        def step(params, state, x, y):
            loss, grads = grad_fn(params, x, y)
            if isinstance(opt, SGD):
                (buf,) = state
                buf = tree_map(lambda b, g: opt.momentum * b + g, buf, grads)
                return tree_map(lambda p, b: p - opt.learning_rate * b, params, buf), (buf,), loss
            m, v, t = state
            t = t + 1
            m = tree_map(lambda m_, g: adam["beta1"] * m_ + adam["one_minus_beta1"] * g, m, grads)
            v = tree_map(lambda v_, g: adam["beta2"] * v_ + adam["one_minus_beta2"] * g * g, v, grads)
            correction1 = -jnp.expm1(t * adam["log_beta1"])
            correction2 = -jnp.expm1(t * adam["log_beta2"])
            params = tree_map(lambda p, m_, v_: p - opt.learning_rate * (m_ / correction1)
                              / (jnp.sqrt(v_ / correction2) + opt.epsilon), params, m, v)
            return params, (m, v, t), loss

        self._step = jax.jit(step, donate_argnums=(0, 1))
        self._forward = jax.jit(forward)
        self._grads = jax.jit(grad_fn)
        self.x_train = put(task.data.x_train)
        self.y_train = put(common.as_labels(task, task.data.y_train).astype(
            np.int32 if task.loss == "softmax_cross_entropy" else np.float32))
        self.x_batches: list[jax.Array] = []
        self.y_batches: list[jax.Array] = []

    def set_epoch(self, order: np.ndarray) -> None:
        index = self._jax.device_put(order.astype(np.int32), self.device)
        self.x_batches = list(self.x_train[index])
        self.y_batches = list(self.y_train[index])

    def train_step(self, batch: int) -> Any:
        self.params, self.opt_state, loss = self._step(
            self.params, self.opt_state, self.x_batches[batch], self.y_batches[batch])
        return loss

    def sync(self, value: Any = None) -> None:
        self._jax.block_until_ready((self.params, self.opt_state, value))

    def predict(self, x: np.ndarray) -> np.ndarray:
        chunks = [np.asarray(self._forward(self.params, self._jax.device_put(x[start:start + 4096], self.device)))
                  for start in range(0, len(x), 4096)]
        return np.concatenate(chunks)

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
        labels = common.as_labels(self.task, y)
        if self.task.loss == "softmax_cross_entropy":
            labels = labels.astype(np.int32)
        loss, grads = self._grads(self.params, self._jax.device_put(x, self.device),
                                  self._jax.device_put(labels, self.device))
        return float(loss), {name: np.asarray(value) for name, value in grads.items()}

    def get_weights(self) -> Weights:
        return {name: np.asarray(value) for name, value in self.params.items()}

    def describe(self) -> dict[str, Any]:
        return {"mode": "jax.jit (XLA), params and optimizer state donated"}

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
