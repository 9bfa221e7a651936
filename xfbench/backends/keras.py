"""Keras 3 on each of its backends (keras-jax, keras-tensorflow, keras-torch): Keras as its users run it.

The task becomes an ordinary ``keras.Sequential`` of Keras layers (channels_last, so the neutral weights load as
they are), compiled with the task's loss and Keras' own optimizer (``keras.optimizers.Adam`` / ``SGD``) set to the
task's hyperparameters, and ``jit_compile="auto"`` (Keras' default: what it resolved to is recorded). A step is
one call of Keras' own compiled train step, ``Model.train_function``, made the way ``Model.fit`` makes it: no
per-step conversion of the logs to Python (which is what ``train_on_batch`` adds), and on JAX the state kept out
of the model's variables between steps and written back only when it is read, as ``fit`` does per epoch.

``KERAS_BACKEND`` must be set before Keras is imported, so each Keras backend needs a process of its own
(:meth:`KerasBackend.process_env`); threads, versions and devices come from the native adapter of the same
framework, so a keras-X cell runs with exactly the settings of the X cell beside it.

Where Keras' formula differs from the task's spec it says so: Keras' Adam adds epsilon before the bias correction
(``w -= lr * sqrt(1 - b2**t) / (1 - b1**t) * m / (sqrt(v) + eps)``), and computes those corrections in float32.
The trainer reports ``optimizer_formula: "keras"`` and parity judges it against a float64 reference of that
formula (:func:`xfbench.tasks.reference.optimizer_steps`), showing the difference from the spec beside it.

GPU: not tested (no accelerator was available to this project), so these backends report GPU as unsupported.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from xfbench.backends import common
from xfbench.backends.base import Backend, Trainer, Weights
from xfbench.errors import XfbenchError, unknown_name
from xfbench.tasks.spec import (
    SGD,
    Activation,
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

FRAMEWORKS = {"jax": "jax", "tensorflow": "tf-graph", "torch": "torch"}  # Keras backend -> native adapter
ATTENTION = "keras.layers.MultiHeadAttention (keras.ops.dot_product_attention: the backend's kernel)"


@functools.cache
def _own_layers() -> Any:
    """Keras layers xfbench defines where Keras has none with the spec's function (Keras' own code style)."""
    import keras

    class PositionEmbedding(keras.layers.Layer):
        """A learned position embedding: adds row t of a (max_length, width) table to position t."""

        def __init__(self, max_length: int, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.max_length = max_length

        def build(self, input_shape: Any) -> None:
            self.embeddings = self.add_weight(shape=(self.max_length, input_shape[-1]), initializer="zeros",
                                              name="embeddings")

        def call(self, inputs: Any) -> Any:
            return inputs + self.embeddings[: keras.ops.shape(inputs)[1]]

    class WarmupCosineSchedule(keras.optimizers.schedules.LearningRateSchedule):
        """The spec's rate of update t, ``learning_rate * WarmupCosine.factor(t)``: Keras passes the number of
        updates done so far (t - 1). Keras' own ``CosineDecay`` warm-up starts at step 0, one update earlier."""

        def __init__(self, task: Task) -> None:
            self.task = task

        def __call__(self, step: Any) -> Any:
            factor = common.schedule_factor(self.task, keras.ops.cast(step, "float32") + 1.0, keras.ops)
            return self.task.optimizer.learning_rate * factor

        def get_config(self) -> dict[str, Any]:
            return {"task": self.task.name}

    class DenseGradientEmbedding(keras.layers.Embedding):
        """keras-tensorflow only: Keras' Embedding whose gradient is a dense table, the duplicate rows of a batch's
        repeated tokens summed. Keras' TensorFlow optimizers take the ``tf.IndexedSlices`` gradient of a gather and
        square its rows *before* summing duplicates (``ops.square`` in Adam's second moment and in
        ``clip_by_global_norm``), which differs from the dense gradient's formula: measured on the transformer,
        parameters 3-24% apart from every other backend after 5 steps (``docs/parity.md``)."""

        def call(self, inputs: Any) -> Any:
            import tensorflow as tf

            vocab = self.input_dim

            @tf.custom_gradient
            def take(table: Any, ids: Any) -> Any:
                def grad(upstream: Any) -> Any:
                    rows = tf.reshape(upstream, [-1, tf.shape(table)[-1]])
                    return tf.math.unsorted_segment_sum(rows, tf.reshape(ids, [-1]), vocab), None
                return tf.gather(table, ids), grad

            return take(self.embeddings.value, tf.cast(inputs, "int32"))

    return type("Layers", (), {"PositionEmbedding": PositionEmbedding, "WarmupCosineSchedule": WarmupCosineSchedule,
                               "DenseGradientEmbedding": DenseGradientEmbedding})


def _keras_activation(name: str) -> Any:
    """Keras' activation of the spec's name: GELU's form explicit (Keras' string "gelu" is the exact one)."""
    import keras

    if name == "gelu":
        return functools.partial(keras.activations.gelu, approximate=False)
    if name == "gelu_tanh":
        return functools.partial(keras.activations.gelu, approximate=True)
    return name


class _Model:
    """The task as a Keras functional model, and which Keras variable holds each spec tensor (by spec name).

    ``stock=True`` builds it from Keras' own layers only, as a user would, even where Keras on a backend computes
    another function than the spec (keras-tensorflow's embedding gradient: :class:`DenseGradientEmbedding`); the
    Keras comparison of ``benchmarks/keras_parity.py`` measures Keras so."""

    def __init__(self, task: Task, stock: bool = False) -> None:
        import keras

        self.task, self.stock = task, stock
        self.variables: dict[str, Any] = {}
        self._pending: list[tuple[str, Any, dict[str, str]]] = []
        inputs = keras.Input(shape=task.input_shape, dtype="int32" if task.tokens else "float32")
        self.model = keras.Model(inputs, self.stack(task.layers, inputs, ""))
        for name, layer, attributes in self._pending:  # built now: the variables exist
            for tensor, attribute in attributes.items():
                variable = layer
                for part in attribute.split("."):
                    variable = getattr(variable, part)
                self.variables[f"{name}.{tensor}"] = variable
        self.variables = {name: self.variables[name] for name in task.tensors}

    def stack(self, layers: Sequence[Layer], x: Any, prefix: str) -> Any:
        import keras

        for index, layer in enumerate(layers):
            name = f"{prefix}{index}.{type(layer).__name__}"
            if isinstance(layer, Residual):
                body = self.stack(layer.body, x, f"{name}.body.")
                shortcut = self.stack(layer.shortcut, x, f"{name}.shortcut.") if layer.shortcut else x
                x = keras.layers.Add()([body, shortcut])
                if layer.activation != "linear":
                    x = keras.layers.Activation(_keras_activation(layer.activation))(x)
                continue
            keras_layer = self.layer(layer, name)
            attention = isinstance(layer, SelfAttention)
            x = keras_layer(x, x, use_causal_mask=layer.causal) if attention else keras_layer(x)  # type: ignore[union-attr]
        return x

    def layer(self, layer: Layer, name: str) -> Any:
        """The Keras layer computing the same function as one xfbench layer (channels_last, neutral layouts)."""
        import keras

        def track(keras_layer: Any, *tensors: str, **renamed: str) -> Any:
            """Record the variables of ``keras_layer`` that hold the spec's ``tensors`` (same names) and
            ``renamed`` ones (spec name = Keras attribute path)."""
            self._pending.append((name, keras_layer, {**{tensor: tensor for tensor in tensors}, **renamed}))
            return keras_layer

        if isinstance(layer, Dense):
            return track(keras.layers.Dense(layer.units, activation=_keras_activation(layer.activation),
                                            use_bias=layer.use_bias), "kernel", *(("bias",) if layer.use_bias else ()))
        if isinstance(layer, Conv2D):
            return track(keras.layers.Conv2D(layer.filters, layer.kernel_size, strides=layer.strides,
                                             padding=layer.padding, activation=_keras_activation(layer.activation),
                                             use_bias=layer.use_bias, data_format="channels_last"),
                         "kernel", *(("bias",) if layer.use_bias else ()))
        if isinstance(layer, MaxPool2D):
            return keras.layers.MaxPooling2D(layer.pool_size, strides=layer.strides, padding="valid")
        if isinstance(layer, AvgPool2D):
            return keras.layers.AveragePooling2D(layer.pool_size, strides=layer.strides, padding="valid")
        if isinstance(layer, GlobalAvgPool2D):
            return keras.layers.GlobalAveragePooling2D(data_format="channels_last")
        if isinstance(layer, Flatten):
            return keras.layers.Flatten(data_format="channels_last")  # H, W, C order, as the neutral Flatten
        if isinstance(layer, Activation):
            return keras.layers.Activation(_keras_activation(layer.name))
        if isinstance(layer, LayerNorm):  # Keras' default epsilon is 1e-3: the spec's is set
            return track(keras.layers.LayerNormalization(axis=-1, epsilon=layer.epsilon), "gamma", "beta")
        if isinstance(layer, BatchNorm):  # Keras' momentum weighs the old value: 1 - the spec's
            return track(keras.layers.BatchNormalization(axis=-1, momentum=1.0 - layer.momentum, epsilon=layer.epsilon),
                         "gamma", "beta", running_mean="moving_mean", running_var="moving_variance")
        if isinstance(layer, Embedding):
            kind = (_own_layers().DenseGradientEmbedding if keras.backend.backend() == "tensorflow" and not self.stock
                    else keras.layers.Embedding)
            return track(kind(layer.vocab_size, layer.width), "embeddings")
        if isinstance(layer, PositionEmbedding):
            return track(_own_layers().PositionEmbedding(layer.max_length), "embeddings")
        if isinstance(layer, SelfAttention):
            tensors = {f"{part}.kernel": f"{part}_dense.kernel" for part in ("query", "key", "value", "output")}
            if layer.use_bias:  # no key bias in the spec: Keras' is frozen at zero (KerasTrainer)
                tensors.update({f"{part}.bias": f"{part}_dense.bias" for part in ("query", "value", "output")})
            return track(keras.layers.MultiHeadAttention(layer.heads, layer.head_size, use_bias=layer.use_bias),
                         **tensors)
        raise TypeError(f"no Keras equivalent for {type(layer).__name__}")


def keras_model(task: Task, stock: bool = False) -> Any:
    """The task's model as a Keras functional model (built: its weights exist); ``stock``: see :class:`_Model`."""
    return _Model(task, stock).model


def keras_variables(task: Task, stock: bool = False) -> tuple[Any, dict[str, Any]]:
    """The task's Keras model and, by spec tensor name, the Keras variable that holds each tensor (read and write
    them with :func:`to_keras` / :func:`from_keras`)."""
    built = _Model(task, stock)
    return built.model, built.variables


def from_keras(task: Task, name: str, value: Any) -> np.ndarray:
    """A Keras variable's value in the spec's neutral shape."""
    return np.asarray(value, np.float32).reshape(task.tensors[name].shape)


def keras_loss(task: Task) -> Any:
    """The task's mean loss; Keras' default reduction (the mean over the batch, and every position of a sequence)
    matches xfbench's formulas."""
    import keras

    if task.loss == "softmax_cross_entropy":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if task.loss == "sigmoid_binary_cross_entropy":
        return keras.losses.BinaryCrossentropy(from_logits=True)
    return keras.losses.MeanSquaredError()


def keras_optimizer(task: Task) -> Any:
    """Keras' own optimizer with the task's hyperparameters (its own update formula: see the module docstring):
    AdamW's decay, the global-norm clipping (Keras' formula is the spec's) and the schedule as the spec says."""
    import keras

    opt = task.optimizer
    if isinstance(opt, SGD):
        return keras.optimizers.SGD(learning_rate=opt.learning_rate, momentum=opt.momentum)
    rate = _own_layers().WarmupCosineSchedule(task) if opt.schedule is not None else opt.learning_rate
    options = {"learning_rate": rate, "beta_1": opt.beta1, "beta_2": opt.beta2, "epsilon": opt.epsilon,
               "global_clipnorm": opt.clip_norm}
    if isinstance(opt, AdamW):
        return keras.optimizers.AdamW(weight_decay=opt.weight_decay, **options)
    return keras.optimizers.Adam(**options)


def optimizer_formula(task: Task) -> str:
    """``"keras"`` for Adam (epsilon before the bias correction); SGD's formula is the spec's for a constant rate."""
    return "spec" if isinstance(task.optimizer, SGD) else "keras"


def to_keras(value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A neutral tensor in the shape of its Keras variable (attention's (width, heads x size) as (width, heads,
    size), and so on: the same order of elements)."""
    return np.asarray(value, np.float32).reshape(shape)


class KerasTrainer(Trainer):
    def __init__(self, task: Task, framework: str, weights: Weights) -> None:
        import keras

        self._keras = keras
        self.task = task
        self.framework = framework
        built = _Model(task)
        self.model, self.variables = built.model, built.variables
        for layer in self.model.layers:  # the spec's attention has no key bias (see SelfAttention): Keras' stays 0
            if isinstance(layer, keras.layers.MultiHeadAttention) and layer.key_dense.bias is not None:
                layer.key_dense.bias.trainable = False
        self.set_weights(weights)
        by_id = {id(variable): name for name, variable in self.variables.items()}
        self.names = [by_id[id(variable)] for variable in self.model.trainable_variables]  # Keras' gradient order
        self.loss = keras_loss(task)
        self.model.compile(optimizer=keras_optimizer(task), loss=self.loss)
        self.x_train = common.as_inputs(task, task.data.x_train)
        self.y_train = common.as_labels(task, task.data.y_train)
        self.batches: list[tuple[Any, Any, None]] = []
        self._state: Any = None  # JAX: the training state while it lives outside the model's variables
        x, y = self.x_train[:task.batch_size], self.y_train[:task.batch_size]
        self.model._symbolic_build(data_batch=(x, y, None))  # what fit does first: builds optimizer and metrics
        self.model.make_train_function()
        self.train_function = self.model.train_function
        # TensorFlow: the tf.function(s) inside Keras' train function, found once (their trace counts are read per turn)
        self._traced = _traced_functions(self.train_function) if framework == "tensorflow" else []
        if framework == "jax":
            _jax_compiles()  # start counting before the first step compiles

    def set_weights(self, weights: Weights) -> None:
        for name, variable in self.variables.items():
            variable.assign(to_keras(weights[name], tuple(variable.shape)))

    def set_epoch(self, order: np.ndarray) -> None:
        self._sync_state()
        convert = self._keras.ops.convert_to_tensor
        self.batches = [(convert(self.x_train[index]), convert(self.y_train[index]), None) for index in order]
        self.model.reset_metrics()  # fit resets its metrics (here: the loss tracker) at each epoch

    def train_step(self, batch: int) -> Any:
        data = self.batches[batch]
        if self.framework == "jax":
            if self._state is None:
                self._state = self.model._get_jax_state(trainable_variables=True, non_trainable_variables=True,
                                                        optimizer_variables=True, metrics_variables=True)
            logs, self._state = self.train_function(self._state, iter([data]))
            return logs["loss"]
        if self.framework == "tensorflow":
            return self.train_function(iter([data]))["loss"]
        return self.train_function([data])["loss"]

    def _sync_state(self) -> None:
        """JAX: write the state kept between steps back into the model's variables (``fit``'s ``jax_state_sync``)."""
        if self._state is None:
            return
        trainable, non_trainable, optimizer, metrics = self._state
        model = self.model
        for variables, values in ((model.trainable_variables, trainable), (model.non_trainable_variables,
                                  non_trainable), (model.optimizer.variables, optimizer),
                                  (model.metrics_variables, metrics)):
            for variable, value in zip(variables, values, strict=True):
                variable.assign(value)
        self._state = None

    def sync(self, value: Any = None) -> None:
        if self.framework == "jax":
            import jax

            jax.block_until_ready(value if value is not None else self._state)
        elif self.framework == "tensorflow" and value is not None:
            value.numpy()
        # torch on CPU: every op has finished when it returns

    def predict(self, x: np.ndarray) -> np.ndarray:
        self._sync_state()
        x = common.as_inputs(self.task, x)
        return np.concatenate([np.asarray(self.model.predict_on_batch(x[start:start + 4096]))
                               for start in range(0, len(x), 4096)])

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
        """Gradients in training mode, the way the Keras guides write a training loop on each backend (no update;
        the running statistics a BatchNorm moved on the way are put back)."""
        self._sync_state()
        model, x, y = self.model, common.as_inputs(self.task, x), common.as_labels(self.task, y)
        state = [np.array(self._keras.ops.convert_to_numpy(v.value)) for v in model.non_trainable_variables]
        if self.framework == "jax":
            import jax

            def loss_of(trainable: list[Any]) -> Any:
                outputs, _ = model.stateless_call(trainable, [v.value for v in model.non_trainable_variables], x,
                                                  training=True)
                return self.loss(y, outputs)

            loss, grads = jax.value_and_grad(loss_of)([v.value for v in model.trainable_variables])
        elif self.framework == "tensorflow":
            import tensorflow as tf

            with tf.GradientTape() as tape:
                loss = self.loss(y, model(x, training=True))
            grads = [tf.convert_to_tensor(grad) for grad in tape.gradient(loss, model.trainable_variables)]
        else:
            model.zero_grad()
            loss = self.loss(self._keras.ops.convert_to_tensor(y), model(x, training=True))
            loss.backward()
            grads = [v.value.grad for v in model.trainable_variables]
            loss = loss.detach()
        for variable, value in zip(model.non_trainable_variables, state, strict=True):
            variable.assign(value)
        to_numpy = self._keras.ops.convert_to_numpy
        shapes = self.task.tensors
        grads_by_name = {name: to_numpy(grad).astype(np.float32).reshape(shapes[name].shape)
                         for name, grad in zip(self.names, grads, strict=True)}
        return float(to_numpy(loss)), {name: grads_by_name[name] for name in self.task.param_names()}

    def get_weights(self) -> Weights:
        self._sync_state()
        to_numpy, shapes = self._keras.ops.convert_to_numpy, self.task.tensors
        return {name: np.asarray(to_numpy(variable.value), np.float32).reshape(shapes[name].shape)
                for name, variable in self.variables.items()}

    def describe(self) -> dict[str, Any]:
        opt = self.model.optimizer
        described = {
            "mode": f"Keras {self._keras.__version__} on {self.framework}",
            "train_step": "Model.train_function, called as Model.fit calls it",
            "jit_compile": bool(self.model.jit_compile),
            "optimizer_impl": f"keras.optimizers.{type(opt).__name__}",
            "optimizer_formula": optimizer_formula(self.task),
        }
        if any(isinstance(site.layer, SelfAttention) for site in common.sites(self.task)):
            described["attention"] = ATTENTION
            described["attention_key_bias"] = "Keras' key bias frozen at 0 (the spec has none)"
        if self.framework == "tensorflow" and self.task.tokens:
            described["embedding_gradient"] = ("dense (DenseGradientEmbedding: Keras' TF optimizers square an "
                                               "IndexedSlices gradient's rows before summing repeated tokens)")
        return {**described, **common.conventions(self.task)}

    def compile_count(self) -> int | None:
        if self.framework == "jax":
            return _jax_compiles()
        if self.framework == "tensorflow" and self._traced:
            return sum(int(f.experimental_get_tracing_count()) for f in self._traced)
        return None


_JAX_COMPILES: list[int] = []


def _jax_compiles() -> int:
    """XLA compilations in this process so far, from JAX's public monitoring events (Keras' jitted step sits in a
    closure, so this counts every compile: one during a timed turn is a recompile either way)."""
    if not _JAX_COMPILES:
        import jax.monitoring

        _JAX_COMPILES.append(0)

        def count(event: str, duration: float, **kwargs: Any) -> None:
            if event == "/jax/core/compile/backend_compile_duration":
                _JAX_COMPILES[0] += 1

        jax.monitoring.register_event_duration_secs_listener(count)
    return _JAX_COMPILES[0]


def _traced_functions(function: Any, depth: int = 4) -> list[Any]:
    """The ``tf.function`` objects among ``function`` and the functions it closes over (Keras keeps its compiled
    step inside the closure of ``Model.train_function``, beside a multi-step one that is not called here)."""
    if hasattr(function, "experimental_get_tracing_count"):
        return [function]
    found: list[Any] = []
    if depth > 0:
        for cell in getattr(function, "__closure__", None) or ():
            try:
                content = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if callable(content):
                found.extend(_traced_functions(content, depth - 1))
    return found


class KerasBackend(Backend):
    """Keras 3 on ``framework``; threads, devices and versions from that framework's native adapter."""

    module = "keras"
    distribution = "keras"
    extra = "keras"
    layout = "NHWC"

    def __init__(self, framework: str) -> None:
        if framework not in FRAMEWORKS:
            raise unknown_name("Keras backend", framework, FRAMEWORKS)
        self.framework = framework
        self.name = f"keras-{framework}"
        # Keras compiles its step on jax (always) and tensorflow (tf.function); on torch it runs eagerly by default
        self.compiles = framework != "torch"

    @property
    def native(self) -> Backend:
        from xfbench import backends

        return backends.get(FRAMEWORKS[self.framework])

    def unavailable_reason(self) -> str | None:
        if importlib.util.find_spec("keras") is None:
            return "keras is not installed: pip install 'xfbench[keras]'"
        return self.native.unavailable_reason()

    def quiet_env(self) -> dict[str, str]:
        """Its framework's, and TensorFlow's: Keras imports TensorFlow's data utilities where it is installed."""
        from xfbench.backends.tensorflow import QUIET

        return {**QUIET, **self.native.quiet_env()}

    def process_env(self) -> dict[str, str]:
        return {"KERAS_BACKEND": self.framework}

    def configure_threads(self, threads: int) -> None:
        self.native.configure_threads(threads)

    def setup(self, threads: int) -> None:
        self.native.setup(threads)
        os.environ.setdefault("KERAS_BACKEND", self.framework)
        import keras

        if keras.backend.backend() != self.framework:
            raise XfbenchError(f"{self.name} needs a process where Keras runs on {self.framework}, but Keras was "
                               f"already imported on {keras.backend.backend()}; set KERAS_BACKEND={self.framework} "
                               "before importing keras")
        keras.utils.disable_interactive_logging()

    def versions(self) -> dict[str, str]:
        import keras

        return {"keras": keras.__version__, **self.native.versions()}

    def devices(self) -> list[dict[str, str]]:
        return self.native.devices()

    def unsupported_reason(self, task: Task, device_kind: str) -> str | None:
        if device_kind != "cpu":
            return f"{self.name} runs on CPU only so far: its GPU path is untested (no accelerator was available)"
        for site in common.sites(task):
            layer = site.layer
            if isinstance(layer, SelfAttention) and abs(layer.scale * layer.head_size**0.5 - 1) > 1e-12:
                return (f"Keras' MultiHeadAttention scales scores by 1/sqrt(head_size) only; {site.prefix} asks for "
                        f"{layer.scale:g}")
        return super().unsupported_reason(task, device_kind)

    def fingerprint(self, device_kind: str) -> dict[str, Any]:
        import keras

        return {**self.native.fingerprint(device_kind), "keras_backend": keras.backend.backend(),
                "image_data_format": keras.config.image_data_format(), "floatx": keras.config.floatx(),
                "mode": f"Keras on {self.framework}"}

    def build(self, task: Task, device_kind: str, weights: Weights) -> Trainer:
        return KerasTrainer(task, self.framework, weights)
