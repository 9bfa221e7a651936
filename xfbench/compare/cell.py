"""One cell (task x backend x device), run inside a worker process: build, train, evaluate, time.

The training loop is written here once for every backend: the same epochs, the same batches in the same order
(``Task.epoch_order``), the same initial weights (``initial_weights``), metrics computed in NumPy from the
backend's predictions.
"""

from __future__ import annotations

import resource
import time
from typing import Any

from xfbench.backends.base import Backend, Trainer
from xfbench.compare.timing import StepTimer, TimingOptions, measure_steady_state, protocol, time_first_step
from xfbench.tasks import initial_weights
from xfbench.tasks.metrics import compute_metrics
from xfbench.tasks.spec import Task


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train(trainer: Trainer, task: Task) -> dict[str, float]:
    """Train for the task's epochs; returns ``train_s`` (whole training, first step included) and
    ``first_step_s`` (the first step alone, synced: trace/compile time shows here)."""
    start = time.perf_counter()
    first_step_s = None
    loss = None
    for epoch in range(task.epochs):
        trainer.set_epoch(task.epoch_order(epoch))
        for batch in range(task.steps_per_epoch):
            if first_step_s is None:
                first_step_s = time_first_step(trainer)
                continue
            loss = trainer.train_step(batch)
    trainer.sync(loss)
    return {"train_s": time.perf_counter() - start, "first_step_s": float(first_step_s or 0.0)}


def evaluate(trainer: Trainer, task: Task) -> dict[str, float]:
    """Test-split metrics and loss, plus the training-split loss, computed in NumPy."""
    data = task.data
    metrics = compute_metrics(task.loss, task.metrics, trainer.predict(data.x_test), data.y_test)
    metrics["train_loss"] = compute_metrics(task.loss, (), trainer.predict(data.x_train), data.y_train)["loss"]
    return metrics


def build_train_evaluate(backend: Backend, task: Task, device_kind: str) -> tuple[Trainer, dict[str, float],
                                                                                 dict[str, float]]:
    """Build the trainer from the task's initial weights, train it for the task's epochs and evaluate it.

    Returns the trainer, its metrics and the phase times (``build_s``, ``train_s``, ``first_step_s``, ``eval_s``).
    """
    build_start = time.perf_counter()
    trainer = backend.build(task, device_kind, initial_weights(task))
    trainer.sync()
    build_s = time.perf_counter() - build_start
    phases = train(trainer, task)
    eval_start = time.perf_counter()
    metrics = evaluate(trainer, task)
    return trainer, metrics, {"build_s": build_s, **phases, "eval_s": time.perf_counter() - eval_start}


def steady_state_timer(trainer: Trainer, task: Task) -> StepTimer:
    """The timer for steady-state steps after training: the batches of the epoch after the last trained one."""
    trainer.set_epoch(task.epoch_order(task.epochs))
    return StepTimer(trainer, task.steps_per_epoch)


def run_cell(backend: Backend, task: Task, device_kind: str, options: TimingOptions, seeds: int = 1,
             measure: bool = True) -> dict[str, Any]:
    """Train and evaluate ``task`` on one backend and device, ``seeds`` times; time the first seed's steps.

    Returns the cell's ``metrics``, ``timing``, ``memory`` and (with seeds > 1) ``seed_metrics``.
    """
    trainer, metrics, phases = build_train_evaluate(backend, task, device_kind)
    timing: dict[str, Any] = dict(phases)
    if measure:
        steady = measure_steady_state(steady_state_timer(trainer, task), options)
        timing.update(steady)
        timing["samples_per_s"] = task.batch_size / (steady["step_ms"]["median"] / 1e3)
        timing["protocol"] = protocol(options)
    cell: dict[str, Any] = {"metrics": metrics, "timing": timing}
    if seeds > 1:
        seed_metrics = [metrics]
        for offset in range(1, seeds):
            seeded = task.replace(seed=task.seed + offset)
            seed_metrics.append(build_train_evaluate(backend, seeded, device_kind)[1])
        cell["seed_metrics"] = seed_metrics
    cell["memory"] = {"peak_rss_mb": peak_rss_mb(), "device_peak_mb": trainer.device_peak_mb()}
    return cell
