"""The adapter contract: what the harness needs from a framework, and nothing more.

A :class:`Backend` says whether its framework is installed (without importing it), configures threads before
the import, lists devices, and builds a :class:`Trainer` for a task on a device from neutral weights.
A Trainer holds device-resident data and offers one optimizer step that returns a *lazy* loss (no host sync),
a sync, predictions and gradients back in NumPy, and the weights back in the neutral layout.

Everything else (epochs, batch order, timing, statistics, metrics) lives once in ``xfbench.compare``.
"""

from __future__ import annotations

import importlib.util
import os
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from xfbench.tasks.spec import Task

Weights = dict[str, np.ndarray]


class Trainer(ABC):
    """One model + optimizer state on one device, ready to train a task."""

    @abstractmethod
    def set_epoch(self, order: np.ndarray) -> None:
        """Make this epoch's batches device-resident: ``order`` has shape (steps_per_epoch, batch_size) and indexes
        the training set. Called between timed regions, never inside one."""

    @abstractmethod
    def train_step(self, batch: int) -> Any:
        """One optimizer step on batch number ``batch`` of the current epoch; returns the loss, not synced."""

    @abstractmethod
    def sync(self, value: Any = None) -> None:
        """Block until all queued device work (and ``value``, if given) is complete."""

    @abstractmethod
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Model outputs (logits / raw values) for ``x`` as a NumPy array."""

    @abstractmethod
    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
        """Loss and gradients at the current weights on one batch, gradients in the neutral layout. No update."""

    @abstractmethod
    def get_weights(self) -> Weights:
        """The current weights in the neutral layout (kernels HWIO / (in, out), float32)."""

    def describe(self) -> dict[str, Any]:
        """What was actually built, recorded in the cell's fingerprint over the backend's own: e.g. whether the
        step was compiled and with what, the memory format. Asked after ``build``, so it says what ran."""
        return {}

    def compile_count(self) -> int | None:
        """How many times the step has been traced/compiled so far; None where there is no compilation."""
        return None

    def device_peak_mb(self) -> float | None:
        """The framework's peak device-memory counter in MiB (accelerators only); None on CPU."""
        return None


class Backend(ABC):
    """A framework adapter. Subclasses set the class attributes and implement the abstract methods."""

    name: str = ""            # registry name, e.g. "tf-graph"
    module: str = ""          # the framework's import name, e.g. "tensorflow"
    distribution: str = ""    # what pip installs, e.g. "tensorflow-cpu"
    extra: str = ""           # xfbench's extra, e.g. "tensorflow"
    layout: str = "NHWC"      # the image layout this adapter computes in
    compiles: bool = False    # its step is traced/compiled (Trainer.compile_count() is an int, not None)
    slow_compile: bool = False  # compiling a model takes seconds to tens of seconds (torch.compile's inductor)
    quiet: ClassVar[dict[str, str]] = {}  # environment that quiets its framework's logging (see quiet_env)

    def unavailable_reason(self) -> str | None:
        """Why this backend cannot run here (framework missing, with the install hint), or None. Imports nothing."""
        if importlib.util.find_spec(self.module) is None:
            return f"{self.module} is not installed: pip install 'xfbench[{self.extra}]'"
        return None

    def quiet_env(self) -> dict[str, str]:
        """Environment variables that keep this framework's log output down, set in the worker before the import
        unless the user set them (the output goes to the worker's log file either way)."""
        return dict(self.quiet)

    def process_env(self) -> dict[str, str]:
        """Environment variables this backend needs before its framework is imported (the worker sets them first;
        e.g. ``KERAS_BACKEND``). A backend with any cannot share a process with one that needs other values."""
        return {}

    def configure_threads(self, threads: int) -> None:
        """Set thread-count environment variables; called before the framework is imported."""
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[variable] = str(threads)

    @abstractmethod
    def setup(self, threads: int) -> None:
        """Import the framework, apply the thread count, silence its logging. Called once per process."""

    @abstractmethod
    def versions(self) -> dict[str, str]:
        """Version strings of the framework (and its runtime pieces)."""

    @abstractmethod
    def devices(self) -> list[dict[str, str]]:
        """Devices this framework sees: ``[{"kind": "cpu", "name": ...}, {"kind": "gpu", "name": ...}]``."""

    @abstractmethod
    def fingerprint(self, device_kind: str) -> dict[str, Any]:
        """Everything that could explain a numeric or speed difference: dtype, matmul precision, layout,
        threads, determinism settings."""

    def unsupported_reason(self, task: Task, device_kind: str) -> str | None:
        """Why this backend cannot run ``task`` on ``device_kind`` (a capability gap), or None."""
        if not any(device["kind"] == device_kind for device in self.devices()):
            return f"{self.module} sees no {device_kind} device"
        return None

    @abstractmethod
    def build(self, task: Task, device_kind: str, weights: Weights) -> Trainer:
        """A trainer for ``task`` on ``device_kind`` starting from ``weights`` (neutral layout), data on device."""
