"""Backends for the isolation tests, registered through ``XFBENCH_EXTRA_BACKENDS`` so worker processes see them.

``ReferenceBackend`` trains with the float64 NumPy reference (``xfbench.tasks.reference``): a real, framework-free
adapter, so a worker starts in well under a second and the tests do not depend on any framework being installed.
``CrashingBackend`` misbehaves for tasks with special names; ``MissingBackend``'s "framework" does not exist.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from xfbench.backends.base import Backend, Trainer, Weights
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
        return {"dtype": "float64", "layout": "NHWC", "optimizer_impl": "NumPy, spec formulas"}

    def build(self, task: Task, device_kind: str, weights: Weights) -> Trainer:
        return ReferenceTrainer(task, weights)


class CrashingBackend(ReferenceBackend):
    """Task "crash": the process dies (exit code 3); "hang": build never returns; "raise": build raises."""

    name = "fake-crash"
    EXIT_CODE = 3

    def build(self, task: Task, device_kind: str, weights: Weights) -> Trainer:
        if task.name == "crash":
            os._exit(self.EXIT_CODE)
        if task.name == "hang":
            while True:
                time.sleep(60)
        if task.name == "raise":
            raise RuntimeError("deliberate failure in build")
        return super().build(task, device_kind, weights)


class MissingBackend(ReferenceBackend):
    """A backend whose framework is not installed."""

    name = "fake-missing"
    module = "no_such_framework_xyz"
    distribution = "no-such-framework-xyz"
    extra = "no_such_framework_xyz"
