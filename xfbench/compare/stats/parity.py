"""Parity's judgement: does every backend compute the same function? Pure functions of the measured differences.

With identical initial weights (``initial_weights``) and identical batches (``Task.epoch_order``), each worker
measures (``compare.engine.parity``): forward outputs on the first training batch against the float64 reference
(max abs, max relative, relative in norm), loss and gradients per tensor, and its parameters after K optimizer
steps. Here, in the parent (:func:`judge`): those parameters against the float64 reference of the backend's
optimizer formula and between every pair of backends, and pass/fail against :class:`ParityOptions`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from xfbench.compare.results.cell import Cell, Parity, TensorDiff
from xfbench.compare.results.result import Result
from xfbench.tasks import initial_weights, reference
from xfbench.tasks.spec import Task


@dataclass(frozen=True)
class ParityOptions:
    """The float32 tolerances a cell must meet, and K (optimizer steps before comparing parameters).

    A tensor's limit is the larger of its fixed tolerance and ``float32_factor`` times the float32 reference's own
    distance from float64 for that tensor (``TensorDiff.float32_rel``): where the formulas themselves lose digits
    in float32 (a BatchNorm'd ResNet's gradients at initialization lose ~3), no float32 backend can be closer, and
    the limit says how much worse than a plain float32 evaluation a backend may be. Between two backends that part
    of the limit is doubled (each may sit on either side of the reference)."""

    steps: int = 10
    forward_abs: float = 1e-5      # max |output - float64 reference|
    loss_rel: float = 1e-5         # |loss - reference| / |reference|
    grad_rel: float = 1e-4         # per tensor, ||g - g_ref|| / ||g_ref||
    param_rel: float = 1e-4        # per tensor after K steps, vs reference and between backends
    eval_rel: float = 1e-4         # evaluation outputs after K steps vs the reference's, relative in norm
    float32_factor: float = 10.0   # limit >= this x the float32 reference's own distance from float64
    float32_orders: int = 3        # float32 references, each summing the batch rows in another order; the worst counts

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


def tensor_diffs(values: dict[str, np.ndarray], ref: dict[str, np.ndarray],
                 ref32: dict[str, np.ndarray] | list[dict[str, np.ndarray]] | None = None) -> dict[str, TensorDiff]:
    """Per tensor of ``ref``: the relative difference in norm and the max abs difference of ``values``', and (with
    ``ref32``, the reference evaluated in float32, or a list of such evaluations) the float32 reference's own
    relative difference (the largest of the list's)."""
    refs32 = [] if ref32 is None else [ref32] if isinstance(ref32, dict) else list(ref32)
    return {name: TensorDiff(relative(values[name], ref[name]), max_abs(values[name], ref[name]),
                             max(relative(r[name], ref[name]) for r in refs32) if refs32 else None)
            for name in ref}


def _rows_reordered(batches: Iterator[tuple[np.ndarray, np.ndarray]], seed: int
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The same batches with each batch's rows in another order (seed 0: unchanged). The training step is the same
    function of the batch in exact arithmetic (means over rows, BatchNorm's statistics); in float32 the sums run
    in another order, so the spread over orders is how far float32 rounding alone can move a result."""
    rng = np.random.default_rng(seed)
    for x, y in batches:
        order = np.arange(len(x)) if seed == 0 else rng.permutation(len(x))
        yield x[order], y[order]


def limit(tolerance: float, diff: TensorDiff, options: ParityOptions, between: bool = False) -> float:
    """The limit of one tensor's relative difference: the fixed ``tolerance``, or ``float32_factor`` times what the
    float32 reference loses on that tensor if more (that part doubled ``between`` two backends, each of which may
    sit on either side of the reference).

    Example:
        >>> limit(1e-4, TensorDiff(3e-4, 1e-6, 2e-4), ParityOptions()), limit(1e-4, TensorDiff(0, 0, 1e-8), ParityOptions())
        (0.002, 0.0001)
    """
    scaled = options.float32_factor * (diff.float32_rel or 0.0)
    return max(tolerance, 2 * scaled if between else scaled)


def reference_steps(task: Task, options: ParityOptions, formula: str = "spec"
                    ) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    """The reference's parameters after ``options.steps`` steps in float64, and in float32 with each batch's rows
    in ``options.float32_orders`` orders (the first unchanged): what float32 rounding alone does to them. One order
    alone understates it (on a tiny BatchNorm'd ResNet by 1.6-12x, docs/parity.md)."""
    def run(dtype: type, seed: int) -> dict[str, np.ndarray]:
        return reference.optimizer_steps(task, initial_weights(task),
                                         _rows_reordered(reference.task_batches(task, options.steps), seed),
                                         options.steps, formula=formula, dtype=dtype)
    return run(np.float64, 0), [run(np.float32, seed) for seed in range(max(1, options.float32_orders))]


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
        wanted = sorted(set(formulas.values()) | ({"spec"} if set(formulas.values()) - {"spec"} else set()))
        refs, refs32 = {}, {}
        for formula in wanted:
            refs[formula], refs32[formula] = reference_steps(task, options, formula)
        x = task.data.x_train[task.epoch_order(0)[0]]
        evals = {}  # formula -> (the float64 reference's evaluation outputs, the float32 references' worst distance)
        for formula in wanted:
            out64 = reference.forward(task, refs[formula], x)
            evals[formula] = (out64, max(relative(reference.forward(task, r32, x, dtype=np.float32), out64)
                                         for r32 in refs32[formula]))
        params, outputs = {}, {}
        for cell in cells:
            assert cell.parity is not None and cell.parity.weights_after_steps is not None
            params[cell.backend] = {name: np.asarray(value, np.float32)
                                    for name, value in cell.parity.weights_after_steps.items()}
            cell.parity.weights_after_steps = None
            if cell.parity.outputs_after_steps is not None:
                outputs[cell.backend] = np.asarray(cell.parity.outputs_after_steps, np.float64)
            cell.parity.outputs_after_steps = None
        for cell in cells:
            parity = cell.parity
            assert parity is not None
            formula = parity.optimizer_formula
            parity.params_vs_reference = tensor_diffs(params[cell.backend], refs[formula], refs32[formula])
            if formula != "spec":  # the measured effect of the formula, beside the judged numbers
                parity.params_vs_spec_reference = tensor_diffs(params[cell.backend], refs["spec"])
            if cell.backend in outputs:
                ref_out, parity.eval_float32_rel = evals[formula]
                parity.eval_after_steps_rel = relative(outputs[cell.backend], ref_out)
            parity.formulas = dict(formulas)
            parity.params_vs_backends = {
                other: tensor_diffs(params[cell.backend], params[other], None) for other in params
                if other != cell.backend
            }
            for diffs in parity.params_vs_backends.values():  # the float32 scale of each tensor, from the spec
                for name, diff in diffs.items():
                    diff.float32_rel = parity.params_vs_reference[name].float32_rel
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
        if diff.rel > limit(options.grad_rel, diff, options):
            lines.append(f"gradient of {name}: rel diff {diff.rel:.3g} > {limit(options.grad_rel, diff, options):.3g}"
                         f" (max abs {diff.max_abs:.3g})")
    for name, diff in parity.params_vs_reference.items():
        if diff.rel > limit(options.param_rel, diff, options):
            lines.append(f"{name} after {parity.steps} steps vs reference: rel diff {diff.rel:.3g}"
                         f" > {limit(options.param_rel, diff, options):.3g}")
    if parity.eval_after_steps_rel is not None:
        eval_limit = max(options.eval_rel, options.float32_factor * (parity.eval_float32_rel or 0.0))
        if parity.eval_after_steps_rel > eval_limit:
            lines.append(f"evaluation outputs after {parity.steps} steps vs reference: rel diff "
                         f"{parity.eval_after_steps_rel:.3g} > {eval_limit:.3g}")
    for other, diffs in parity.params_vs_backends.items():
        if trusted is not None and other not in trusted:
            continue
        if parity.formulas.get(other, "spec") != parity.optimizer_formula:
            continue  # another optimizer formula: the divergence is shown, each is judged against its own reference
        for name, diff in diffs.items():
            if diff.rel > limit(options.param_rel, diff, options, between=True):
                lines.append(f"{name} after {parity.steps} steps vs {other}: rel diff {diff.rel:.3g}"
                             f" > {limit(options.param_rel, diff, options, between=True):.3g}")
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
