"""The common task API (framework-free): layers, losses, optimizers, data, and the built-in task registry.

Example:
    >>> from xfbench.tasks import get_task, task_names
    >>> task_names()
    ['cnn', 'cnn28', 'mlp', 'mlp-binary', 'regression', 'resnet', 'transformer']
    >>> get_task("mlp", width=32).layers[0].units
    32
"""

from __future__ import annotations

from collections.abc import Callable

from xfbench.errors import XfbenchError, unknown_name
from xfbench.tasks import builtin
from xfbench.tasks.init import initial_weights
from xfbench.tasks.spec import (
    SGD,
    Activation,
    Adam,
    AdamW,
    AvgPool2D,
    BatchNorm,
    Conv2D,
    Dataset,
    Dense,
    Embedding,
    Flatten,
    GlobalAvgPool2D,
    Layer,
    LayerNorm,
    MaxPool2D,
    Optimizer,
    PositionEmbedding,
    Residual,
    SelfAttention,
    Task,
    WarmupCosine,
)

BUILTIN_TASKS: dict[str, Callable[..., Task]] = {
    "regression": builtin.regression,
    "mlp": builtin.mlp,
    "mlp-binary": builtin.mlp_binary,
    "cnn": builtin.cnn,
    "cnn28": builtin.cnn28,
    "transformer": builtin.transformer,
    "resnet": builtin.resnet,
}
DEFAULT_TASKS = ("regression", "mlp", "cnn")


def task_names() -> list[str]:
    return sorted(BUILTIN_TASKS)


def check_name(name: str) -> str:
    """Return ``name`` if it is a built-in task, else raise the one-line error naming the choices."""
    if name not in BUILTIN_TASKS:
        raise unknown_name("task", name, BUILTIN_TASKS)
    return name


def get_task(name: str, **params: object) -> Task:
    """Build a built-in task by name, with optional size parameters (see ``xfbench.tasks.builtin``); a size this
    machine cannot hold is one line, not a ``MemoryError``."""
    check_name(name)
    try:
        return BUILTIN_TASKS[name](**params)
    except TypeError as error:
        raise XfbenchError(f"bad parameters for task {name!r}: {error}") from error
    except (MemoryError, OverflowError) as error:
        sizes = ", ".join(f"{key}={value}" for key, value in params.items()) or "its default sizes"
        raise XfbenchError(f"task {name} with {sizes} needs more memory than this machine can give "
                           f"({type(error).__name__}); choose smaller sizes") from None
    except ValueError as error:  # NumPy refuses an array whose size overflows ("array is too big", ...)
        if "too big" not in str(error) and "maximum supported dimension" not in str(error):
            raise
        sizes = ", ".join(f"{key}={value}" for key, value in params.items())
        raise XfbenchError(f"task {name} with {sizes} needs more memory than this machine can give (NumPy: "
                           f"{str(error)[:60]}); choose smaller sizes") from None


__all__ = [
    "BUILTIN_TASKS",
    "DEFAULT_TASKS",
    "SGD",
    "Activation",
    "Adam",
    "AdamW",
    "AvgPool2D",
    "BatchNorm",
    "Conv2D",
    "Dataset",
    "Dense",
    "Embedding",
    "Flatten",
    "GlobalAvgPool2D",
    "Layer",
    "LayerNorm",
    "MaxPool2D",
    "Optimizer",
    "PositionEmbedding",
    "Residual",
    "SelfAttention",
    "Task",
    "WarmupCosine",
    "check_name",
    "get_task",
    "initial_weights",
    "task_names",
]
