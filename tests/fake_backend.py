"""Backends for the isolation tests, registered through ``XFBENCH_EXTRA_BACKENDS`` so worker processes see them.

``ReferenceBackend`` trains with the float64 NumPy reference (``xfbench.tasks.reference``): a real, framework-free
adapter, so a worker starts in well under a second and the tests do not depend on any framework being installed.
``CrashingBackend`` misbehaves for tasks with special names; ``MissingBackend``'s "framework" does not exist;
``ScratchBackend`` mallocs and frees a large block every step (for the allocator policy).
``WrongFlattenTorchBackend`` and ``SwappedKernelTorchBackend`` are PyTorch adapters with a deliberately wrong layout
conversion, for the parity tests.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import numpy as np

from xfbench.backends import common
from xfbench.backends.base import Backend, Trainer, Weights
from xfbench.backends.torch import TorchBackend, TorchTrainer
from xfbench.tasks import reference
from xfbench.tasks.spec import SGD, Task


class ReferenceTrainer(Trainer):
    """The task's model and optimizer (the formulas of ``xfbench.tasks.spec``) in float64 NumPy."""

    def __init__(self, task: Task, weights: Weights) -> None:
        self.task = task
        self.weights = {name: np.asarray(value, np.float64).copy() for name, value in weights.items()}
        self.first = {name: np.zeros_like(value) for name, value in self.weights.items()}
        self.second = {name: np.zeros_like(value) for name, value in self.weights.items()}
        self.steps = 0
        self.order = task.epoch_order(0)

    def set_epoch(self, order: np.ndarray) -> None:
        self.order = order

    def train_step(self, batch: int) -> Any:
        index = self.order[batch]
        loss, grads = reference.loss_and_grads(self.task, self.weights, self.task.data.x_train[index],
                                               self.task.data.y_train[index])
        self.steps += 1
        opt = self.task.optimizer
        for name, grad in grads.items():
            if isinstance(opt, SGD):
                self.first[name] = opt.momentum * self.first[name] + grad
                self.weights[name] -= opt.learning_rate * self.first[name]
            else:
                self.first[name] = opt.beta1 * self.first[name] + (1 - opt.beta1) * grad
                self.second[name] = opt.beta2 * self.second[name] + (1 - opt.beta2) * grad * grad
                m_hat = self.first[name] / (1 - opt.beta1**self.steps)
                v_hat = self.second[name] / (1 - opt.beta2**self.steps)
                self.weights[name] -= opt.learning_rate * m_hat / (np.sqrt(v_hat) + opt.epsilon)
        return loss

    def sync(self, value: Any = None) -> None:
        pass

    def predict(self, x: np.ndarray) -> np.ndarray:
        return reference.forward(self.task, self.weights, x)  # type: ignore[return-value]

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
        return reference.loss_and_grads(self.task, self.weights, x, y)

    def get_weights(self) -> Weights:
        return {name: value.astype(np.float32) for name, value in self.weights.items()}


class ReferenceBackend(Backend):
    name = "fake-ref"
    module = "numpy"
    distribution = "numpy"
    extra = "numpy"

    def setup(self, threads: int) -> None:
        pass

    def versions(self) -> dict[str, str]:
        return {"numpy": np.__version__}

    def devices(self) -> list[dict[str, str]]:
        return [{"kind": "cpu", "name": "numpy (float64 reference)"}]

    def fingerprint(self, device_kind: str) -> dict[str, Any]:
        return {"dtype": "float64", "layout": "NHWC", "optimizer_impl": "NumPy, spec formulas",
                "glibc_tunables": os.environ.get("GLIBC_TUNABLES")}  # what the worker was started with

    def build(self, task: Task, device_kind: str, weights: Weights) -> Trainer:
        return ReferenceTrainer(task, weights)


def _called_from(function: str, module: str) -> bool:
    """Whether ``function`` of xfbench's ``compare/engine/<module>`` is on the caller's stack."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_name == function and frame.f_code.co_filename.endswith(os.path.join("compare", "engine", module)):
            return True
        frame = frame.f_back
    return False


def _in_timing_turn() -> bool:
    """Whether the caller runs inside a timing turn (``StepTimer.turn``), i.e. in the scheduler's rounds."""
    return _called_from("turn", "timing.py")


class TimingFaultTrainer(ReferenceTrainer):
    """Trains normally, then misbehaves in its first timing turn: "crash-timing" dies (exit code 3), "hang-timing"
    never returns, "raise-timing" raises."""

    def train_step(self, batch: int) -> Any:
        if _in_timing_turn():
            if self.task.name == "crash-timing":
                os._exit(CrashingBackend.EXIT_CODE)
            if self.task.name == "hang-timing":
                while True:
                    time.sleep(60)
            if self.task.name == "raise-timing":
                raise RuntimeError("deliberate failure while timed")
        return super().train_step(batch)


def _in_priming() -> bool:
    """Whether the caller builds for a timing-only process (``compare.engine.loop.prime_cell``), not for training."""
    return _called_from("prime_cell", "loop.py")


class CrashingBackend(ReferenceBackend):
    """Task "crash": the process dies (exit code 3); "crash-priming": a timing-only process dies while it builds
    (process 0 trains normally); "hang": build never returns; "raise": build raises; the task
    named by ``XFBENCH_FAKE_HANG_TASK``: build never returns; "crash-timing", "hang-timing", "raise-timing": see
    :class:`TimingFaultTrainer`. Task "hold" (or the one named by ``XFBENCH_FAKE_HOLD_TASK``): build waits while the
    file ``$XFBENCH_FAKE_HOLD_FILE`` exists (a test holds a worker where it wants it, e.g. on a Ray node, whose
    environment is fixed when the node starts)."""

    name = "fake-crash"
    EXIT_CODE = 3

    def build(self, task: Task, device_kind: str, weights: Weights) -> Trainer:
        if task.name == "crash" or (task.name == "crash-priming" and _in_priming()):
            os._exit(self.EXIT_CODE)
        if task.name == "hang" or task.name == os.environ.get("XFBENCH_FAKE_HANG_TASK"):
            while True:
                time.sleep(60)
        if task.name == "raise":
            raise RuntimeError("deliberate failure in build")
        hold = os.environ.get("XFBENCH_FAKE_HOLD_FILE")
        held = ("hold", os.environ.get("XFBENCH_FAKE_HOLD_TASK"))
        while task.name in held and hold and os.path.exists(hold):
            time.sleep(0.05)
        return TimingFaultTrainer(task, weights)


class ScratchTrainer(ReferenceTrainer):
    """Each step also takes a 48 MiB scratch block from malloc, writes it and frees it, as XLA's CPU runtime does
    with a CNN step's temporaries."""

    SCRATCH_BYTES = 48 << 20

    def __init__(self, task: Task, weights: Weights) -> None:
        import ctypes

        super().__init__(task, weights)
        self._ctypes = ctypes
        self._libc = ctypes.CDLL(None)
        self._libc.malloc.restype = ctypes.c_void_p
        self._libc.free.argtypes = [ctypes.c_void_p]

    def train_step(self, batch: int) -> Any:
        block = self._libc.malloc(self.SCRATCH_BYTES)
        self._ctypes.memset(block, 1, self.SCRATCH_BYTES)
        self._libc.free(block)
        return super().train_step(batch)


class ScratchBackend(ReferenceBackend):
    """The reference backend with a large per-step scratch allocation (``ScratchTrainer``)."""

    name = "fake-scratch"

    def build(self, task: Task, device_kind: str, weights: Weights) -> Trainer:
        return ScratchTrainer(task, weights)


class MissingBackend(ReferenceBackend):
    """A backend whose framework is not installed."""

    name = "fake-missing"
    module = "no_such_framework_xyz"
    distribution = "no-such-framework-xyz"
    extra = "no_such_framework_xyz"


# ------------------------------------------------------------------- deliberately wrong layout conversions
# The wrong conversion is used consistently (loading weights, reading weights and gradients back), so weights
# round-trip exactly and training runs without an error: only the computed function differs, which is what parity
# checking has to catch. Importing this module imports no framework; PyTorch is imported in ``build``.
def to_torch_without_flatten_permutation(task: Task, weights: Weights) -> Weights:
    """Neutral -> PyTorch layouts, forgetting that a channels-first Flatten orders the dense rows C-H-W."""
    converted = common.to_channels_first(task, weights)  # correct for conv kernels and biases
    for name in common.flatten_permutations(task):
        converted[name] = np.ascontiguousarray(weights[name].T, dtype=np.float32)  # rows left in H-W-C order
    return converted


def from_torch_without_flatten_permutation(task: Task, weights: Weights) -> Weights:
    """The exact inverse of :func:`to_torch_without_flatten_permutation`."""
    converted = common.from_channels_first(task, weights)
    for name in common.flatten_permutations(task):
        converted[name] = np.ascontiguousarray(weights[name].T, dtype=np.float32)
    return converted


def to_torch_swapping_kernel_hw(task: Task, weights: Weights) -> Weights:
    """Neutral -> PyTorch layouts with conv kernels permuted to (O, I, W, H), H and W swapped, and written into the
    (O, I, kh, kw) parameter in memory order, as a flat-buffer weight loader would: for a square kernel that is the
    spatially transposed kernel, for a non-square one scrambled taps. Everything else is converted correctly."""
    converted = common.to_channels_first(task, weights)
    for name, value in weights.items():
        if name.endswith("Conv2D.kernel"):
            height, width, channels, filters = value.shape
            converted[name] = np.ascontiguousarray(
                value.transpose(3, 2, 1, 0).reshape(filters, channels, height, width), dtype=np.float32)
    return converted


def from_torch_swapping_kernel_hw(task: Task, weights: Weights) -> Weights:
    """The exact inverse of :func:`to_torch_swapping_kernel_hw`."""
    converted = common.from_channels_first(task, weights)
    for name, value in weights.items():
        if name.endswith("Conv2D.kernel"):
            filters, channels, height, width = value.shape
            converted[name] = np.ascontiguousarray(
                value.reshape(filters, channels, width, height).transpose(3, 2, 1, 0), dtype=np.float32)
    return converted


class WrongLayoutTorchTrainer(TorchTrainer):
    """``TorchTrainer`` with its neutral <-> PyTorch weight conversion replaced by ``to_torch`` / ``from_torch``."""

    to_torch = staticmethod(to_torch_without_flatten_permutation)
    from_torch = staticmethod(from_torch_without_flatten_permutation)

    def _reported(self, neutral: Weights) -> Weights:
        """What the wrong adapter reports, from what the correct conversion made of the PyTorch tensors."""
        return self.from_torch(self.task, common.to_channels_first(self.task, neutral))

    def set_weights(self, weights: Weights) -> None:  # the parameters end up holding to_torch(weights)
        super().set_weights(common.from_channels_first(self.task, self.to_torch(self.task, weights)))

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
        loss, grads = super().loss_and_grads(x, y)
        return loss, self._reported(grads)

    def get_weights(self) -> Weights:
        return self._reported(super().get_weights())


class SwappedKernelTrainer(WrongLayoutTorchTrainer):
    to_torch = staticmethod(to_torch_swapping_kernel_hw)
    from_torch = staticmethod(from_torch_swapping_kernel_hw)


class WrongFlattenTorchBackend(TorchBackend):
    """PyTorch with the dense kernel after a Flatten of feature maps loaded without the C-H-W row permutation."""

    name = "fake-torch-flatten"
    trainer = WrongLayoutTorchTrainer

    def build(self, task: Task, device_kind: str, weights: Weights) -> Trainer:
        import torch

        return self.trainer(task, torch.device("cuda" if device_kind == "gpu" else "cpu"), weights)


class SwappedKernelTorchBackend(WrongFlattenTorchBackend):
    """PyTorch with conv kernels loaded with H and W swapped (dense kernels correct)."""

    name = "fake-torch-kernel-hw"
    trainer = SwappedKernelTrainer
