"""Nothing lost, second pass: resume, ``check``, ``report``, the outputs after a run and the store never destroy,
hide or misread a result. One test per way a result used to be lost or misstated."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import xfbench
from tests.conftest import REPO, small
from tests.test_interleaved import gone_within, wait_for_cells, worker_pids
from xfbench import cli
from xfbench.compare.protocol import TimingOptions
from xfbench.compare.results.ab import AbResult, Verdict
from xfbench.compare.results.cell import Cell, Device, StepStats, Timing, Turn
from xfbench.compare.results.files import partial_path
from xfbench.compare.results.journal import Journal
from xfbench.compare.results.result import Result
from xfbench.errors import XfbenchError
from xfbench.reports import plots

QUICK = TimingOptions.quick(rounds=3, processes=1)


def xfbench_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300,
                cwd: Path = REPO) -> subprocess.CompletedProcess:
    """``xfbench ARGS`` in a process; a test whose run keeps its result in the working folder passes its tmp_path."""
    env = {**(os.environ if env is None else env), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "xfbench", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``xfbench ARGS`` in this process: (exit code, stdout, stderr)."""
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def interrupted(path: Path, tasks: list[str]) -> None:
    """Leave at ``path`` what an interrupted run leaves: the partial file of a finished run's first task, no result."""
    result = xfbench.load(str(path))
    header = {key: value for key, value in result.to_dict().items() if key not in ("cells", "comparisons")}
    Journal(path, header, [cell.to_dict() for cell in result.cells if cell.task in tasks]).close()
    path.unlink()


def measured(task: str, backend: str, step: float) -> Cell:
    turns = [Turn(0, index, 0, 0.0, [step * (1 + 0.01 * (index % 3))]) for index in range(8)]
    return Cell(task, backend, Device("cpu", "x"), "ok", metrics={"accuracy": 0.9},
                timing=Timing(step_ms=StepStats(step, 0.01, step, 8), turns=turns))


# ------------------------------------------------------------------------------------------------ resume
@pytest.mark.processes
def test_resume_from_the_partial_file_writes_the_target(fakes, tmp_path: Path):
    """``--resume OUT.json.partial`` (the file an interrupted run names) finishes the run into ``OUT.json``."""
    path = tmp_path / "run.json"
    xfbench.run(tasks="regression,mlp", backends="fake-ref", epochs=1, threads=1, timing=QUICK, output=str(path))
    interrupted(path, ["regression"])
    done = xfbench_cli("run", "--resume", partial_path(path))
    assert done.returncode == 0, done.stderr
    assert "regression on fake-ref" not in done.stderr  # kept, not run again
    result = Result.load(path)
    assert result.complete and [cell.task for cell in result.cells] == ["regression", "mlp"]
    assert sorted(os.listdir(tmp_path)) == ["run.json"]  # no partial file, no partial of the partial


@pytest.mark.processes
def test_parity_judgements_survive_an_interrupted_resume(fakes, tmp_path: Path):
    """Ctrl-C of ``xfbench run --parity`` after the first task: the resumed run judges every cell as an uninterrupted
    run does (the kept cells pass as they would have, the resumed ones get their parity)."""
    args = ["run", "--parity", "--tasks", "regression,mlp", "--backends", "fake-ref,fake-crash", "--epochs", "2",
            "--rounds", "3", "--processes", "1", "--threads", "1"]
    whole = tmp_path / "whole.json"
    done = xfbench_cli(*args, "--json", str(whole))
    assert done.returncode == 0, done.stderr
    path = tmp_path / "run.json"
    process = subprocess.Popen([sys.executable, "-m", "xfbench", *args, "--json", str(path)], cwd=REPO,
                               env={**os.environ, "XFBENCH_FAKE_HANG_TASK": "mlp"}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        cells = wait_for_cells(path, 2, process)
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert gone_within(worker_pids(cells), 2.0)
    done = xfbench_cli("run", "--resume", str(path))
    assert done.returncode == 0, done.stderr
    resumed, expected = Result.load(path), Result.load(whole)
    assert "parity" in resumed.config
    for cell in resumed.cells:
        twin = expected.cell(cell.task, cell.backend)
        assert cell.parity is not None and cell.parity.passed is True, (cell.key, cell.parity)
        assert cell.parity.failures == [] and set(cell.parity.params_vs_backends) == set(twin.parity.params_vs_backends)
        for other, diffs in cell.parity.params_vs_backends.items():  # the same numbers as without the interruption
            assert {name: diff.rel for name, diff in diffs.items()} == pytest.approx(
                {name: diff.rel for name, diff in twin.parity.params_vs_backends[other].items()}, abs=1e-12)
    assert "pass" in done.stdout and "FAIL" not in done.stdout


@pytest.mark.processes
def test_resume_refuses_a_document_that_is_not_a_run(tmp_path: Path):
    path = tmp_path / "ab.json"
    AbResult(Result(), Result(), verdicts=[Verdict("mlp", "torch", "cpu", "no change", "")]).save(str(path))
    before = path.read_bytes()
    done = xfbench_cli("run", "--resume", str(path))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "is an xfbench ab comparison, not a run" in done.stderr
    assert path.read_bytes() == before


def test_a_new_run_will_not_drop_a_partial_file(tmp_path: Path):
    """A run whose output has an interrupted run's partial file beside it says so, and how to resume, before any
    work; the partial file stays."""
    path = tmp_path / "run.json"
    Journal(path, Result(config={"tasks": ["t"]}).to_dict(), [measured("t", "a", 1.0).to_dict()]).close()
    before = Path(partial_path(path)).read_bytes()
    with pytest.raises(XfbenchError, match=r"holds 1 finished cell of an interrupted run; finish it with: "
                                           r"xfbench run --resume .*run\.json"):
        xfbench.run(tasks=[small("t")], backends="torch", output=str(path))
    assert Path(partial_path(path)).read_bytes() == before


# ------------------------------------------------------------------------------------------------- check
def test_check_fails_when_baseline_cells_are_missing(tmp_path: Path, capsys):
    base, new = tmp_path / "base.json", tmp_path / "new.json"
    Result(cells=[measured("mlp", backend, 1.0) for backend in ("a", "b", "c")]).save(base)
    Result(cells=[measured("mlp", "a", 1.0)]).save(new)
    code, out, err = in_process(capsys, "check", str(new), "--baseline", str(base))
    assert code == 1
    assert "2 missing (mlp on b/cpu, mlp on c/cpu)" in out.splitlines()[0]
    assert "missing: mlp on b/cpu" in err
    code, out, _ = in_process(capsys, "check", str(new), "--baseline", str(base), "--allow-missing")
    assert code == 0 and "2 missing" in out  # still reported, no longer failing
    Result(cells=[]).save(new)
    code, _, err = in_process(capsys, "check", str(new), "--baseline", str(base))
    assert code == 2 and err.count("\n") == 1 and "has no cells: nothing was measured" in err


def test_check_fails_on_a_failed_cell(tmp_path: Path, capsys):
    base, new = tmp_path / "base.json", tmp_path / "new.json"
    Result(cells=[measured("mlp", "a", 1.0), Cell("mlp", "b", Device("cpu"), "error", error="boom")]).save(base)
    Result(cells=[measured("mlp", "a", 1.0), Cell("mlp", "b", Device("cpu"), "error", error="boom")]).save(new)
    code, out, _ = in_process(capsys, "check", str(new), "--baseline", str(base))
    assert code == 1 and "1 failed (mlp on b/cpu)" in out.splitlines()[0]


# ------------------------------------------------------------------------------------------------ report
def test_report_never_writes_over_its_input(tmp_path: Path, capsys):
    path = tmp_path / "r.json"
    Result(cells=[measured("mlp", "a", 1.0)]).save(path)
    before = path.read_bytes()
    (tmp_path / "link.json").symlink_to(path)
    for target in (str(path), str(tmp_path / "link.json"), os.path.relpath(path)):
        code, _, err = in_process(capsys, "report", str(path), "-o", target)
        assert code == 2 and "is the result being read" in err and err.count("\n") == 1, err
    assert path.read_bytes() == before


def test_report_reads_an_ab_document(tmp_path: Path, capsys):
    path = tmp_path / "ab.json"
    AbResult(Result(), Result(), config={"min_effect": 0.05, "alpha": 0.05},
             verdicts=[Verdict("mlp", "torch", "cpu", "regression", "+12.0%", 1.12, 1.08, 1.16)]).save(str(path))
    code, out, _ = in_process(capsys, "report", str(path))
    assert code == 0 and "xfbench ab: 1 regression (mlp on torch/cpu)" in out
    code, out, _ = in_process(capsys, "report", str(path), "--format", "md")
    assert code == 0 and "### xfbench ab: 1 regression" in out
    code, _, err = in_process(capsys, "report", str(path), "--format", "csv")
    assert code == 2 and "an xfbench ab comparison renders as text or md" in err


def test_report_takes_the_format_from_the_name_only_when_it_can(tmp_path: Path, capsys):
    path = tmp_path / "r.json"
    Result(cells=[measured("mlp", "a", 1.0)]).save(path)
    code, _, err = in_process(capsys, "report", str(path), "-o", str(tmp_path / "out.pdf"))
    assert code == 2 and "cannot tell the format from 'out.pdf'" in err and "--format" in err
    assert not (tmp_path / "out.pdf").exists()
    code, _, _ = in_process(capsys, "report", str(path), "-o", str(tmp_path / "out.pdf"), "--format", "md")
    assert code == 0 and (tmp_path / "out.pdf").read_text().startswith("## xfbench results")


def test_names_are_literal_text_in_charts():
    """A task named like matplotlib mathtext (and not valid math) renders as the text it is, in the HTML report and
    the notebook view, instead of failing both."""
    name = r"a$\frac{$b"
    result = Result(cells=[measured(name, backend, step) for backend, step in (("u$", 1.0), ("v", 2.0))])
    result.compare()
    page = xfbench.reports.render(result, "html")
    assert f'aria-label="Step time: {name} on cpu (x) (lower is better)"' in page
    assert f">{name} on cpu (x)" in page  # drawn as text (the SVG keeps text as text)
    figures = result.plot()
    assert len(figures) == 3 and all(plots.svg(figure) for figure in figures)
    assert "<table" in result._repr_html_()


def test_the_text_table_shows_control_characters_escaped():
    result = Result(cells=[measured("evil\x1b[2Jtask\rx", "a", 1.0)])
    text = xfbench.table(result)
    assert "\x1b" not in text and "\r" not in text and "evil\\x1b[2Jtask\\rx" in text


# ---------------------------------------------------------------------------------- outputs after the run
@pytest.mark.processes
def test_an_unwritable_report_after_the_run_keeps_the_result(fakes, tmp_path: Path):
    """A --md path that passes the up-front check (root may write under /proc) but cannot be written when the run
    ends: the table is printed, the failure is one line naming the file, the other outputs are written and the
    result is kept even without --json."""
    md, html = "/proc/xfbench-not-creatable/summary.md", tmp_path / "report.html"
    done = xfbench_cli("run", "--tasks", "regression", "--backends", "fake-ref", "--epochs", "1", "--rounds", "2",
                       "--processes", "1", "--threads", "1", "--md", md, "--html", str(html), cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "regression on cpu" in done.stdout  # the table, printed first
    assert f"xfbench: error: cannot write the md report {md!r}" in done.stderr
    assert html.exists()
    kept = done.stderr.split("the result is kept in ", 1)[1].split()[0]
    assert Path(kept).parent == tmp_path  # the working folder
    assert Result.load(kept).cells[0].ok


@pytest.mark.processes
def test_a_store_locked_past_the_wait_keeps_the_run(fakes, tmp_path: Path):
    store, out, hold = tmp_path / "s.sqlite", tmp_path / "run.json", tmp_path / "hold"
    hold.touch()
    env = {**os.environ, "XFBENCH_FAKE_HOLD_FILE": str(hold), "XFBENCH_FAKE_HOLD_TASK": "regression",
           "XFBENCH_STORE_WAIT": "1.5"}
    process = subprocess.Popen([sys.executable, "-m", "xfbench", "run", "--tasks", "regression", "--backends", "fake-crash",
                                "--epochs", "1", "--rounds", "2", "--processes", "1", "--threads", "1", "--json",
                                str(out), "--save", "--store", str(store)],
                               cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not store.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    locker = sqlite3.connect(store, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    hold.unlink()
    stdout, stderr = process.communicate(timeout=120)
    locker.execute("ROLLBACK")
    locker.close()
    assert process.returncode == 1, stderr
    assert "regression on cpu" in stdout
    assert f"the store {str(store)!r} is locked by another process (waited 1.5 s)" in stderr
    assert Result.load(out).complete


# --------------------------------------------------------------------------------- one line, not a traceback
@pytest.mark.parametrize(("document", "message"), [
    ({"schema_version": 4, "config": {"targets": "x"}, "cells": []}, "config.targets must be an object"),
    ({"schema_version": 4, "config": {"tasks": [1]}, "cells": []}, "config.tasks must be a list of strings"),
    ({"schema_version": 4, "config": {"timing": {"rounds": "many"}}, "cells": []}, "config.timing.rounds"),
])
def test_wrong_types_in_config_are_one_line(tmp_path: Path, capsys, document: dict, message: str):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(document))
    code, _, err = in_process(capsys, "report", str(path))
    assert code == 2 and message in err and err.count("\n") == 1, err


@pytest.mark.parametrize(("text", "message"), [
    ("[" * 100_000, "is nested too deeply"),
    ('{"schema_version": 4, "created": ' + "9" * 5000 + "}", "holds a number too large"),
    ('{"schema_version": 4, "cells": [{"task": "t", "backend": "b", "device": {"kind": "cpu"}, "status": "ok", '
     '"timing": {"turns": [{"process": 0, "round": 0, "position": 0, "start_s": 0, "block_ms": [Infinity]}]}}]}',
     "block_ms must be a list of positive numbers"),
])
def test_pathological_json_is_one_line(tmp_path: Path, capsys, text: str, message: str):
    path = tmp_path / "r.json"
    path.write_text(text)
    code, _, err = in_process(capsys, "report", str(path))
    assert code == 2 and message in err and err.count("\n") == 1, err


@pytest.mark.processes
def test_an_output_path_that_is_not_utf8_works(fakes, tmp_path: Path):
    name = os.fsdecode(b"r\xff.json")
    done = subprocess.run([sys.executable, "-m", "xfbench", "run", "--tasks", "regression", "--backends", "fake-ref",
                           "--epochs", "1", "--rounds", "2", "--processes", "1", "--threads", "1", "--json",
                           os.fsencode(str(tmp_path / name))], cwd=REPO, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert (tmp_path / name).exists() and b"Traceback" not in done.stderr


def test_a_task_too_large_to_allocate_is_one_line():
    with pytest.raises(XfbenchError, match=r"cnn28 with num_samples=1000000000000 needs more memory than"):
        xfbench.tasks.get_task("cnn28", num_samples=10**12)


@pytest.mark.processes
def test_a_sweep_too_large_to_allocate_is_one_line():
    done = xfbench_cli("sweep", "--task", "cnn28", "--param", "num_samples=1000,1000000000000", "--backends", "torch")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "needs more memory than" in done.stderr


# -------------------------------------------------------------------------------------------------- smaller
def test_an_error_about_the_partial_file_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def full(source: str, target: str) -> None:
        raise OSError(28, "No space left on device", source, None, target)

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError) as caught:
        Journal(tmp_path / "run.json", {})
    assert caught.value.filename == partial_path(tmp_path / "run.json")


def test_a_malformed_slowdown_variable_is_named(monkeypatch: pytest.MonkeyPatch):
    from xfbench.compare.engine.timing import injected_slowdown

    monkeypatch.setenv("XFBENCH_TEST_SLOWDOWN", "lots")
    with pytest.raises(XfbenchError, match=r"XFBENCH_TEST_SLOWDOWN='lots'"):
        injected_slowdown("torch")


def test_a_malformed_store_wait_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from xfbench.compare.results.store import Store

    monkeypatch.setenv("XFBENCH_STORE_WAIT", "soon")
    with pytest.raises(XfbenchError, match=r"XFBENCH_STORE_WAIT='soon' must be a number of seconds"):
        Store(str(tmp_path / "s.sqlite"))
