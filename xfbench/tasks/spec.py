"""The framework-neutral task API: the data and the Task that ties data, layers (``tasks.layers``), a loss and an
optimizer (``tasks.optim``) together. Every name of the spec is importable from here.

Rules of the spec:
- No framework imports. Everything here is plain Python and NumPy.
- Every number that could differ between frameworks is explicit (Adam's epsilon, the momentum formula,
  the loss reduction), so each backend adapter builds exactly the same computation.
- The neutral layouts: images are NHWC, conv kernels are HWIO (height, width, in, out), dense kernels are
  (in, out), and ``Flatten`` flattens in H, W, C order. Adapters convert to their own layouts.
- Inputs are float32 (vectors, NHWC images), or integer token ids of shape (length,) for a model that starts with an
  ``Embedding``.
- Losses are means over all elements: over the batch (and every position of a sequence) for cross-entropy, over
  batch x outputs for mse and sigmoid binary cross-entropy (what Keras and PyTorch compute). Cross-entropy losses
  take logits.
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
from dataclasses import dataclass, field

import numpy as np

from xfbench.errors import XfbenchError
from xfbench.tasks.checks import choice, is_int, number_in, seed_value
from xfbench.tasks.layers import (
    ACTIVATIONS,
    INITIALIZERS,
    LAYER_TYPES,
    PADDINGS,
    Activation,
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
    Tensor,
    conv_output_size,
    infer_shapes,
    same_padding,
    spec_repr,
    tensor_specs,
    walk,
)
from xfbench.tasks.optim import OPTIMIZER_TYPES, SGD, Adam, AdamW, Optimizer, WarmupCosine

LOSSES = ("mse", "softmax_cross_entropy", "sigmoid_binary_cross_entropy")
METRICS = ("accuracy", "r2", "mse", "token_accuracy", "perplexity")
SPEC_TYPES = (*LAYER_TYPES, *OPTIMIZER_TYPES)  # the dataclasses a task is made of (tasks.serialize reads them)


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
        choice("loss", self.loss, LOSSES)
        for metric in self.metrics:
            choice("metric", metric, METRICS)
        if not isinstance(self.optimizer, (SGD, Adam)):
            raise XfbenchError(f"optimizer must be xfbench.tasks.SGD, Adam or AdamW, got {type(self.optimizer).__name__}")
        if self.target is not None and (isinstance(self.target, bool) or not isinstance(self.target, (int, float))
                                        or not math.isfinite(self.target)):
            raise XfbenchError(f"target must be a finite number (the test metric to reach) or None, got {self.target!r}")
        if not is_int(self.epochs) or self.epochs <= 0:
            raise XfbenchError(f"epochs must be a positive int, got {self.epochs!r}")
        data = self.data
        self._check_inputs()
        if not is_int(self.batch_size) or not 0 < self.batch_size <= len(data.x_train):
            raise XfbenchError(
                f"batch_size must be an int in [1, {len(data.x_train)}] (the training set size), got {self.batch_size!r}"
            )
        object.__setattr__(self, "input_shape", tuple(int(d) for d in data.x_train.shape[1:]))
        object.__setattr__(self, "shapes", infer_shapes(self.input_shape, self.layers))
        self._check_targets()

    @property
    def tokens(self) -> bool:
        """Whether the inputs are token ids (the model starts with an ``Embedding``)."""
        return bool(self.layers) and isinstance(self.layers[0], Embedding)

    def _check_inputs(self) -> None:
        data = self.data
        if not self.tokens:
            if data.x_train.dtype != np.float32 or data.x_test.dtype != np.float32:
                raise XfbenchError("inputs must be float32 arrays; convert with x.astype('float32')")
            return
        vocab = self.layers[0].vocab_size  # type: ignore[union-attr]
        for name in ("x_train", "x_test"):
            ids = getattr(data, name)
            if not np.issubdtype(ids.dtype, np.integer):
                raise XfbenchError(f"a model that starts with an Embedding takes integer token ids; Dataset.{name} is "
                                   f"{ids.dtype}")
            if ids.size and (ids.min() < 0 or ids.max() >= vocab):
                raise XfbenchError(f"token ids must be in [0, {vocab}) for Embedding(vocab_size={vocab}); "
                                   f"Dataset.{name} holds ids from {ids.min()} to {ids.max()}")

    def _check_targets(self) -> None:
        out = self.shapes[-1]
        if len(out) not in (1, 2):
            raise XfbenchError(f"the model must end in vectors (add Flatten and Dense) or sequences of them, its output "
                               f"is {out}")
        for y in (self.data.y_train, self.data.y_test):
            if self.loss == "softmax_cross_entropy":
                shape = "(n,)" if len(out) == 1 else f"(n, {out[0]})"
                if y.shape[1:] != out[:-1] or not np.issubdtype(y.dtype, np.integer):
                    raise XfbenchError(f"softmax_cross_entropy needs integer class labels of shape {shape}, got "
                                       f"{y.dtype} {y.shape}")
                if y.size and (y.min() < 0 or y.max() >= out[-1]):
                    raise XfbenchError(f"labels must be in [0, {out[-1]}) for a model with {out[-1]} outputs")
            elif y.shape[1:] != out or y.dtype != np.float32:
                raise XfbenchError(f"{self.loss} needs float32 targets of shape (n, {', '.join(map(str, out))}), got "
                                   f"{y.dtype} {y.shape}")
            elif self.loss == "sigmoid_binary_cross_entropy" and y.size and (y.min() < 0 or y.max() > 1):
                raise XfbenchError("sigmoid_binary_cross_entropy needs targets in [0, 1] (probabilities or 0/1 labels)")
        if any(metric in ("token_accuracy", "perplexity") for metric in self.metrics) and (
                self.loss != "softmax_cross_entropy"):
            raise XfbenchError("token_accuracy and perplexity are metrics of softmax_cross_entropy models")
        if len(out) == 2 and "accuracy" in self.metrics:
            raise XfbenchError("a model with an output per position is scored per token: use the metric "
                               "token_accuracy, not accuracy")
        if len(out) == 1 and "token_accuracy" in self.metrics:
            raise XfbenchError("token_accuracy scores a model with an output per position (a sequence model); this "
                               "one has one output per sample: use accuracy")

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
        digest = hashlib.sha256(spec_repr((self.layers, self.loss, self.optimizer, self.batch_size, self.epochs,
                                           self.metrics, self.seed)).encode())
        for array in (self.data.x_train, self.data.y_train, self.data.x_test, self.data.y_test):
            digest.update(repr((array.dtype.str, array.shape)).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()[:16]

    @functools.cached_property
    def tensors(self) -> dict[str, Tensor]:
        """Every tensor of the model by name (parameters, then state such as running statistics, in layer order)."""
        return tensor_specs(self.layers, self.input_shape)

    def param_names(self) -> list[str]:
        """Names of the trainable tensors in order, e.g. ``['0.Conv2D.kernel', '0.Conv2D.bias', ...]``."""
        return [name for name, tensor in self.tensors.items() if tensor.trainable]

    def state_names(self) -> list[str]:
        """Names of the tensors a layer updates itself (a BatchNorm's running statistics), in order."""
        return [name for name, tensor in self.tensors.items() if not tensor.trainable]


__all__ = ["ACTIVATIONS", "INITIALIZERS", "LOSSES", "METRICS", "PADDINGS", "SGD", "SPEC_TYPES", "Activation", "Adam",
           "AdamW", "AvgPool2D", "BatchNorm", "Conv2D", "Dataset", "Dense", "Embedding", "Flatten", "GlobalAvgPool2D",
           "Layer", "LayerNorm", "MaxPool2D", "Optimizer", "PositionEmbedding", "Residual", "SelfAttention", "Task",
           "Tensor", "WarmupCosine", "conv_output_size", "infer_shapes", "same_padding", "tensor_specs", "walk"]
