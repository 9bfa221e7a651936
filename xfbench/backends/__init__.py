"""The backend registry. Adapters are named in one table and imported lazily on first use.

Rule: importing ``xfbench`` (or this module) imports no framework. A backend's module is imported only by
:func:`get`, and the framework itself only in ``Backend.setup``, which runs in a worker process.

Example:
    >>> from xfbench.backends import backend_names
    >>> backend_names()
    ['jax', 'keras-jax', 'keras-tensorflow', 'keras-torch', 'tf-eager', 'tf-graph', 'tf-xla', 'torch', 'torch-compile']
"""

from __future__ import annotations

import functools
import importlib
import os
from typing import TYPE_CHECKING

from xfbench.errors import XfbenchError, unknown_name

if TYPE_CHECKING:
    from xfbench.backends.base import Backend

# name -> (module:class, constructor keyword arguments); the default four first, then the other modes
BACKENDS: dict[str, tuple[str, dict[str, object]]] = {
    "tf-graph": ("xfbench.backends.tensorflow:TensorFlowBackend", {"graph": True}),
    "tf-eager": ("xfbench.backends.tensorflow:TensorFlowBackend", {"graph": False}),
    "torch": ("xfbench.backends.torch:TorchBackend", {}),
    "jax": ("xfbench.backends.jax:JaxBackend", {}),
    "tf-xla": ("xfbench.backends.tensorflow:TensorFlowBackend", {"graph": True, "xla": True}),
    "torch-compile": ("xfbench.backends.torch:TorchBackend", {"compile": True}),
    "keras-jax": ("xfbench.backends.keras:KerasBackend", {"framework": "jax"}),
    "keras-tensorflow": ("xfbench.backends.keras:KerasBackend", {"framework": "tensorflow"}),
    "keras-torch": ("xfbench.backends.keras:KerasBackend", {"framework": "torch"}),
}
DEFAULT_BACKENDS = ("tf-graph", "tf-eager", "torch", "jax")
DESCRIPTIONS = {
    "tf-graph": "TensorFlow, step in tf.function (XLA for conv-free models on CPU, always on GPU)",
    "tf-eager": "TensorFlow, eager op by op",
    "tf-xla": "TensorFlow, tf.function with XLA (jit_compile=True) for every model",
    "torch": "PyTorch eager",
    "torch-compile": "PyTorch, the model through torch.compile (inductor, mode default)",
    "jax": "JAX, the whole step under jax.jit",
    "keras-jax": "Keras 3 on JAX: Keras layers, optimizer and compiled train step",
    "keras-tensorflow": "Keras 3 on TensorFlow: Keras layers, optimizer and compiled train step",
    "keras-torch": "Keras 3 on PyTorch: Keras layers, optimizer and train step",
}
BUILTIN_ORDER = tuple(BACKENDS)  # the built-in backends in the registry's order (reports colour them by it)
BUILTIN = frozenset(BACKENDS)


def _register_extra(spec: str) -> None:
    """Register users' own adapters from ``XFBENCH_EXTRA_BACKENDS="name=module:Class,..."``.

    An environment variable (not a call) so that worker processes, which import this module afresh, see them too.
    """
    for entry in filter(None, (item.strip() for item in spec.split(","))):
        name, _, target = entry.partition("=")
        name = name.strip()
        if not name or ":" not in target:
            raise XfbenchError(f"XFBENCH_EXTRA_BACKENDS entry {entry!r} must look like name=package.module:ClassName")
        if name in BUILTIN:
            raise XfbenchError(f"XFBENCH_EXTRA_BACKENDS cannot replace the built-in backend {name!r}; give your adapter "
                               f"another name (built in: {', '.join(sorted(BUILTIN))})")
        if name in BACKENDS and BACKENDS[name][0] != target.strip():
            raise XfbenchError(f"XFBENCH_EXTRA_BACKENDS names {name!r} twice; each name must be one adapter")
        BACKENDS[name] = (target.strip(), {})


_register_extra(os.environ.get("XFBENCH_EXTRA_BACKENDS", ""))


def backend_names() -> list[str]:
    return sorted(BACKENDS)


def help_text() -> str:
    """The registered backends for a command's ``--help``: the built-in ones in the registry's order, then users'.

    Example:
        >>> help_text().split(", ")[:4]
        ['tf-graph', 'tf-eager', 'torch', 'jax']
    """
    return ", ".join([*BUILTIN_ORDER, *sorted(set(BACKENDS) - BUILTIN)])


def describe(name: str) -> str:
    """One line on what backend ``name`` runs (a user's own adapter: its module and class)."""
    return DESCRIPTIONS.get(name) or f"user adapter {BACKENDS[name][0]}"


def check_name(name: str) -> str:
    """Return ``name`` if it is a registered backend, else raise the one-line error naming the choices."""
    if name not in BACKENDS:
        raise unknown_name("backend", name, BACKENDS)
    return name


@functools.cache
def get(name: str) -> Backend:
    """The adapter registered as ``name`` (its module imported now, its framework not yet)."""
    target, kwargs = BACKENDS[check_name(name)]
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**kwargs)
