"""Parity's judgement: does every backend compute the same function? Pure functions of the measured differences.

With identical initial weights (``initial_weights``) and identical batches (``Task.epoch_order``), each worker
measures (``compare.engine.parity``): forward outputs on the first training batch against the float64 reference
(max abs, max relative, relative in norm), loss and gradients per tensor, and its parameters after K optimizer
steps. Here, in the parent (:func:`judge`): those parameters against the float64 reference of the backend's
optimizer formula and between every pair of backends, and pass/fail against :class:`ParityOptions`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from xfbench.compare.results.cell import Cell, Parity, TensorDiff
from xfbench.compare.results.result import Result
from xfbench.tasks import initial_weights, reference
from xfbench.tasks.spec import Task


@dataclass(frozen=True)
class ParityOptions:
    """The float32 tolerances a cell must meet, and K (optimizer steps before comparing parameters)."""

    steps: int = 10
    forward_abs: float = 1e-5      # max |output - float64 reference|
    loss_rel: float = 1e-5         # |loss - reference| / |reference|
    grad_rel: float = 1e-4         # per tensor, ||g - g_ref|| / ||g_ref||
    param_rel: float = 1e-4        # per tensor after K steps, vs reference and between backends

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def relative(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖ / ‖b‖ (0 when both are zero).

    Example:
        >>> relative(np.array([1.0, 2.0]), np.array([1.0, 2.0]))
        0.0
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.linalg.norm(b)
    diff = np.linalg.norm(a - b)
    return float(diff / scale) if scale > 0 else float(diff)


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    """The element-wise maximum of |a - b| (0 for empty arrays)."""
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) if np.size(a) else 0.0


def tensor_diffs(values: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, TensorDiff]:
    """Per tensor of ``ref``: the relative difference in norm and the max abs difference of ``values``'."""
    return {name: TensorDiff(relative(values[name], ref[name]), max_abs(values[name], ref[name])) for name in ref}


def judge(result: Result, tasks: dict[str, Task], options: ParityOptions) -> None:
    """Parent half: compare parameters after K steps with the reference and between backends; set pass/fail.

    Fills ``cell.parity`` of every ok cell that has worker parity data (the raw weights are dropped). A cell whose
    weights were not kept (read from the partial file of an older xfbench) cannot be judged and fails, saying so.
    """
    groups: dict[tuple[str, str], list[Cell]] = {}
    for cell in result.cells:
        if not cell.ok or cell.parity is None:
            continue
        if cell.parity.weights_after_steps is not None:
            groups.setdefault((cell.task, cell.device.kind), []).append(cell)
        elif cell.parity.passed is None:
            cell.parity.failures = [f"its parameters after {cell.parity.steps} steps were not kept (the partial file "
                                    "of an older xfbench), so it cannot be judged; run it again"]
            cell.parity.passed = False
    for (task_name, _), cells in groups.items():
        task = tasks[task_name]
        formulas = {cell.backend: cell.parity.optimizer_formula for cell in cells}  # type: ignore[union-attr]
        # each formula's reference once; the spec's too when another is present (its measured effect is shown)
        refs = {formula: reference.optimizer_steps(task, initial_weights(task),
                                                   reference.task_batches(task, options.steps), options.steps,
                                                   formula=formula)
                for formula in sorted(set(formulas.values()) | ({"spec"} if set(formulas.values()) - {"spec"}
                                                                else set()))}
        params = {}
        for cell in cells:
            assert cell.parity is not None and cell.parity.weights_after_steps is not None
            params[cell.backend] = {name: np.asarray(value, np.float32)
                                    for name, value in cell.parity.weights_after_steps.items()}
            cell.parity.weights_after_steps = None
        for cell in cells:
            parity = cell.parity
            assert parity is not None
            parity.params_vs_reference = tensor_diffs(params[cell.backend], refs[parity.optimizer_formula])
            if parity.optimizer_formula != "spec":  # the measured effect of the formula, beside the judged numbers
                parity.params_vs_spec_reference = tensor_diffs(params[cell.backend], refs["spec"])
            parity.formulas = dict(formulas)
            parity.params_vs_backends = {
                other: tensor_diffs(params[cell.backend], params[other]) for other in params if other != cell.backend
            }
            parity.tolerances = options.as_dict()
        # A backend that fails against the reference must not fail the correct ones: divergence between backends
        # counts only against backends that pass their own reference checks.
        trusted = {cell.backend for cell in cells if not failures(cell.parity, options, trusted=set())}  # type: ignore[arg-type]
        for cell in cells:
            assert cell.parity is not None
            cell.parity.failures = failures(cell.parity, options, trusted=trusted)
            cell.parity.passed = not cell.parity.failures


def _worst(diffs: dict[str, TensorDiff]) -> tuple[str, float]:
    name = max(diffs, key=lambda key: diffs[key].rel)
    return name, diffs[name].rel


def failures(parity: Parity, options: ParityOptions, trusted: set[str] | None = None) -> list[str]:
    """Readable lines, one per measure over its tolerance, naming the tensor (layer index, type, tensor).

    ``trusted``: the backends whose divergence from this one counts (those that pass against the reference);
    None counts every backend.
    """
    lines = []
    if parity.forward_max_abs > options.forward_abs:
        lines.append(f"forward output max abs diff {parity.forward_max_abs:.3g} > {options.forward_abs:g}")
    if parity.loss_rel > options.loss_rel:
        lines.append(f"loss rel diff {parity.loss_rel:.3g} > {options.loss_rel:g}")
    for name, diff in parity.grads.items():
        if diff.rel > options.grad_rel:
            lines.append(f"gradient of {name}: rel diff {diff.rel:.3g} > {options.grad_rel:g}"
                         f" (max abs {diff.max_abs:.3g})")
    for name, diff in parity.params_vs_reference.items():
        if diff.rel > options.param_rel:
            lines.append(f"{name} after {parity.steps} steps vs reference: rel diff {diff.rel:.3g}"
                         f" > {options.param_rel:g}")
    for other, diffs in parity.params_vs_backends.items():
        if trusted is not None and other not in trusted:
            continue
        if parity.formulas.get(other, "spec") != parity.optimizer_formula:
            continue  # another optimizer formula: the divergence is shown, each is judged against its own reference
        for name, diff in diffs.items():
            if diff.rel > options.param_rel:
                lines.append(f"{name} after {parity.steps} steps vs {other}: rel diff {diff.rel:.3g}"
                             f" > {options.param_rel:g}")
    return lines


def summary(parity: Parity) -> dict[str, Any]:
    """The headline numbers of a cell's parity, for tables. "Between backends" counts the backends that follow the
    same optimizer formula; ``params_vs_spec_rel`` is the distance of another formula from the spec's reference."""
    grad_name, grad_rel = _worst(parity.grads)
    out: dict[str, Any] = {"forward_max_abs": parity.forward_max_abs, "forward_rel": parity.forward_rel,
                           "loss_rel": parity.loss_rel, "grad_rel": grad_rel, "grad_tensor": grad_name,
                           "optimizer_formula": parity.optimizer_formula}
    if parity.params_vs_reference:
        out["params_vs_reference_rel"] = _worst(parity.params_vs_reference)[1]
    out["params_vs_spec_rel"] = _worst(parity.params_vs_spec_reference)[1] if parity.params_vs_spec_reference else None
    between = [diff for other, diffs in parity.params_vs_backends.items()
               if parity.formulas.get(other, "spec") == parity.optimizer_formula for diff in diffs.values()]
    out["params_vs_backends_rel"] = max((diff.rel for diff in between), default=None)
    out["params_vs_backends_max_abs"] = max((diff.max_abs for diff in between), default=None)
    return out


def parity_failed(result: Result) -> bool:
    """True when a cell errored or failed its parity tolerances (``xfbench parity``'s exit code 1)."""
    return any(cell.failed or (cell.ok and not (cell.parity and cell.parity.passed))
               for cell in result.cells)
