"""How close can float32 come? The float64 reference evaluated in float32, per task: the floor under parity's limits.

For each task, the reference's own formulas run once in float64 and once in float32 (``reference.loss_and_grads``
and ``reference.optimizer_steps`` with ``dtype=np.float32``) from the task's initial weights on its first batches;
the table gives the worst tensor's relative difference (‖f32 − f64‖ / ‖f64‖) for the gradients on the first batch
and for the parameters (and running statistics) after K steps. Where a task's formulas lose digits in float32, no
float32 backend can be closer, and parity's per-tensor limit grows with this number (docs/parity.md).

The float32 parameters come from ``--orders`` runs, each with the batch rows in another order (the same function
in exact arithmetic, other sums in float32), as ``xfbench parity`` computes them; the table shows the first
(rows unchanged) and the worst of them: one order alone can understate the floor.

``--set KEY=VALUE`` sizes the built-in tasks (applied to each task that takes KEY, e.g. ``--set filters=4``).

``--sgd LR`` also runs each task with SGD (momentum 0.9) at that rate in place of its optimizer, to see whether the
loss comes from the optimizer or from the model.

Usage: python benchmarks/float32_floor.py [--tasks resnet,transformer,...] [--steps 10] [--orders 3] [--sgd 0.05]
                                          [--set KEY=VALUE ...]
No framework is imported: NumPy only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from tabulate import tabulate

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import inspect

from xfbench.compare.stats.parity import ParityOptions, reference_steps, relative
from xfbench.compare.sweep import parse_fixed
from xfbench.errors import XfbenchError
from xfbench.tasks import BUILTIN_TASKS, SGD, get_task, initial_weights, reference, task_names


def worst(ours: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> tuple[float, str]:
    return max((relative(ours[name], truth[name]), name) for name in truth)


def number(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(task_names()), help="comma-separated built-in tasks (default: all)")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps K (default: %(default)s)")
    parser.add_argument("--orders", type=int, default=3, help="float32 runs, rows in other orders (default: %(default)s)")
    parser.add_argument("--sgd", type=float, help="also run each task with SGD(LR, momentum=0.9)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="size the tasks")
    args = parser.parse_args()
    names = [name.strip() for name in args.tasks.split(",") if name.strip()]
    unknown = [name for name in names if name not in task_names()]
    if unknown or not names:
        parser.error(f"unknown task {unknown[0] if unknown else ''!r}; choose from: {', '.join(task_names())}")
    if args.steps < 1 or args.orders < 1:
        parser.error("--steps and --orders must be at least 1")
    try:
        fixed = {key: number(value) for key, value in parse_fixed(args.set).items()}
    except XfbenchError as error:
        parser.error(str(error))
    takes_any = {key for name in names for key in inspect.signature(BUILTIN_TASKS[name]).parameters}
    unknown_keys = sorted(set(fixed) - takes_any)
    if unknown_keys:
        parser.error(f"--set {unknown_keys[0]}: no chosen task takes it; choose from: {', '.join(sorted(takes_any))}")
    rows, started = [], time.perf_counter()
    for name in names:
        takes = inspect.signature(BUILTIN_TASKS[name]).parameters
        base = get_task(name, **{key: value for key, value in fixed.items() if key in takes})
        variants = [("task's own", base)]
        if args.sgd:
            variants.append((f"SGD {args.sgd:g}, momentum 0.9", base.replace(optimizer=SGD(args.sgd, 0.9))))
        for label, task in variants:
            weights = initial_weights(task)
            index = task.epoch_order(0)[0]
            x, y = task.data.x_train[index], task.data.y_train[index]
            _, grads = reference.loss_and_grads(task, weights, x, y)
            _, grads32 = reference.loss_and_grads(task, weights, x, y, dtype=np.float32)
            after, after32 = reference_steps(task, ParityOptions(steps=args.steps, float32_orders=args.orders))
            grad_rel, grad_name = worst(grads32, grads)
            first_rel, first_name = worst(after32[0], after)
            param_rel, param_name = max(worst(one, after) for one in after32)
            rows.append([name, label, f"{grad_rel:.2g}", grad_name, f"{first_rel:.2g}", first_name,
                         f"{param_rel:.2g}", param_name])
            print(f"{name} ({label}) done [{time.perf_counter() - started:.0f} s]", file=sys.stderr, flush=True)
    print(tabulate(rows, headers=["task", "optimizer", "gradients: float32 vs float64", "worst tensor",
                                  f"after {args.steps} steps, rows in order", "worst tensor",
                                  f"worst of {args.orders} orders", "worst tensor"], disable_numparse=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
