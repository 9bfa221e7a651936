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

import importlib.util
import os
from typing import Any

import numpy as np

from xfbench.backends import common
from xfbench.backends.base import Backend, Trainer, Weights
from xfbench.errors import XfbenchError, unknown_name
from xfbench.tasks.init import param_shapes
from xfbench.tasks.spec import SGD, Activation, AvgPool2D, Conv2D, Dense, Flatten, Layer, MaxPool2D, Task

FRAMEWORKS = {"jax": "jax", "tensorflow": "tf-graph", "torch": "torch"}  # Keras backend -> native adapter


def keras_layer(layer: Layer) -> Any:
    """The Keras layer computing the same function as one xfbench layer (channels_last, neutral layouts)."""
    import keras

    if isinstance(layer, Dense):
        return keras.layers.Dense(layer.units, activation=layer.activation)
    if isinstance(layer, Conv2D):
        return keras.layers.Conv2D(layer.filters, layer.kernel_size, strides=layer.strides, padding=layer.padding,
                                   activation=layer.activation, data_format="channels_last")
    if isinstance(layer, MaxPool2D):
        return keras.layers.MaxPooling2D(layer.pool_size, strides=layer.strides, padding="valid")
    if isinstance(layer, AvgPool2D):
        return keras.layers.AveragePooling2D(layer.pool_size, strides=layer.strides, padding="valid")
    if isinstance(layer, Flatten):
        return keras.layers.Flatten(data_format="channels_last")  # H, W, C order, as the neutral Flatten
    if isinstance(layer, Activation):
        return keras.layers.Activation(layer.name)
    raise TypeError(f"no Keras equivalent for {type(layer).__name__}")


def keras_model(task: Task) -> Any:
    """The task's model as a Keras Sequential (built: its weights exist, in the order of ``param_shapes``)."""
    import keras

    return keras.Sequential([keras.Input(shape=task.input_shape), *map(keras_layer, task.layers)])


def keras_loss(task: Task) -> Any:
    """The task's mean loss; Keras' default reduction (mean over the batch) matches xfbench's formulas."""
    import keras

    if task.loss == "softmax_cross_entropy":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if task.loss == "sigmoid_binary_cross_entropy":
        return keras.losses.BinaryCrossentropy(from_logits=True)
    return keras.losses.MeanSquaredError()


def keras_optimizer(task: Task) -> Any:
    """Keras' own optimizer with the task's hyperparameters (its own update formula: see the module docstring)."""
    import keras

    opt = task.optimizer
    if isinstance(opt, SGD):
        return keras.optimizers.SGD(learning_rate=opt.learning_rate, momentum=opt.momentum)
    return keras.optimizers.Adam(learning_rate=opt.learning_rate, beta_1=opt.beta1, beta_2=opt.beta2,
                                 epsilon=opt.epsilon)


def optimizer_formula(task: Task) -> str:
    """``"keras"`` for Adam (epsilon before the bias correction); SGD's formula is the spec's for a constant rate."""
    return "spec" if isinstance(task.optimizer, SGD) else "keras"


class KerasTrainer(Trainer):
    def __init__(self, task: Task, framework: str, weights: Weights) -> None:
        import keras

        self._keras = keras
        self.task = task
        self.framework = framework
        self.names = list(param_shapes(task))  # layer order, kernel then bias: Keras' weight order too
        self.model = keras_model(task)
        self.model.set_weights([weights[name] for name in self.names])
        self.loss = keras_loss(task)
        self.model.compile(optimizer=keras_optimizer(task), loss=self.loss)
        self.x_train = task.data.x_train.astype(np.float32)
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
        return np.concatenate([np.asarray(self.model.predict_on_batch(x[start:start + 4096].astype(np.float32)))
                               for start in range(0, len(x), 4096)])

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
        """Gradients the way the Keras guides write a training loop on each backend (no update)."""
        self._sync_state()
        model, x, y = self.model, x.astype(np.float32), common.as_labels(self.task, y)
        if self.framework == "jax":
            import jax

            def loss_of(trainable: list[Any]) -> Any:
                outputs, _ = model.stateless_call(trainable, [v.value for v in model.non_trainable_variables], x)
                return self.loss(y, outputs)

            loss, grads = jax.value_and_grad(loss_of)([v.value for v in model.trainable_variables])
        elif self.framework == "tensorflow":
            import tensorflow as tf

            with tf.GradientTape() as tape:
                loss = self.loss(y, model(x, training=True))
            grads = tape.gradient(loss, model.trainable_weights)
        else:
            model.zero_grad()
            loss = self.loss(self._keras.ops.convert_to_tensor(y), model(x, training=True))
            loss.backward()
            grads = [v.value.grad for v in model.trainable_weights]
            loss = loss.detach()
        to_numpy = self._keras.ops.convert_to_numpy
        return float(to_numpy(loss)), {name: to_numpy(grad).astype(np.float32)
                                       for name, grad in zip(self.names, grads, strict=True)}

    def get_weights(self) -> Weights:
        self._sync_state()
        return {name: np.asarray(value, np.float32)
                for name, value in zip(self.names, self.model.get_weights(), strict=True)}

    def describe(self) -> dict[str, Any]:
        opt = self.model.optimizer
        return {
            "mode": f"Keras {self._keras.__version__} on {self.framework}",
            "train_step": "Model.train_function, called as Model.fit calls it",
            "jit_compile": bool(self.model.jit_compile),
            "optimizer_impl": f"keras.optimizers.{type(opt).__name__}",
            "optimizer_formula": optimizer_formula(self.task),
        }

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
        return super().unsupported_reason(task, device_kind)

    def fingerprint(self, device_kind: str) -> dict[str, Any]:
        import keras

        return {**self.native.fingerprint(device_kind), "keras_backend": keras.backend.backend(),
                "image_data_format": keras.config.image_data_format(), "floatx": keras.config.floatx(),
                "mode": f"Keras on {self.framework}"}

    def build(self, task: Task, device_kind: str, weights: Weights) -> Trainer:
        return KerasTrainer(task, self.framework, weights)
