"""The framework-neutral task API: layers, losses, optimizers, data and the Task that ties them together.

Rules of this module:
- No framework imports. Everything here is plain Python and NumPy.
- Every number that could differ between frameworks is explicit (Adam's epsilon, the momentum formula,
  the loss reduction), so each backend adapter builds exactly the same computation.
- The neutral layouts: images are NHWC, conv kernels are HWIO (height, width, in, out), dense kernels are
  (in, out), and ``Flatten`` flattens in H, W, C order. Adapters convert to their own layouts.
- Losses are means over all elements: over the batch for cross-entropy, over batch x outputs for mse and
  sigmoid binary cross-entropy (what Keras and PyTorch compute). Cross-entropy losses take logits.
- Where a function has no derivative, the reference takes relu'(0) = 0 and routes a max-pool window's gradient
  to its first maximum (row-major), as the frameworks do.
- Epochs are numbered from 0: epoch ``e`` uses ``Task.epoch_order(e)``.

Example:
    >>> import numpy as np
    >>> from xfbench.tasks import Task, Dataset, Dense, Adam
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 3)).astype("float32")
    >>> y = (x @ np.array([[1.0], [2.0], [-1.0]], dtype="float32"))
    >>> task = Task(
    ...     name="tiny-regression",
    ...     data=Dataset.split(x, y, test_fraction=0.25, seed=0),
    ...     layers=(Dense(1),),
    ...     loss="mse",
    ...     optimizer=Adam(learning_rate=0.05),
    ...     batch_size=50,
    ...     epochs=40,
    ...     metrics=("r2", "mse"),
    ... )
    >>> task.num_train, task.steps_per_epoch
    (150, 3)
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Union

import numpy as np

from xfbench.errors import XfbenchError

ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh")
INITIALIZERS = ("glorot_uniform", "glorot_normal", "he_uniform", "he_normal")
PADDINGS = ("valid", "same")
LOSSES = ("mse", "softmax_cross_entropy", "sigmoid_binary_cross_entropy")
METRICS = ("accuracy", "r2", "mse")


def _choice(kind: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise XfbenchError(f"unknown {kind} {value!r}; choose one of: {', '.join(choices)}")


def _is_int(value: object) -> bool:
    """An integer that is not a bool (``Dense(True)`` is a mistake, not one unit)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value: object) -> bool:
    return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
            and math.isfinite(value))


def positive_int(what: str, value: object) -> int:
    """``value`` if it is an integer > 0, else the error naming ``what``."""
    if not _is_int(value) or value <= 0:  # type: ignore[operator]
        raise XfbenchError(f"{what} must be a positive int, got {value!r}")
    return int(value)  # type: ignore[arg-type]


def seed_value(what: str, value: object) -> int:
    """A seed: an integer >= 0 (NumPy's generators refuse negative ones)."""
    if not _is_int(value) or value < 0:  # type: ignore[operator]
        raise XfbenchError(f"{what} must be an int >= 0, got {value!r}")
    return int(value)  # type: ignore[arg-type]


def number_in(what: str, value: object, low: float, high: float, low_open: bool = False, high_open: bool = False
              ) -> float:
    """``value`` if it is a finite number in the range, else the error naming ``what`` and the range."""
    if not _is_number(value) or (value <= low if low_open else value < low) or (  # type: ignore[operator]
            value >= high if high_open else value > high):  # type: ignore[operator]
        bounds = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise XfbenchError(f"{what} must be a finite number in {bounds}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _pair(value: int | tuple[int, int], what: str) -> tuple[int, int]:
    try:
        pair = (value, value) if _is_int(value) else tuple(value)  # type: ignore[arg-type]
    except TypeError:
        pair = ()
    if len(pair) != 2 or not all(_is_int(v) and v > 0 for v in pair):
        raise XfbenchError(f"{what} must be a positive int or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


# ----------------------------------------------------------------------------------------------- layers
@dataclass(frozen=True)
class Dense:
    """A fully connected layer ``activation(x @ kernel + bias)``; kernel is (in, out)."""

    units: int
    activation: str = "linear"
    init: str = "glorot_uniform"

    def __post_init__(self) -> None:
        object.__setattr__(self, "units", positive_int("Dense units", self.units))
        _choice("activation", self.activation, ACTIVATIONS)
        _choice("initializer", self.init, INITIALIZERS)


@dataclass(frozen=True)
class Conv2D:
    """A 2-D convolution (cross-correlation, as every framework computes it) on NHWC input; kernel is HWIO.

    ``padding="same"`` follows TensorFlow's rule: the total padding is split with the extra pixel at the
    bottom/right, which matters for stride > 1.
    """

    filters: int
    kernel_size: int | tuple[int, int] = 3
    strides: int | tuple[int, int] = 1
    padding: str = "valid"
    activation: str = "linear"
    init: str = "glorot_uniform"

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", positive_int("Conv2D filters", self.filters))
        object.__setattr__(self, "kernel_size", _pair(self.kernel_size, "Conv2D kernel_size"))
        object.__setattr__(self, "strides", _pair(self.strides, "Conv2D strides"))
        _choice("padding", self.padding, PADDINGS)
        _choice("activation", self.activation, ACTIVATIONS)
        _choice("initializer", self.init, INITIALIZERS)


@dataclass(frozen=True)
class _Pool2D:
    pool_size: int | tuple[int, int] = 2
    strides: int | tuple[int, int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "pool_size", _pair(self.pool_size, f"{type(self).__name__} pool_size"))
        strides = self.pool_size if self.strides is None else self.strides
        object.__setattr__(self, "strides", _pair(strides, f"{type(self).__name__} strides"))


@dataclass(frozen=True)
class MaxPool2D(_Pool2D):
    """Max pooling over windows of ``pool_size`` (valid padding); ``strides`` defaults to ``pool_size``."""


@dataclass(frozen=True)
class AvgPool2D(_Pool2D):
    """Average pooling over windows of ``pool_size`` (valid padding); ``strides`` defaults to ``pool_size``."""


@dataclass(frozen=True)
class Flatten:
    """Flatten (H, W, C) feature maps to vectors in H, W, C order (the neutral order)."""


@dataclass(frozen=True)
class Activation:
    """A standalone activation layer."""

    name: str

    def __post_init__(self) -> None:
        _choice("activation", self.name, ACTIVATIONS)


Layer = Union[Dense, Conv2D, MaxPool2D, AvgPool2D, Flatten, Activation]
PARAMETRIC = (Dense, Conv2D)


# -------------------------------------------------------------------------------------------- optimizers
@dataclass(frozen=True)
class SGD:
    """SGD with (heavy-ball) momentum: ``buf = momentum * buf + grad; param -= learning_rate * buf``.

    This is PyTorch's and optax's formula (dampening 0, no Nesterov); Keras' ``v = m*v - lr*g`` is the same
    for a constant learning rate.
    """

    learning_rate: float
    momentum: float = 0.0

    def __post_init__(self) -> None:
        number_in("SGD learning_rate", self.learning_rate, 0, math.inf, low_open=True, high_open=True)
        number_in("SGD momentum", self.momentum, 0, 1, high_open=True)


@dataclass(frozen=True)
class Adam:
    """Adam with bias correction, every hyperparameter explicit.

    Update at step t (from 1): ``m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g;
    param -= learning_rate * (m / (1-b1**t)) / (sqrt(v / (1-b2**t)) + epsilon)``.
    That is PyTorch's and optax's formula. Keras applies epsilon before the bias correction and defaults it to
    1e-7, PyTorch and optax to 1e-8: xfbench passes the same value to every backend and uses this formula
    everywhere.
    """

    learning_rate: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8

    def __post_init__(self) -> None:
        number_in("Adam learning_rate", self.learning_rate, 0, math.inf, low_open=True, high_open=True)
        for name in ("beta1", "beta2"):
            number_in(f"Adam {name}", getattr(self, name), 0, 1, high_open=True)
        number_in("Adam epsilon", self.epsilon, 0, math.inf, low_open=True, high_open=True)


Optimizer = Union[SGD, Adam]


# -------------------------------------------------------------------------------------------------- data
@dataclass(frozen=True, eq=False)
class Dataset:
    """Train and test arrays. Inputs are float32 (vectors or NHWC images); targets are int labels for
    softmax cross-entropy, float32 columns (n, 1) for mse and sigmoid binary cross-entropy."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            for name, array in ((f"x_{split}", x), (f"y_{split}", y)):
                if not isinstance(array, np.ndarray):
                    raise XfbenchError(f"Dataset.{name} must be a NumPy array, got {type(array).__name__}")
                if array.ndim == 0:
                    raise XfbenchError(f"Dataset.{name} must have one row per sample, got a scalar")
                if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
                    raise XfbenchError(f"Dataset.{name} must be numeric, got dtype {array.dtype}")
                if np.issubdtype(array.dtype, np.inexact) and not np.all(np.isfinite(array)):
                    bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
                    raise XfbenchError(f"Dataset.{name} holds {bad} NaN or infinite values; every value must be finite")
            if len(x) != len(y):
                raise XfbenchError(f"Dataset x_{split} and y_{split} have different lengths: {len(x)} vs {len(y)}")
            if len(x) == 0:
                raise XfbenchError(f"Dataset {split} split is empty; it needs at least one sample")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise XfbenchError(f"Dataset x_train and x_test samples differ in shape: {self.x_train.shape[1:]} vs "
                               f"{self.x_test.shape[1:]}")

    @classmethod
    def split(cls, x: np.ndarray, y: np.ndarray, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
        """Shuffle with ``seed`` and split off ``test_fraction`` of the samples as the test set.

        Example:
            >>> import numpy as np
            >>> d = Dataset.split(np.zeros((10, 2), "float32"), np.arange(10), test_fraction=0.3)
            >>> d.x_train.shape, d.x_test.shape
            ((7, 2), (3, 2))
        """
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim == 0 or y.ndim == 0:
            raise XfbenchError("Dataset.split needs arrays with one row per sample, got a scalar")
        if len(x) != len(y):
            raise XfbenchError(f"x and y have different lengths: {len(x)} vs {len(y)}")
        if len(x) < 2:
            raise XfbenchError(f"Dataset.split needs at least 2 samples (one for each split), got {len(x)}")
        number_in("test_fraction", test_fraction, 0, 1, low_open=True, high_open=True)
        seed = seed_value("Dataset.split seed", seed)
        order = np.random.default_rng(seed).permutation(len(x))
        num_test = min(len(x) - 1, max(1, round(len(x) * test_fraction)))
        test, train = order[:num_test], order[num_test:]
        return cls(x[train], y[train], x[test], y[test])


# -------------------------------------------------------------------------------------------------- task
@dataclass(frozen=True, eq=False)
class Task:
    """One machine-learning task, identical for every backend.

    Batches: each epoch draws a permutation of the training set from ``seed`` and epoch number, and uses the
    first ``steps_per_epoch * batch_size`` samples in that order (the last partial batch is dropped, so every
    step has the same shape and nothing retraces). The loss is the mean over the batch.

    ``target``: the value of the task's first metric (accuracy, R²) that time-to-accuracy measures the training
    time to (``xfbench run --target`` overrides it); None for no target.
    """

    name: str
    data: Dataset
    layers: tuple[Layer, ...]
    loss: str
    optimizer: Optimizer
    batch_size: int
    epochs: int
    metrics: tuple[str, ...] = ("accuracy",)
    seed: int = 0
    description: str = ""
    target: float | None = None
    input_shape: tuple[int, ...] = field(init=False)
    shapes: tuple[tuple[int, ...], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip() or self.name != self.name.strip():
            raise XfbenchError(f"Task name must be a non-empty string without surrounding spaces, got {self.name!r}")
        if "," in self.name:
            raise XfbenchError(f"Task name {self.name!r} must not contain a comma (lists of tasks are comma-separated)")
        if not isinstance(self.data, Dataset):
            raise XfbenchError(f"Task data must be an xfbench.tasks.Dataset, got {type(self.data).__name__}")
        if isinstance(self.layers, (str, bytes)) or not hasattr(self.layers, "__iter__"):
            raise XfbenchError(f"Task layers must be a sequence of layers, got {type(self.layers).__name__}")
        if isinstance(self.metrics, str):
            raise XfbenchError(f"Task metrics must be a tuple of names, e.g. ({self.metrics!r},), got a string")
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "metrics", tuple(self.metrics))
        object.__setattr__(self, "seed", seed_value("Task seed", self.seed))
        _choice("loss", self.loss, LOSSES)
        for metric in self.metrics:
            _choice("metric", metric, METRICS)
        if not isinstance(self.optimizer, (SGD, Adam)):
            raise XfbenchError(f"optimizer must be xfbench.tasks.SGD or Adam, got {type(self.optimizer).__name__}")
        if self.target is not None and (isinstance(self.target, bool) or not isinstance(self.target, (int, float))
                                        or not math.isfinite(self.target)):
            raise XfbenchError(f"target must be a finite number (the test metric to reach) or None, got {self.target!r}")
        if not _is_int(self.epochs) or self.epochs <= 0:
            raise XfbenchError(f"epochs must be a positive int, got {self.epochs!r}")
        data = self.data
        if data.x_train.dtype != np.float32 or data.x_test.dtype != np.float32:
            raise XfbenchError("inputs must be float32 arrays; convert with x.astype('float32')")
        if not _is_int(self.batch_size) or not 0 < self.batch_size <= len(data.x_train):
            raise XfbenchError(
                f"batch_size must be an int in [1, {len(data.x_train)}] (the training set size), got {self.batch_size!r}"
            )
        object.__setattr__(self, "input_shape", tuple(int(d) for d in data.x_train.shape[1:]))
        object.__setattr__(self, "shapes", infer_shapes(self.input_shape, self.layers))
        self._check_targets()

    def _check_targets(self) -> None:
        out = self.shapes[-1]
        if len(out) != 1:
            raise XfbenchError(f"the model must end in vectors (add Flatten and Dense), its output is {out}")
        for y in (self.data.y_train, self.data.y_test):
            if self.loss == "softmax_cross_entropy":
                if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
                    raise XfbenchError("softmax_cross_entropy needs integer class labels of shape (n,)")
                if y.size and (y.min() < 0 or y.max() >= out[0]):
                    raise XfbenchError(f"labels must be in [0, {out[0]}) for a model with {out[0]} outputs")
            elif y.shape[1:] != out or y.dtype != np.float32:
                raise XfbenchError(f"{self.loss} needs float32 targets of shape (n, {out[0]}), got {y.dtype} {y.shape}")
            elif self.loss == "sigmoid_binary_cross_entropy" and y.size and (y.min() < 0 or y.max() > 1):
                raise XfbenchError("sigmoid_binary_cross_entropy needs targets in [0, 1] (probabilities or 0/1 labels)")

    @property
    def num_train(self) -> int:
        return len(self.data.x_train)

    @property
    def steps_per_epoch(self) -> int:
        return self.num_train // self.batch_size

    @property
    def num_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The batches of one epoch as indices into the training set, shape (steps_per_epoch, batch_size)."""
        order = np.random.default_rng([self.seed, epoch]).permutation(self.num_train)
        used = self.steps_per_epoch * self.batch_size
        return order[:used].reshape(self.steps_per_epoch, self.batch_size).astype(np.int64)

    def replace(self, **changes: object) -> Task:
        """A copy with some fields changed, e.g. ``task.replace(epochs=5, seed=1)``."""
        fields = {name: getattr(self, name) for name in (
            "name", "data", "layers", "loss", "optimizer", "batch_size", "epochs", "metrics", "seed", "description",
            "target",
        )}
        fields.update(changes)
        return Task(**fields)  # type: ignore[arg-type]

    @functools.cached_property
    def spec_hash(self) -> str:
        """A short hash of everything that defines the work: layers, loss, optimizer, batch size, epochs, metrics,
        seed, and the data (dtypes, shapes, bytes). Two tasks with the same name but other sizes differ here; the
        name, description and target do not count.

        Example:
            >>> from xfbench.tasks import get_task
            >>> get_task("mlp").spec_hash == get_task("mlp").spec_hash != get_task("mlp", width=128).spec_hash
            True
        """
        digest = hashlib.sha256(repr((self.layers, self.loss, self.optimizer, self.batch_size, self.epochs,
                                      self.metrics, self.seed)).encode())
        for array in (self.data.x_train, self.data.y_train, self.data.x_test, self.data.y_test):
            digest.update(repr((array.dtype.str, array.shape)).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()[:16]

    def param_names(self) -> list[str]:
        """Names of the trainable tensors in order, e.g. ``['0.Conv2D.kernel', '0.Conv2D.bias', ...]``."""
        names = []
        for index, layer in enumerate(self.layers):
            if isinstance(layer, PARAMETRIC):
                names += [f"{index}.{type(layer).__name__}.kernel", f"{index}.{type(layer).__name__}.bias"]
        return names


def conv_output_size(size: int, kernel: int, stride: int, padding: str) -> int:
    """Output length of a conv or pool along one axis (TensorFlow's rule)."""
    if padding == "same":
        return math.ceil(size / stride)
    return (size - kernel) // stride + 1


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TensorFlow's 'same' rule along one axis: the extra pixel goes after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def infer_shapes(input_shape: tuple[int, ...], layers: Sequence[Layer]) -> tuple[tuple[int, ...], ...]:
    """The shape (without batch) after every layer, checking that the layers fit together.

    Example:
        >>> infer_shapes((8, 8, 1), [Conv2D(4, 3), MaxPool2D(2), Flatten(), Dense(10)])
        ((8, 8, 1), (6, 6, 4), (3, 3, 4), (36,), (10,))
    """
    if not layers:
        raise XfbenchError("a task needs at least one layer")
    if not input_shape or 0 in input_shape:
        raise XfbenchError(f"each input sample needs a shape with no empty axis, e.g. (features,) or (height, width, "
                           f"channels); got {tuple(input_shape)}")
    shapes = [tuple(input_shape)]
    for index, layer in enumerate(layers):
        shape = shapes[-1]
        where = f"layer {index} ({type(layer).__name__})"
        if isinstance(layer, Dense):
            if len(shape) != 1:
                raise XfbenchError(f"{where} needs vectors but gets shape {shape}; put Flatten() before it")
            shape = (layer.units,)
        elif isinstance(layer, (Conv2D, MaxPool2D, AvgPool2D)):
            if len(shape) != 3:
                raise XfbenchError(f"{where} needs (height, width, channels) inputs but gets shape {shape}")
            kernel = layer.kernel_size if isinstance(layer, Conv2D) else layer.pool_size
            padding = layer.padding if isinstance(layer, Conv2D) else "valid"
            height, width = (
                conv_output_size(shape[axis], kernel[axis], layer.strides[axis], padding) for axis in (0, 1)
            )
            if height <= 0 or width <= 0:
                raise XfbenchError(f"{where} window {kernel} does not fit its input {shape[:2]}")
            shape = (height, width, layer.filters if isinstance(layer, Conv2D) else shape[2])
        elif isinstance(layer, Flatten):
            shape = (int(np.prod(shape)),)
        elif not isinstance(layer, Activation):
            raise XfbenchError(f"{where} is not an xfbench layer; use Dense, Conv2D, MaxPool2D, AvgPool2D, Flatten, Activation")
        shapes.append(shape)
    return tuple(shapes)
