"""The parity table: per task, each backend's optimizer formula, its distance from the float64 reference and from
the other backends of the same formula.

Reads only the Result (cells with ``parity`` filled by ``compare.stats.parity.judge``).
"""

from __future__ import annotations

from xfbench.compare.results.result import Result
from xfbench.compare.stats.parity import summary
from xfbench.reports.table import grid, printable


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2g}"


def render(result: Result, fmt: str = "simple") -> str:
    """One table per task plus the failure lines (which tensor, which measure, by how much)."""
    blocks = []
    tasks = list(dict.fromkeys(cell.task for cell in result.cells))
    tolerances = result.config.get("parity", {})
    for task in tasks:
        rows, problems = [], []
        for cell in (cell for cell in result.cells if cell.task == task):
            if not cell.ok or not cell.parity:
                rows.append([cell.backend] + ["-"] * 8 + [f"{cell.status}: {cell.error}"])
                continue
            numbers = summary(cell.parity)
            verdict = "pass" if cell.parity.passed else "FAIL"
            formula = numbers["optimizer_formula"]
            if numbers["params_vs_spec_rel"] is not None:
                formula += f" ({_num(numbers['params_vs_spec_rel'])} from spec ref)"
            rows.append([
                cell.backend, formula, _num(numbers["forward_max_abs"]), _num(numbers["forward_rel"]), _num(numbers["loss_rel"]),
                f"{_num(numbers['grad_rel'])} ({numbers['grad_tensor']})", _num(numbers.get("params_vs_reference_rel")),
                _num(numbers["params_vs_backends_rel"]), _num(numbers["params_vs_backends_max_abs"]), verdict,
            ])
            problems += [f"  {cell.backend}: {line}" for line in cell.parity.failures]
        headers = ["backend", "optimizer formula", "fwd max abs", "fwd rel", "loss rel", "worst grad rel (tensor)",
                   f"params rel vs ref ({tolerances.get('steps', 'K')} steps)", "params rel vs backends*",
                   "params max abs vs backends*", "verdict"]
        text = f"{printable(task)}\n" + grid(rows, headers, fmt)
        if problems:
            text += "\nfailures:\n" + "\n".join(printable(line) for line in problems)
        blocks.append(text)
    if any(cell.parity and cell.parity.optimizer_formula != "spec" for cell in result.cells):
        blocks.append("* between backends of the same optimizer formula. A backend of another formula (keras: Adam's "
                      "epsilon before the bias correction, in float32) is judged against a reference of its own "
                      "formula; its distance from the spec's reference is shown beside the formula.")
    if tolerances:
        blocks.append("tolerances: forward max abs {forward_abs:g}, loss rel {loss_rel:g}, gradient rel {grad_rel:g}, "
                      "parameters rel {param_rel:g} (relative = ||a - b|| / ||b|| per tensor)".format(**tolerances))
    return "\n\n".join(blocks)
