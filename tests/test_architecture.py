"""The layering of docs/architecture.md, enforced: no import cycle (lazy imports included), no arrow from a room to a
room above it, and framework knowledge only in ``xfbench/backends``."""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pytest

from tests.architecture import ALLOWED, ROOMS, arrows_up, cycles, graph, modules, room

REPO = Path(__file__).resolve().parent.parent


def test_the_package_has_no_cycle_and_no_arrow_up():
    edges = graph(REPO)
    assert len(edges) > 50  # the walk found the package
    assert cycles(edges) == []
    assert arrows_up(edges) == []


def test_every_module_is_in_a_room():
    for name in modules(REPO):
        assert room(name) in ALLOWED, name
    assert set(ROOMS.values()) == set(ALLOWED)


def test_lazy_imports_are_arrows_and_typing_only_ones_are_not(tmp_path: Path):
    package = tmp_path / "xfbench"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from xfbench import c\n"
                                  "def f():\n    from xfbench import b\n")
    (package / "b.py").write_text("import xfbench.a\n")
    (package / "c.py").write_text("")
    edges = graph(tmp_path)
    assert edges["xfbench.a"] == {"xfbench.b"} and cycles(edges) == [["xfbench.a", "xfbench.b"]]


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "xfbench", tmp_path / "xfbench", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _plant(root: Path, module: str, line: str) -> None:
    path = root / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text(encoding="utf-8") + f"\n\ndef _planted() -> None:\n    {line}\n", encoding="utf-8")


def test_a_planted_cycle_is_caught(tmp_path: Path):
    """Two plantings in a copy of the package, each a lazy import (the kind that hid the old circle): the journal
    reading the typed model it sits under (a cycle inside one room), and the atomic-file helpers reaching up into the
    session (a cycle and an arrow up)."""
    root = _copy(tmp_path)
    _plant(root, "xfbench.compare.results.journal", "from xfbench.compare.results.result import Result  # noqa")
    edges = graph(root)
    assert ["xfbench.compare.results.journal", "xfbench.compare.results.result"] in cycles(edges)
    assert arrows_up(edges) == []  # one room: only the cycle test sees it
    _plant(root, "xfbench.compare.results.files", "import xfbench.compare.session  # noqa")
    edges = graph(root)
    assert any("xfbench.compare.session" in cycle and "xfbench.compare.results.files" in cycle
               for cycle in cycles(edges))
    assert arrows_up(edges) == ["xfbench.compare.results.files (results) -> xfbench.compare.session (orchestration)"]


# ------------------------------------------------------------------------------ framework knowledge
REGISTERED = ("tf-graph", "tf-eager", "tf-xla", "torch-compile", "keras-jax", "keras-tensorflow", "keras-torch")
FRAMEWORKS = ("torch", "jax", "jaxlib", "tensorflow", "keras")
ENV_PREFIXES = ("TF_", "XLA_", "JAX_", "KERAS_", "ABSL_", "GRPC_", "TORCH")
# the name of an optimizer formula (Keras' Adam), recorded in results: the float64 reference implements each formula
NAMED_FORMULAS = {("xfbench.tasks.reference", "keras")}


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string constant of a module that is not a docstring, with its line."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def framework_strings(root: Path) -> list[str]:
    """Backend names, framework module names and framework environment variables in string literals outside
    ``xfbench/backends``."""
    found = []
    for name, path in modules(root).items():
        if room(name) == "backends":
            continue
        for line, text in _strings(ast.parse(path.read_text(encoding="utf-8"))):
            if (name, text) in NAMED_FORMULAS:
                continue
            if (any(re.search(rf"(?<![\w-]){re.escape(item)}(?![\w-])", text) for item in REGISTERED)
                    or text in FRAMEWORKS or text.startswith(ENV_PREFIXES)):
                found.append(f"{name}:{line}: {text[:60]!r}")
    return found


def test_framework_knowledge_lives_in_backends(tmp_path: Path):
    assert framework_strings(REPO) == []
    root = _copy(tmp_path)
    _plant(root, "xfbench.reports.plots", 'KNOWN = ("tf-graph", "torch")')
    _plant(root, "xfbench.compare.engine.server", 'QUIET = {"TF_CPP_MIN_LOG_LEVEL": "3"}')
    assert sorted({entry.split(":")[0] for entry in framework_strings(root)}) == ["xfbench.compare.engine.server",
                                                                                  "xfbench.reports.plots"]


@pytest.mark.parametrize("module", ["xfbench.compare.results.cell", "xfbench.compare.results.result"])
def test_the_model_imports_no_statistics_or_reports(module: str):
    assert {room(target) for target in graph(REPO)[module]} <= {"base", "results"}
