"""One cell (task x backend x device), run inside a worker process: build, train, evaluate, get ready to time.

The training loop is written here once for every backend: the same epochs, the same batches in the same order
(``Task.epoch_order``), the same initial weights (``initial_weights``), metrics computed in NumPy from the
backend's predictions. Timing turns then run on the prepared trainer (``engine.timing.StepTimer``), on command.
"""

from __future__ import annotations

import math
import resource
import time
from typing import Any

from xfbench.backends.base import Backend, Trainer
from xfbench.compare.engine.timing import StepTimer, time_first_step
from xfbench.tasks import initial_weights
from xfbench.tasks.metrics import compute_metrics
from xfbench.tasks.spec import Task


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class DivergedError(Exception):
    """The training loss became NaN or infinite: the cell measured nothing meaningful (status ``diverged``)."""

    def __init__(self, message: str, curve: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.curve = curve


def train(trainer: Trainer, task: Task, epochs: int | None = None, curve: list[dict[str, Any]] | None = None
          ) -> dict[str, float]:
    """Train for ``epochs`` (default: the task's); returns ``train_s`` (whole training, first step included) and
    ``first_step_s`` (the first step alone, synced: trace/compile time shows here).

    With ``curve`` (a list), each epoch ends with a device sync, the clock stops, and one point is appended: the
    epoch, the cumulative training time, the mean training loss of the epoch's steps and the test-split metrics.
    Evaluating is kept off the clock, so ``train_s`` stays the training time alone. A loss that is NaN or infinite
    at the end of an epoch raises :class:`DivergedError` naming the epoch and step where it first happened.
    """
    train_s = 0.0
    first_step_s = None
    loss = None
    for epoch in range(task.epochs if epochs is None else epochs):
        start = time.perf_counter()
        trainer.set_epoch(task.epoch_order(epoch))
        losses = []
        for batch in range(task.steps_per_epoch):
            if first_step_s is None:
                first_step_s, loss = time_first_step(trainer)
            else:
                loss = trainer.train_step(batch)
            if curve is not None:
                losses.append(loss)  # lazy: read after the epoch's sync, off the clock
        trainer.sync(loss)
        train_s += time.perf_counter() - start
        if curve is not None:
            values = [float(value) for value in losses]
            bad = next((step for step, value in enumerate(values) if not math.isfinite(value)), None)
            if bad is not None:
                raise DivergedError(f"the training loss became {values[bad]} at epoch {epoch + 1}, step {bad + 1} "
                                    f"of {len(values)} (loss before: {values[bad - 1] if bad else 'none'})", curve)
            curve.append(epoch_point(trainer, task, epoch, train_s, values))
    return {"train_s": train_s, "first_step_s": float(first_step_s or 0.0)}


def epoch_point(trainer: Trainer, task: Task, epoch: int, train_s: float, values: list[float]) -> dict[str, Any]:
    """One point of a training curve (see :func:`train`): ``values`` are the epoch's step losses."""
    data = task.data
    test = compute_metrics(task.loss, task.metrics, trainer.predict(data.x_test), data.y_test)
    return {"epoch": epoch + 1, "train_s": train_s, "train_loss": sum(values) / len(values) if values else None,
            "test": test}


def evaluate(trainer: Trainer, task: Task) -> dict[str, float]:
    """Test-split metrics and loss, plus the training-split loss, computed in NumPy."""
    data = task.data
    metrics = compute_metrics(task.loss, task.metrics, trainer.predict(data.x_test), data.y_test)
    metrics["train_loss"] = compute_metrics(task.loss, (), trainer.predict(data.x_train), data.y_train)["loss"]
    return metrics


def build(backend: Backend, task: Task, device_kind: str) -> tuple[Trainer, float]:
    """The trainer for ``task`` from its initial weights, synced; and the seconds it took."""
    start = time.perf_counter()
    trainer = backend.build(task, device_kind, initial_weights(task))
    trainer.sync()
    return trainer, time.perf_counter() - start


def build_train_evaluate(backend: Backend, task: Task, device_kind: str
                         ) -> tuple[Trainer, dict[str, float], dict[str, float], list[dict[str, Any]]]:
    """Build the trainer from the task's initial weights, train it for the task's epochs and evaluate it.

    Returns the trainer, its metrics, the phase times (``build_s``, ``train_s``, ``first_step_s``, ``eval_s``) and the
    training curve (one point per epoch).
    """
    trainer, build_s = build(backend, task, device_kind)
    curve: list[dict[str, Any]] = []
    phases = train(trainer, task, curve=curve)
    eval_start = time.perf_counter()
    metrics = evaluate(trainer, task)
    return trainer, metrics, {"build_s": build_s, **phases, "eval_s": time.perf_counter() - eval_start}, curve


def steady_state_timer(trainer: Trainer, task: Task, slowdown: float = 0.0) -> StepTimer:
    """The timer for steady-state steps after training: the batches of the epoch after the last trained one
    (``slowdown``: the test-only injected slowdown of ``engine.timing``)."""
    trainer.set_epoch(task.epoch_order(task.epochs))
    return StepTimer(trainer, task.steps_per_epoch, slowdown)


def train_cell(backend: Backend, task: Task, device_kind: str, seeds: int = 1) -> tuple[Trainer, dict[str, Any]]:
    """Process 0 of a cell: train and evaluate ``task`` ``seeds`` times (the first seed's trainer is kept for
    timing). Returns the trainer and ``metrics``, ``seed_metrics`` (with seeds > 1), ``curve`` (the first seed's)
    and ``phases``."""
    trainer, metrics, phases, curve = build_train_evaluate(backend, task, device_kind)
    out: dict[str, Any] = {"metrics": metrics, "seed_metrics": [], "curve": curve,
                           "phases": {**phases, "trained_epochs": task.epochs}}
    if seeds > 1:
        out["seed_metrics"] = [metrics] + [build_train_evaluate(backend, task.replace(seed=task.seed + offset),
                                                                device_kind)[1] for offset in range(1, seeds)]
    return trainer, out


def prime_cell(backend: Backend, task: Task, device_kind: str) -> tuple[Trainer, dict[str, Any]]:
    """A timing-only process of a cell: build and run one priming epoch (compiled code, memory pools and caches in
    the state training leaves them), without evaluating. Returns the trainer and its ``phases``."""
    trainer, build_s = build(backend, task, device_kind)
    phases = train(trainer, task, epochs=1)
    return trainer, {"phases": {"build_s": build_s, **phases, "trained_epochs": 1}}
