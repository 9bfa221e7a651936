"""Every loader of user files answers malformed content with one line, never a traceback: mutated real documents
(wrong types at every path, keys removed, deep nesting, huge numbers, truncation, control characters) fed to the
result loader, the partial-file reader, the ``ab`` loader and the store; whatever loads also renders."""

from __future__ import annotations

import copy
import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xfbench import cli, reports
from xfbench.compare.results.ab import AbResult, Verdict
from xfbench.compare.results.cell import (
    Cell,
    Device,
    EpochPoint,
    Memory,
    Node,
    Parity,
    ProcessPhases,
    StepStats,
    TensorDiff,
    Timing,
    Turn,
)
from xfbench.compare.results.journal import Journal
from xfbench.compare.results.result import Result
from xfbench.compare.results.store import Store
from xfbench.compare.stats.ratios import compare_result
from xfbench.errors import XfbenchError
from xfbench.reports.gate import render_ab

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                            HealthCheck.too_slow])


def a_result() -> Result:
    """A result with every part a reader touches: turns, processes, a curve, parity, a node, comparisons, targets."""
    cells = []
    for backend, step in (("torch", 1.0), ("jax", 0.5)):
        turns = [Turn(process, index, index % 2, 0.1 * index, [step * (1 + 0.02 * (index % 3))])
                 for process in (0, 1) for index in range(4)]
        cells.append(Cell("mlp", backend, Device("cpu", "EPYC"), "ok", task_hash="abc", versions={"numpy": "2"},
                          threads=2, fingerprint={"dtype": "float32"}, metrics={"accuracy": 0.97, "loss": 0.1},
                          curve=[EpochPoint(1, 0.5, 0.3, {"accuracy": 0.9}), EpochPoint(2, 1.0, 0.2, {"accuracy": 0.97})],
                          timing=Timing(import_s=1.0, build_s=0.1, first_step_s=0.2, train_s=1.0, eval_s=0.1,
                                        step_ms=StepStats(step, 0.1, step, 8), samples_per_s=1000.0, block_steps=10,
                                        session="s", protocol={"schedule": "interleaved"},
                                        processes=[ProcessPhases(0, 10, 1.0), ProcessPhases(1, 11, 1.0)], turns=turns),
                          memory=Memory(300.0),
                          parity=Parity(1e-6, 1e-6, 1e-6, 1e-7, 1e-7, {"0.Dense.kernel": TensorDiff(1e-6, 1e-6)}, 10,
                                        passed=True),
                          node=Node("abcdef12", "host", cpu="EPYC", cores=2, labels={"kind": "zen4"})))
    cells.append(Cell("mlp", "tf-eager", Device("cpu"), "error", error="boom"))
    result = Result(cells=cells, config={"tasks": ["mlp"], "task_descriptions": {"mlp": "an MLP"}, "threads": 2,
                                         "targets": {"mlp": {"metric": "accuracy", "value": 0.95}}, "seeds": 1,
                                         "timing": {"rounds": 4, "schedule": "interleaved"}, "task_hashes": {"mlp": "abc"},
                                         "parity": {"steps": 10, "forward_abs": 1e-5}})
    compare_result(result)
    return result


HOSTILE = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30), st.just(10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30), st.just("\x00\x1b[2J\r"),
    st.just("$\\frac{$"), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(),
                                                                               max_size=3),
    st.just([[[[[[[[[[[]]]]]]]]]]]), st.just({"a": {"b": {"c": {"d": [None]}}}}),
)


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (keys and indices) into a JSON value."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, (*prefix, index))
    return found


class Mutation:
    """One hostile change to a document, applied to its JSON; shown short when hypothesis reports a failure."""

    def __init__(self, kind: str, path: tuple = (), value: Any = None, at: int = 0, text: str = "") -> None:
        self.kind, self.path, self.value, self.at, self.text = kind, path, value, at, text

    def __repr__(self) -> str:
        shown = repr(self.value)
        return f"Mutation({self.kind!r}, path={self.path!r}, value={shown[:60]}{'...' if len(shown) > 60 else ''}, " \
               f"at={self.at}, text={self.text!r})"

    def apply(self, document: dict) -> str:
        text = json.dumps(document)
        if self.kind == "truncate":
            return text[:self.at % len(text)]
        if self.kind == "control":
            at = self.at % (len(text) + 1)
            return text[:at] + self.text + text[at:]
        if self.kind == "deep":
            return "[" * self.at + text + "]" * self.at
        changed = copy.deepcopy(document)
        parent = changed
        for key in self.path[:-1]:
            parent = parent[key]
        if self.kind == "delete" and isinstance(parent, dict):
            del parent[self.path[-1]]
        else:
            parent[self.path[-1]] = self.value
        return json.dumps(changed, allow_nan=True, default=str)


@st.composite
def mutations(draw: st.DrawFn, document: dict) -> Mutation:
    """A hostile change to ``document``: a value of another type at any path, a key removed, the text cut short,
    a control character inserted, the whole nested deep."""
    kind = draw(st.sampled_from(["replace", "replace", "replace", "delete", "truncate", "control", "deep"]))
    if kind in ("replace", "delete"):
        return Mutation(kind, draw(st.sampled_from(paths(document)[1:])), draw(HOSTILE) if kind == "replace" else None)
    if kind == "deep":
        return Mutation(kind, at=draw(st.sampled_from([100, 5000, 50_000])))
    return Mutation(kind, at=draw(st.integers(0, 10**6)),
                    text=draw(st.sampled_from(["\x00", "\x1b", "\r", "\udcff", "\u2028"])) if kind == "control" else "")


def write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8", errors="surrogatepass")


def one_line(error: Exception) -> bool:
    return bool(str(error)) and "\n" not in str(error)


def loads_or_says_why(load: Any, path: Path) -> Any:
    try:
        return load(path)
    except XfbenchError as error:
        assert one_line(error), str(error)
        return None


RESULT = a_result().to_dict()
AB = AbResult(a_result(), a_result(), config={"min_effect": 0.05, "alpha": 0.05, "pairs": 6,
                                              "timing": {"rounds": 30, "turn_s": 0.1}},
              arms={"base": {"python": "/b", "xfbench": "0.1.0"}, "head": {"python": "/h"}},
              verdicts=[Verdict("mlp", "torch", "cpu", "regression", "+12%", 1.12, 1.08, 1.16, 0.01, 6, 1.0, 1.1,
                                [1.1] * 6)]).to_dict()
HEADER = {key: value for key, value in RESULT.items() if key not in ("cells", "comparisons")}
LINE = {"kind": "cell", "cell": RESULT["cells"][0]}


@SETTINGS
@given(mutation=mutations(RESULT))
def test_a_mutated_result_loads_or_says_why_in_one_line(tmp_path: Path, mutation: Mutation) -> None:
    path = tmp_path / "r.json"
    write(path, mutation.apply(RESULT))
    result = loads_or_says_why(Result.load, path)
    if result is not None:
        for fmt in ("text", "md", "csv"):
            assert reports.render(result, fmt)
        compare_result(result)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutation=mutations(RESULT))
def test_a_mutated_result_renders_as_html_or_says_why(tmp_path: Path, mutation: Mutation) -> None:
    path = tmp_path / "r.json"
    write(path, mutation.apply(RESULT))
    result = loads_or_says_why(Result.load, path)
    if result is not None:
        assert reports.render(result, "html").startswith("<!DOCTYPE html>")


@SETTINGS
@given(mutation=mutations(AB))
def test_a_mutated_ab_document_loads_or_says_why_in_one_line(tmp_path: Path, mutation: Mutation) -> None:
    path = tmp_path / "ab.json"
    write(path, mutation.apply(AB))
    outcome = loads_or_says_why(AbResult.load, path)
    if outcome is not None:
        assert render_ab(outcome) and render_ab(outcome, "md")
        assert outcome.exit_code in (0, 1)


@SETTINGS
@given(header=mutations(HEADER), line=mutations(LINE), cut=st.integers(0, 200))
def test_a_mutated_partial_file_loads_or_says_why_in_one_line(tmp_path: Path, header: Mutation, line: Mutation,
                                                              cut: int) -> None:
    target = tmp_path / "run.json"
    Journal(target, HEADER, [RESULT["cells"][1]]).close()
    partial = Path(f"{target}.partial")
    lines = partial.read_text(encoding="utf-8").splitlines()
    last = line.apply(LINE)
    write(partial, "\n".join([header.apply({"kind": "header", **HEADER}), *lines[1:], last[:len(last) - cut]]) + "\n")
    result = loads_or_says_why(Result.load, target)
    if result is not None:
        assert result.complete is False and reports.render(result, "text")


@SETTINGS
@given(mutation=mutations(RESULT))
def test_a_mutated_run_in_the_store_loads_or_says_why_in_one_line(tmp_path: Path, mutation: Mutation) -> None:
    text = mutation.apply(RESULT)
    path = tmp_path / f"s-{uuid.uuid4().hex}.sqlite"  # hypothesis runs every example in the same tmp_path
    with Store(str(path)) as store:
        run_id = store.save(a_result(), provenance={})
    connection = sqlite3.connect(path)
    connection.execute("UPDATE runs SET document = ? WHERE id = ?", (text.encode("utf-8", "surrogatepass").decode(
        "utf-8", "replace"), run_id))
    connection.commit()
    connection.close()
    with Store(str(path)) as store:
        loads_or_says_why(store.load, run_id)
        assert len(store.history()) == 3  # the cells table is independent of the document


@pytest.mark.parametrize("garbage", [b"", b"not a database at all" * 100, b"SQLite format 3\x00" + b"\xff" * 4096])
def test_a_file_that_is_not_a_store_is_one_line(tmp_path: Path, garbage: bytes) -> None:
    path = tmp_path / "s.sqlite"
    path.write_bytes(garbage)
    try:
        with Store(str(path)) as store:
            store.runs()
    except XfbenchError as error:
        assert one_line(error)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.one_of(mutations(RESULT).map(lambda change: ("result", change)),
                      mutations(AB).map(lambda change: ("ab", change))))
def test_report_on_a_mutated_document_is_a_report_or_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              case: tuple[str, Mutation]) -> None:
    path = tmp_path / "doc.json"
    kind, mutation = case
    write(path, mutation.apply(AB if kind == "ab" else RESULT))
    code = cli.main(["report", str(path)])
    out, err = capsys.readouterr()
    assert (code == 0 and out) or (code == 2 and err.count("\n") == 1 and "Traceback" not in err), (code, err)
