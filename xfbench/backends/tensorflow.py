"""TensorFlow adapter: one class, three modes. ``graph=True`` runs the step in ``tf.function`` (tf-graph: with XLA
where that is faster, see :func:`use_xla`), ``graph=False`` runs the same step eagerly (tf-eager), and
``xla=True`` compiles the tf.function step with XLA (``jit_compile=True``) for every model (tf-xla).

The idiom is raw ``tf.nn`` ops on ``tf.Variable``s (not Keras layers: measured faster in eager mode) in NHWC/HWIO,
TensorFlow's native layout and the neutral one; attention is written out with ``tf.einsum`` and a softmax
(TensorFlow has no fused attention op of its own), normalizations with ``tf.nn.moments`` and
``(x - mean) * rsqrt(var + eps) * gamma + beta``. The optimizer update is one fused kernel per variable: ``ResourceApplyMomentum``
(PyTorch's momentum formula) and ``ResourceApplyAdam`` with its epsilon set to ``epsilon * sqrt(1 - beta2**t)``,
which turns TensorFlow's "epsilon hat" Adam into exactly the formula in ``xfbench.tasks.optim`` (PyTorch's and
optax's); AdamW's decay, clipping (``tf.clip_by_global_norm``) and the schedule go before it.
"""

from __future__ import annotations

import math
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
    import tensorflow as tf

ATTENTION = "tf.einsum + tf.nn.softmax (no fused attention op in TensorFlow)"
Op = Callable[[Any, bool, bool], Any]  # (x, training, update_state) -> x


def _activation(name: str) -> Callable[[Any], Any] | None:
    import tensorflow as tf

    return {"relu": tf.nn.relu, "sigmoid": tf.sigmoid, "tanh": tf.tanh,
            "gelu": lambda x: tf.nn.gelu(x, approximate=False),  # explicit: the spec names the form
            "gelu_tanh": lambda x: tf.nn.gelu(x, approximate=True)}.get(name)


def _linear(x: Any, kernel: Any, bias: Any | None) -> Any:
    """``x @ kernel (+ bias)`` on the last axis of vectors or sequences (a sequence is reshaped to rows)."""
    import tensorflow as tf

    if len(x.shape) == 2:
        out = tf.matmul(x, kernel)
    else:
        shape = tf.shape(x)
        out = tf.reshape(tf.matmul(tf.reshape(x, [-1, shape[-1]]), kernel),
                         tf.concat([shape[:-1], [tf.shape(kernel)[-1]]], 0))
    return tf.nn.bias_add(out, bias) if bias is not None else out


def _layer_op(layer: Layer, name: str, in_shape: tuple[int, ...], v: dict[str, tf.Variable]) -> Op:
    import tensorflow as tf

    def get(tensor: str) -> Any:
        return v.get(f"{name}.{tensor}")

    if isinstance(layer, Dense):
        kernel, bias = get("kernel"), get("bias")
        return lambda x, training, update: _linear(x, kernel, bias)
    if isinstance(layer, Conv2D):
        kernel, bias = get("kernel"), get("bias")
        # TensorFlow's own "SAME" rule is the neutral one (extra pixel bottom/right)
        padding, strides = layer.padding.upper(), layer.strides

        def conv(x, training, update):
            out = tf.nn.conv2d(x, kernel, strides, padding)
            return tf.nn.bias_add(out, bias) if bias is not None else out
        return conv
    if isinstance(layer, MaxPool2D):
        return lambda x, training, update, w=layer.pool_size, s=layer.strides: tf.nn.max_pool2d(x, w, s, "VALID")
    if isinstance(layer, AvgPool2D):
        return lambda x, training, update, w=layer.pool_size, s=layer.strides: tf.nn.avg_pool2d(x, w, s, "VALID")
    if isinstance(layer, GlobalAvgPool2D):
        return lambda x, training, update: tf.reduce_mean(x, axis=[1, 2])
    if isinstance(layer, Flatten):
        return lambda x, training, update: tf.reshape(x, [tf.shape(x)[0], -1])
    def normalize(x, mean, var, gamma, beta, epsilon):
        # (x - mean) * rsqrt(var + eps) * gamma + beta, the spec's order: tf.nn.batch_normalization computes
        # x * inv + (beta - mean * inv), which cancels where |mean| >> std (measured in docs/parity.md), and is slower
        return (x - mean) * (tf.math.rsqrt(var + epsilon) * gamma) + beta

    if isinstance(layer, LayerNorm):
        gamma, beta, epsilon = get("gamma"), get("beta"), layer.epsilon

        def layer_norm(x, training, update):
            mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
            return normalize(x, mean, var, gamma, beta, epsilon)
        return layer_norm
    if isinstance(layer, BatchNorm):
        gamma, beta, epsilon, momentum = get("gamma"), get("beta"), layer.epsilon, layer.momentum
        running_mean, running_var = get("running_mean"), get("running_var")
        axes = list(range(len(in_shape)))

        def batch_norm(x, training, update):
            if not training:
                return normalize(x, running_mean, running_var, gamma, beta, epsilon)
            mean, var = tf.nn.moments(x, axes=axes)  # biased, as the spec
            if update:
                running_mean.assign((1 - momentum) * running_mean + momentum * tf.stop_gradient(mean))
                running_var.assign((1 - momentum) * running_var + momentum * tf.stop_gradient(var))
            return normalize(x, mean, var, gamma, beta, epsilon)
        return batch_norm
    if isinstance(layer, Embedding):
        table = get("embeddings")
        return lambda x, training, update: tf.gather(table, x)
    if isinstance(layer, PositionEmbedding):
        table = get("embeddings")
        return lambda x, training, update: x + table[: tf.shape(x)[1]]
    if isinstance(layer, SelfAttention):
        heads, size, scale, causal = layer.heads, layer.head_size, layer.scale, layer.causal
        w = {part: (get(f"{part}.kernel"), get(f"{part}.bias")) for part in ("query", "key", "value", "output")}

        def attention(x, training, update):
            batch, length = tf.shape(x)[0], tf.shape(x)[1]
            q, k, val = (tf.reshape(_linear(x, *w[part]), [batch, length, heads, size])
                         for part in ("query", "key", "value"))
            scores = tf.einsum("bqhd,bkhd->bhqk", q, k) * scale
            if causal:
                mask = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)
                scores = tf.where(mask, scores, tf.constant(-np.inf, scores.dtype))
            mixed = tf.einsum("bhqk,bkhd->bqhd", tf.nn.softmax(scores, axis=-1), val)
            return _linear(tf.reshape(mixed, [batch, length, heads * size]), *w["output"])
        return attention
    if isinstance(layer, Residual):
        body = _stack(layer.body, in_shape, f"{name}.body.", v)
        shortcut = _stack(layer.shortcut, in_shape, f"{name}.shortcut.", v) if layer.shortcut else None
        return lambda x, training, update: body(x, training, update) + (
            shortcut(x, training, update) if shortcut else x)
    return lambda x, training, update: x  # Activation: applied below


def _stack(layers: Sequence[Layer], in_shape: tuple[int, ...], prefix: str, v: dict[str, tf.Variable]) -> Op:
    shapes = infer_shapes(in_shape, layers)
    ops: list[Op] = []
    for index, layer in enumerate(layers):
        ops.append(_layer_op(layer, f"{prefix}{index}.{type(layer).__name__}", shapes[index], v))
        activation = _activation(common.layer_activation(layer))
        if activation is not None:
            ops.append(lambda x, training, update, f=activation: f(x))

    def run(x, training, update):
        for op in ops:
            x = op(x, training, update)
        return x

    return run


def make_forward(task: Task, variables: dict[str, tf.Variable]):
    """``forward(x, training=False, update_state=False)`` applying the task's layers with raw TensorFlow ops on
    ``variables``: ``training`` normalizes a BatchNorm with the batch's statistics, ``update_state`` then moves its
    running ones."""
    model = _stack(task.layers, task.input_shape, "", variables)

    def forward(x: tf.Tensor, training: bool = False, update_state: bool = False) -> tf.Tensor:
        return model(x, training, update_state)

    return forward


def use_xla(task: Task, device: str) -> bool:
    """Whether tf-graph compiles the step with XLA (``jit_compile=True``): on GPU always; on CPU only for models
    without convolutions. Measured on CPU, 2 threads: MLP 784-256-256-10 step 2.14 ms with XLA vs 2.47 ms
    without; 28x28 CNN 42.6 ms with XLA vs 16.9 ms without (XLA's CPU convolutions are slow)."""
    return device.startswith("/GPU") or not any(isinstance(site.layer, Conv2D) for site in common.sites(task))


class TensorFlowTrainer(Trainer):
    def __init__(self, task: Task, device: str, weights: Weights, graph: bool, xla: bool | None = None) -> None:
        import tensorflow as tf

        self._tf = tf
        self.task = task
        self.device = device
        self.graph = graph
        trainable = task.param_names()
        with tf.device(device):
            self.variables = {name: tf.Variable(weights[name], name=name.replace(".", "_"),
                                                trainable=name in trainable) for name in task.tensors}
            self.var_list = [self.variables[name] for name in trainable]
            self.slots = [[tf.Variable(tf.zeros_like(v)) for v in self.var_list]
                          for _ in range(1 if isinstance(task.optimizer, SGD) else 2)]
            self.step_count = tf.Variable(0.0, dtype=tf.float32)
            self.x_train = tf.identity(tf.constant(common.as_inputs(task, task.data.x_train)))
            self.y_train = tf.identity(tf.constant(common.as_labels(task, task.data.y_train)))
        self.forward = make_forward(task, self.variables)
        loss_fns = {
            "mse": lambda out, y: tf.reduce_mean(tf.square(out - y)),
            "softmax_cross_entropy": lambda out, y: tf.reduce_mean(  # every sample (and position of a sequence)
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=out)),
            "sigmoid_binary_cross_entropy": lambda out, y: tf.reduce_mean(
                tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=out)),
        }
        self.loss_fn = loss_fns[task.loss]
        opt = task.optimizer
        with tf.device(device):  # constants made once: eager steps convert no Python scalars
            if isinstance(opt, SGD):
                self._sgd = {"lr": tf.constant(opt.learning_rate, tf.float32),
                             "momentum": tf.constant(opt.momentum, tf.float32)}
            else:
                adam = common.adam_constants(opt.beta1, opt.beta2)
                self._adam = {key: tf.constant(adam[key], tf.float32) for key in ("beta1", "beta2", "log_beta1",
                                                                                 "log_beta2")}
                self._adam.update(lr=tf.constant(opt.learning_rate, tf.float32), zero=tf.constant(0.0, tf.float32),
                                  epsilon=tf.constant(opt.epsilon, tf.float32),
                                  log_beta1_f64=adam["log_beta1"], log_beta2_f64=adam["log_beta2"])
        self.host_step = 0
        self.jit_compile = graph and (use_xla(task, device) if xla is None else xla)
        self._step = tf.function(self._step_impl, jit_compile=self.jit_compile) if graph else self._step_impl
        # predictions and parity's gradients go through the same compiler as the step, so parity judges what trains
        self._grads = tf.function(self._grads_impl, jit_compile=self.jit_compile) if graph else self._grads_impl
        self._predict = tf.function(self.forward, jit_compile=self.jit_compile) if graph else self.forward
        self.x_batches: list[tf.Tensor] = []
        self.y_batches: list[tf.Tensor] = []

    def _grads_impl(self, x: tf.Tensor, y: tf.Tensor, update_state: bool = False) -> tuple[tf.Tensor, list[tf.Tensor]]:
        tf = self._tf
        with tf.GradientTape() as tape:
            loss = self.loss_fn(self.forward(x, True, update_state), y)
        # an embedding's gradient comes as IndexedSlices (rows of the batch's tokens): dense, as the spec's Adam
        # updates every row (its moments decay where a token is absent)
        return loss, [tf.convert_to_tensor(grad) for grad in tape.gradient(loss, self.var_list)]

    def _step_impl(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        tf = self._tf
        loss, grads = self._grads_impl(x, y, update_state=True)
        opt = self.task.optimizer
        if isinstance(opt, SGD):
            for var, buf, grad in zip(self.var_list, self.slots[0], grads, strict=True):
                tf.raw_ops.ResourceApplyMomentum(var=var.handle, accum=buf.handle, lr=self._sgd["lr"],
                                                 grad=grad, momentum=self._sgd["momentum"])
            return loss
        if opt.clip_norm is not None:  # TensorFlow's formula is the spec's: g * min(1, clip / ||g||)
            grads, _ = tf.clip_by_global_norm(grads, opt.clip_norm)
        # The kernel computes alpha = lr * sqrt(1 - beta2_power) / (1 - beta1_power) and
        # var -= alpha * m / (sqrt(v) + epsilon). With both powers 0, we pass alpha and epsilon ourselves:
        # alpha = lr_t * sqrt(c2) / c1, epsilon = eps * sqrt(c2), the bias corrections c computed stably.
        c = self._adam
        if self.graph:  # on the device, inside the graph
            t = self.step_count.assign_add(1.0)
            correction1, correction2 = -tf.math.expm1(t * c["log_beta1"]), -tf.math.expm1(t * c["log_beta2"])
            root2 = tf.sqrt(correction2)
            rate = c["lr"] * common.schedule_factor(self.task, t, tf.math)
            alpha, epsilon_hat = rate * root2 / correction1, c["epsilon"] * root2
        else:  # eager: the scalars computed on the host in float64 instead of ten tiny eager ops
            self.host_step += 1
            correction1 = -math.expm1(self.host_step * c["log_beta1_f64"])
            root2 = math.sqrt(-math.expm1(self.host_step * c["log_beta2_f64"]))
            rate = opt.rate(self.host_step)
            alpha = tf.constant(rate * root2 / correction1, tf.float32)
            epsilon_hat = tf.constant(opt.epsilon * root2, tf.float32)
        if isinstance(opt, AdamW):  # decoupled decay before Adam's update
            decay = tf.cast(rate * opt.weight_decay, tf.float32)
            for var in self.var_list:
                var.assign_sub(decay * var)
        for var, m, v, grad in zip(self.var_list, self.slots[0], self.slots[1], grads, strict=True):
            tf.raw_ops.ResourceApplyAdam(var=var.handle, m=m.handle, v=v.handle, beta1_power=c["zero"],
                                         beta2_power=c["zero"], lr=alpha, beta1=c["beta1"], beta2=c["beta2"],
                                         epsilon=epsilon_hat, grad=grad)
        return loss

    def set_epoch(self, order: np.ndarray) -> None:
        tf = self._tf
        with tf.device(self.device):
            index = tf.constant(order)
            self.x_batches = tf.unstack(tf.gather(self.x_train, index))
            self.y_batches = tf.unstack(tf.gather(self.y_train, index))

    def train_step(self, batch: int) -> Any:
        with self._tf.device(self.device):
            return self._step(self.x_batches[batch], self.y_batches[batch])

    def sync(self, value: Any = None) -> None:
        if value is not None:
            value.numpy()  # waits for the step that produced it (and, in order, all before it)
        else:
            self.step_count.numpy()
        if self.device.startswith("/GPU"):
            self._tf.test.experimental.sync_devices()

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = common.as_inputs(self.task, x)
        with self._tf.device(self.device):
            return np.concatenate([self._predict(self._tf.constant(x[start:start + 4096])).numpy()
                                   for start in range(0, len(x), 4096)])

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
        with self._tf.device(self.device):
            loss, grads = self._grads(self._tf.constant(common.as_inputs(self.task, x)),
                                      self._tf.constant(common.as_labels(self.task, y)))
        return float(loss), {name: grad.numpy() for name, grad in zip(self.task.param_names(), grads, strict=True)}

    def get_weights(self) -> Weights:
        return {name: var.numpy() for name, var in self.variables.items()}

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {"mode": "eager", "xla": False}
        if self.graph:
            described = {"mode": "graph (tf.function" + (", XLA jit_compile)" if self.jit_compile else ")"),
                         "xla": bool(self.jit_compile)}
        if any(isinstance(site.layer, SelfAttention) for site in common.sites(self.task)):
            described["attention"] = ATTENTION
        return {**described, **common.conventions(self.task)}

    def compile_count(self) -> int | None:
        return int(self._step.experimental_get_tracing_count()) if self.graph else None

    def device_peak_mb(self) -> float | None:
        if not self.device.startswith("/GPU"):
            return None
        return self._tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20


QUIET = {
    "TF_CPP_MIN_LOG_LEVEL": "3",        # TensorFlow's C++ logs
    "TF_ENABLE_ONEDNN_OPTS": "1",       # the default, stated so the fingerprint is explicit
    "ABSL_MIN_LOG_LEVEL": "3",
    "GRPC_VERBOSITY": "ERROR",
}


class TensorFlowBackend(Backend):
    module = "tensorflow"
    distribution = "tensorflow-cpu"
    extra = "tensorflow"
    layout = "NHWC"
    quiet: ClassVar[dict[str, str]] = QUIET

    def __init__(self, graph: bool, xla: bool | None = None) -> None:
        self.graph = graph
        self.xla = xla
        self.compiles = graph
        self.name = "tf-xla" if xla else "tf-graph" if graph else "tf-eager"

    def configure_threads(self, threads: int) -> None:
        super().configure_threads(threads)
        os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
        os.environ["TF_NUM_INTEROP_THREADS"] = str(threads)

    def setup(self, threads: int) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        tf.config.experimental.enable_tensor_float_32_execution(False)
        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)

    def versions(self) -> dict[str, str]:
        import tensorflow as tf

        info = tf.sysconfig.get_build_info()
        versions = {"tensorflow": tf.__version__}
        if info.get("cuda_version"):
            versions["cuda"] = str(info["cuda_version"])
        return versions

    def devices(self) -> list[dict[str, str]]:
        import tensorflow as tf

        found = [{"kind": "cpu", "name": cpu_name()}]
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            found.append({"kind": "gpu", "name": details.get("device_name", gpus[0].name)})
        return found

    def fingerprint(self, device_kind: str) -> dict[str, Any]:
        import tensorflow as tf

        return {
            "dtype": "float32",
            "layout": self.layout,
            "mode": "graph (tf.function)" if self.graph else "eager",  # the built trainer's describe() says more
            "matmul_precision": "tf32" if tf.config.experimental.tensor_float_32_execution_enabled() else "float32",
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
            "deterministic_ops": os.environ.get("TF_DETERMINISTIC_OPS", "0") == "1",
            "optimizer_impl": "fused ResourceApply* kernels (spec formula)",
        }

    def build(self, task: Task, device_kind: str, weights: Weights) -> Trainer:
        return TensorFlowTrainer(task, "/GPU:0" if device_kind == "gpu" else "/CPU:0", weights, self.graph, self.xla)
