"""Keras 3 vs xfbench on xfbench's parity setup, measured in one run, for the README's side-by-side figures.

Usage: ``python benchmarks/keras_parity.py [--task cnn28] [--steps 10]``

Both tools get exactly what ``xfbench parity`` uses: the task's initial weights (``initial_weights``, neutral layout:
conv kernels HWIO, dense (in, out), which is Keras' channels_last layout), its first training batch and its first K
training batches in order. For each Keras backend (tensorflow, jax, torch), ``_keras_worker.py`` runs in its own
process with ``KERAS_BACKEND`` set: a Keras Sequential built from the task's layers, ``set_weights``, the float32
forward on the first batch, then K ``train_on_batch`` steps with the task's loss and optimizer (``keras.optimizers.Adam``
with the task's learning rate, betas and epsilon; SGD with momentum for regression). This script then compares:

- the forward outputs with ``xfbench.tasks.reference.forward`` (float64): max abs and relative-in-norm diff;
- the parameters after K steps between every pair of Keras backends: per tensor ‖a − b‖/‖b‖ (worst tensor) and
  element-wise max abs; and with the float64 reference of Keras' own optimizer formula (Keras' Adam adds epsilon
  before the bias correction: ``reference.optimizer_steps(..., formula="keras")``).

The Keras model is Keras' own layers, as a user builds it (``keras_variables(task, stock=True)``): on the
transformer this shows what Keras 3 on TensorFlow does to an embedding's gradient (see ``DenseGradientEmbedding``).

In the same run it runs ``xfbench parity`` on the same task and prints both tools in one table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tabulate import tabulate

import xfbench
from xfbench.compare.engine.parity import first_batch
from xfbench.compare.stats.parity import relative, summary
from xfbench.tasks import get_task, initial_weights, reference
from xfbench.tasks.spec import Task

KERAS_BACKENDS = ("tensorflow", "jax", "torch")
WORKER = Path(__file__).with_name("_keras_worker.py")
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Row:
    """One (tool, backend) line of the table; ``error`` set when that backend could not run."""

    tool: str
    backend: str
    forward_max_abs: float | None = None
    forward_rel: float | None = None
    params_rel: float | None = None
    params_max_abs: float | None = None
    params_vs_reference: float | None = None
    worst_tensor: str = ""
    error: str | None = None
    note: str = ""


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) if np.size(a) else 0.0


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else "no output"


def write_inputs(task: Task, steps: int, path: Path) -> dict[str, np.ndarray]:
    """Write the worker's input (weights, first batch, K batches) and return the neutral initial weights."""
    weights = initial_weights(task)
    x, _ = first_batch(task)
    arrays = {f"w:{name}": value for name, value in weights.items()}
    arrays["first_x"] = x
    for step, (bx, by) in enumerate(reference.task_batches(task, steps)):
        arrays[f"x{step}"], arrays[f"y{step}"] = bx, by
    np.savez(path, **arrays)
    return weights


def run_keras(backend: str, task: Task, in_path: Path, out_path: Path, timeout: float) -> dict[str, np.ndarray] | str:
    """Run the worker under one Keras backend; its outputs, or a one-line reason it failed."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    command = [sys.executable, str(WORKER), task.name, str(in_path), str(out_path)]
    try:
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:g}s"
    if proc.returncode != 0 or not out_path.exists():
        return f"exit {proc.returncode}: {_last_line(proc.stderr or proc.stdout)}"
    with np.load(out_path) as data:
        return {key: data[key] for key in data.files}


def keras_rows(task: Task, steps: int, tmp: Path, timeout: float) -> list[Row]:
    """Forward diffs vs float64 and parameter diffs between Keras backends after ``steps`` steps."""
    weights = write_inputs(task, steps, tmp / "inputs.npz")
    x, _ = first_batch(task)
    ref_out = reference.forward(task, weights, x)
    keras_reference = reference.optimizer_steps(task, weights, reference.task_batches(task, steps), steps,
                                                formula="keras")
    rows, params = [], {}
    for backend in KERAS_BACKENDS:
        print(f"keras: running backend {backend} ...", file=sys.stderr, flush=True)
        out = run_keras(backend, task, tmp / "inputs.npz", tmp / f"out-{backend}.npz", timeout)
        if isinstance(out, str):
            rows.append(Row("keras", backend, error=out))
            continue
        params[backend] = {name: out[f"w:{name}"] for name in weights}
        rows.append(Row("keras", backend, _max_abs(out["outputs"], ref_out), relative(out["outputs"], ref_out),
                        note="XLA" if bool(out["jit_compile"]) else "no XLA"))
        rows[-1].params_vs_reference = max(relative(params[backend][name], keras_reference[name]) for name in weights)
    for row in rows:
        if row.error or len(params) < 2:
            continue
        diffs = [(relative(params[row.backend][name], params[other][name]),
                  _max_abs(params[row.backend][name], params[other][name]), name)
                 for other in params if other != row.backend for name in weights]
        row.params_rel, _, row.worst_tensor = max(diffs)
        row.params_max_abs = max(mx for _, mx, _ in diffs)
    return rows


def xfbench_rows(task: Task, steps: int, tmp: Path, timeout: float) -> list[Row]:
    """``xfbench parity`` on the same task and K, as a subprocess; one row per backend cell."""
    json_path = tmp / "xfbench-parity.json"
    command = [sys.executable, "-m", "xfbench.cli", "parity", "--tasks", task.name, "--steps", str(steps),
               "--timeout", str(timeout), "--json", str(json_path)]
    print("xfbench: running xfbench parity ...", file=sys.stderr, flush=True)
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if not json_path.exists():  # exit code 1 only means a tolerance failed; the JSON is still written
        return [Row("xfbench", "(all)", error=f"exit {proc.returncode}: {_last_line(proc.stderr or proc.stdout)}")]
    rows = []
    for cell in xfbench.load(str(json_path)).cells:
        if not cell.ok or not cell.parity:
            rows.append(Row("xfbench", cell.backend, error=f"{cell.status}: {_last_line(cell.error or '')}"))
            continue
        head = summary(cell.parity)
        between = [(diff.rel, name) for diffs in cell.parity.params_vs_backends.values() for name, diff in diffs.items()]
        rows.append(Row("xfbench", cell.backend, head["forward_max_abs"], head["forward_rel"],
                        head["params_vs_backends_rel"], head["params_vs_backends_max_abs"],
                        params_vs_reference=head.get("params_vs_reference_rel"),
                        worst_tensor=max(between, default=(0, ""))[1],
                        note="passed" if cell.parity.passed else "FAILED tolerance"))
    return rows


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def render(rows: list[Row], steps: int) -> str:
    headers = ["tool", "backend", "fwd max abs vs f64", "fwd rel vs f64", f"param rel btw backends ({steps} steps)",
               "param max abs btw backends", "param rel vs f64 (own formula)", "worst tensor", "note"]
    table = [[row.tool, row.backend, *(map(_fmt, (row.forward_max_abs, row.forward_rel, row.params_rel,
                                                     row.params_max_abs, row.params_vs_reference))), row.worst_tensor,
              f"error: {row.error}" if row.error else row.note] for row in rows]
    return tabulate(table, headers=headers, disable_numparse=True)


def headline(tool: str, rows: list[Row]) -> str:
    """``tool: forward max abs X, params rel Y``, worst over that tool's backends."""
    def worst(attr: str) -> str:
        values = [getattr(row, attr) for row in rows if row.tool == tool and getattr(row, attr) is not None]
        return _fmt(max(values)) if values else "n/a"
    return (f"{tool}: forward max abs {worst('forward_max_abs')}, params rel between backends {worst('params_rel')}, "
            f"vs float64 {worst('params_vs_reference')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="cnn28", help="built-in xfbench task (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps K (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per backend (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    task = get_task(args.task)
    with tempfile.TemporaryDirectory(prefix="keras-parity-") as folder:
        tmp = Path(folder)
        rows = keras_rows(task, args.steps, tmp, args.timeout) + xfbench_rows(task, args.steps, tmp, args.timeout)
    print(f"task {task.name}: {task.description}; float32 forward on the first batch of {task.batch_size} vs the "
          f"float64 reference, then parameters after {args.steps} optimizer steps on the same batches.")
    print("Keras' Adam places epsilon differently from the spec's formula: Keras' parameters are compared with a "
          "float64 reference of Keras' formula.\n")
    print(render(rows, args.steps))
    print()
    print(headline("keras", rows))
    print(headline("xfbench", rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
