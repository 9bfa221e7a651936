"""Parity's worker half: this backend's forward outputs, loss and gradients against the float64 reference on the
first training batch (and the float32 evaluation of the reference's gradients, which sets how close float32 can
come), its weights after K optimizer steps and its evaluation outputs on that batch then (judged in the parent by
``compare.stats.parity``).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from xfbench.backends.base import Backend
from xfbench.compare.stats.parity import max_abs, relative, tensor_diffs
from xfbench.tasks import initial_weights, reference
from xfbench.tasks.spec import Task


def first_batch(task: Task) -> tuple[np.ndarray, np.ndarray]:
    index = task.epoch_order(0)[0]
    return task.data.x_train[index], task.data.y_train[index]


def cell_parity(backend: Backend, task: Task, device_kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """Worker half: this backend's forward/loss/gradient diffs vs the reference and its weights after K steps."""
    weights = initial_weights(task)
    x, y = first_batch(task)
    trainer = backend.build(task, device_kind, weights)
    outputs = trainer.predict(x)
    ref_outputs = reference.forward(task, weights, x)
    loss, grads = trainer.loss_and_grads(x, y)
    ref_loss, ref_grads = reference.loss_and_grads(task, weights, x, y)
    # the float32 reference with the batch's rows in a few orders: how far float32 rounding alone moves a gradient
    orders = [np.arange(len(x))] + [np.random.default_rng(seed).permutation(len(x))
                                    for seed in range(1, max(1, int(options.get("float32_orders", 3))))]
    ref_grads32 = [reference.loss_and_grads(task, weights, x[order], y[order], dtype=np.float32)[1]
                   for order in orders]
    last = None
    for step in range(options["steps"]):
        epoch, batch = divmod(step, task.steps_per_epoch)
        if batch == 0:
            trainer.set_epoch(task.epoch_order(epoch))
        last = trainer.train_step(batch)
    trainer.sync(last)
    outputs_after = trainer.predict(x)
    forward_max_abs = max_abs(outputs, ref_outputs)
    return {
        "forward_max_abs": forward_max_abs,
        "forward_rel": relative(outputs, ref_outputs),
        "forward_max_rel": forward_max_abs / max(float(np.max(np.abs(ref_outputs))), 1e-30),
        "loss_abs": abs(loss - ref_loss),
        "loss_rel": abs(loss - ref_loss) / max(abs(ref_loss), 1e-30),
        "grads": {name: asdict(diff) for name, diff in tensor_diffs(grads, ref_grads, ref_grads32).items()},
        "steps": options["steps"],
        "optimizer_formula": trainer.describe().get("optimizer_formula", "spec"),
        "weights_after_steps": {name: value.tolist() for name, value in trainer.get_weights().items()},
        "outputs_after_steps": outputs_after.tolist(),
    }
