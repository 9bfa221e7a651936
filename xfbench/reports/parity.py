"""The parity table: per task, each backend's distance from the float64 reference and from the other backends.

Reads only the Result (cells with ``parity`` filled by ``compare.parity.finish``).
"""

from __future__ import annotations

from tabulate import tabulate

from xfbench.compare.parity import summary
from xfbench.compare.result import Result


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
                rows.append([cell.backend] + ["-"] * 7 + [f"{cell.status}: {cell.error}"])
                continue
            numbers = summary(cell.parity)
            verdict = "pass" if cell.parity.passed else "FAIL"
            rows.append([
                cell.backend, _num(numbers["forward_max_abs"]), _num(numbers["forward_rel"]), _num(numbers["loss_rel"]),
                f"{_num(numbers['grad_rel'])} ({numbers['grad_tensor']})", _num(numbers.get("params_vs_reference_rel")),
                _num(numbers["params_vs_backends_rel"]), _num(numbers["params_vs_backends_max_abs"]), verdict,
            ])
            problems += [f"  {cell.backend}: {line}" for line in cell.parity.failures]
        headers = ["backend", "fwd max abs", "fwd rel", "loss rel", "worst grad rel (tensor)",
                   f"params rel vs ref ({tolerances.get('steps', 'K')} steps)", "params rel vs backends",
                   "params max abs vs backends", "verdict"]
        text = f"{task}\n" + tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)
        if problems:
            text += "\nfailures:\n" + "\n".join(problems)
        blocks.append(text)
    if tolerances:
        blocks.append("tolerances: forward max abs {forward_abs:g}, loss rel {loss_rel:g}, gradient rel {grad_rel:g}, "
                      "parameters rel {param_rel:g} (relative = ||a - b|| / ||b|| per tensor)".format(**tolerances))
    return "\n\n".join(blocks)
