"""A :class:`Task` as a plain document and its arrays, and back: no class paths, no pickle.

The form a task travels in to a worker process, which may run another xfbench version in another environment
(``xfbench ab``; the job format of ``compare.platforms.job``). A layer or optimizer is ``{"type": "Dense", "units":
64, ...}`` (its dataclass fields; tuples become lists); the data are the four arrays of the :class:`Dataset`.
Reading a document builds the Task through its constructor, so every check of the spec runs again, and a type or
field this xfbench does not know is one line naming it. A field a class gained after its first release is written
only when it differs from its default (``ADDED``), so a task that uses none of the newer options is the document an
older xfbench reads; :func:`first_newer_feature` names what an older reader cannot express.

Example:
    >>> from xfbench.tasks import get_task
    >>> task = get_task("mlp", width=16)
    >>> document, arrays = task_document(task)
    >>> document["layers"][0]
    {'type': 'Dense', 'units': 16, 'activation': 'relu', 'init': 'glorot_uniform'}
    >>> task_from_document(document, arrays).spec_hash == task.spec_hash
    True
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from xfbench.errors import XfbenchError
from xfbench.tasks.layers import walk
from xfbench.tasks.spec import SGD, Activation, Adam, AvgPool2D, Conv2D, Dataset, Dense, Flatten, MaxPool2D, Task
from xfbench.tasks.spec import SPEC_TYPES as TYPES

SPEC_TYPES: dict[str, type] = {cls.__name__: cls for cls in TYPES}
# what the first task documents (worker job version 1, and the pickles of version 0) could hold: an older xfbench
# reads only these types, activations, initializers and metrics, and float32 inputs
FIRST_TYPES = (Dense, Conv2D, MaxPool2D, AvgPool2D, Flatten, Activation, SGD, Adam)
FIRST_ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh")
FIRST_INITIALIZERS = ("glorot_uniform", "glorot_normal", "he_uniform", "he_normal")
FIRST_METRICS = ("accuracy", "r2", "mse")
ARRAYS = ("x_train", "y_train", "x_test", "y_test")
TASK_FIELDS = ("name", "layers", "loss", "optimizer", "batch_size", "epochs", "metrics", "seed", "description", "target")


def encode(value: Any) -> Any:
    """A spec value as JSON-able data: a layer or optimizer as ``{"type": ..., fields...}``, tuples as lists.

    Example:
        >>> encode(MaxPool2D(2))
        {'type': 'MaxPool2D', 'pool_size': [2, 2], 'strides': [2, 2]}
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        name = type(value).__name__
        if SPEC_TYPES.get(name) is not type(value):
            raise XfbenchError(f"{name} is not a task spec type xfbench can send to a worker; use the layers and "
                               f"optimizers of xfbench.tasks ({', '.join(sorted(SPEC_TYPES))})")
        added = getattr(type(value), "ADDED", {})
        return {"type": name, **{item.name: encode(getattr(value, item.name)) for item in dataclasses.fields(value)
                                 if not (item.name in added and getattr(value, item.name) == added[item.name])}}
    if isinstance(value, (list, tuple)):
        return [encode(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def decode(value: Any) -> Any:
    """The inverse of :func:`encode`: typed specs from their documents (lists stay lists; constructors take them)."""
    if isinstance(value, dict) and "type" in value:
        cls = SPEC_TYPES.get(value["type"])
        if cls is None:
            raise XfbenchError(f"unknown task spec type {value['type']!r} (written by a newer xfbench?); this one "
                               f"knows: {', '.join(sorted(SPEC_TYPES))}")
        names = {item.name for item in dataclasses.fields(cls) if item.init}
        unknown = sorted(set(value) - names - {"type"})
        if unknown:
            raise XfbenchError(f"{value['type']} has no field {unknown[0]!r} in this xfbench (written by a newer one?); "
                               f"its fields: {', '.join(sorted(names))}")
        return cls(**{key: decode(item) for key, item in value.items() if key in names})
    if isinstance(value, list):
        return [decode(item) for item in value]
    return value


def task_document(task: Task) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The task as a JSON-able document and its four data arrays (keyed like :data:`ARRAYS`)."""
    document = {name: encode(getattr(task, name)) for name in TASK_FIELDS}
    return document, {name: getattr(task.data, name) for name in ARRAYS}


def task_from_document(document: dict[str, Any], arrays: dict[str, np.ndarray]) -> Task:
    """The Task of :func:`task_document`'s output, built (and so checked) by its constructor."""
    values = {name: decode(document[name]) for name in TASK_FIELDS if name in document}
    values["layers"] = tuple(values.get("layers") or ())
    values["metrics"] = tuple(values.get("metrics") or ())
    return Task(data=Dataset(*(np.asarray(arrays[name]) for name in ARRAYS)), **values)


def first_newer_feature(task: Task) -> str | None:
    """What in ``task`` the first task documents cannot express (an xfbench whose worker reads job versions 0 and 1
    only would refuse it or, worse, drop a field it does not know), or None.

    Example:
        >>> from xfbench.tasks import get_task
        >>> first_newer_feature(get_task("mlp")), first_newer_feature(get_task("transformer"))
        (None, 'layer 0 (Embedding)')
    """
    for site in walk(task.layers, task.input_shape):
        layer = site.layer
        where = f"layer {site.prefix.replace('.', ' (', 1)})" if site.prefix.count(".") == 1 else f"layer {site.prefix}"
        if not isinstance(layer, FIRST_TYPES):
            return where
        for item, default in getattr(type(layer), "ADDED", {}).items():
            if getattr(layer, item) != default:
                return f"{where} {item}={getattr(layer, item)!r}"
        activation = getattr(layer, "activation", getattr(layer, "name", "linear"))
        if activation not in FIRST_ACTIVATIONS:
            return f"{where} activation {activation!r}"
        if getattr(layer, "init", "glorot_uniform") not in FIRST_INITIALIZERS:
            return f"{where} initializer {layer.init!r}"  # type: ignore[union-attr]
    opt = task.optimizer
    if type(opt) not in (SGD, Adam):
        return f"optimizer {type(opt).__name__}"
    for item, default in getattr(type(opt), "ADDED", {}).items():
        if getattr(opt, item) != default:
            return f"optimizer {type(opt).__name__} {item}"
    for metric in task.metrics:
        if metric not in FIRST_METRICS:
            return f"metric {metric}"
    return None
