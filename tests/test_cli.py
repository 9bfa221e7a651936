"""The command line, in subprocesses: help, one-line errors with exit code 2, a real run, list."""

from __future__ import annotations

import pytest

from tests.conftest import ALL_BACKENDS, REPO, CliRun, run_cli
from xfbench import backends
from xfbench.compare.results.result import Ratio
from xfbench.reports.table import ratio_text


@pytest.mark.processes
@pytest.mark.parametrize("command", ["run", "parity", "list"])
def test_help(command: str):
    done = run_cli(command, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: xfbench {command}")
    assert done.stderr == ""


@pytest.mark.processes
def test_top_level_help():
    done = run_cli("--help")
    assert done.returncode == 0
    assert all(command in done.stdout for command in ("run", "parity", "list"))


@pytest.mark.processes
def test_no_command_prints_help_and_exits_2():
    done = run_cli()
    assert done.returncode == 2
    assert done.stdout.startswith("usage: xfbench")


BACKEND_ERROR = ("xfbench: error: unknown backend 'pytorch'; choose one of: jax, keras-jax, keras-tensorflow, keras-torch, "
                 "tf-eager, tf-graph, tf-xla, torch, torch-compile")


@pytest.mark.processes
@pytest.mark.parametrize(("args", "expected"), [
    pytest.param(["run", "--backends", "pytorch"], BACKEND_ERROR, id="run-backend"),
    pytest.param(["run", "--backends", "torch,pytorch"], BACKEND_ERROR, id="run-second-backend"),
    pytest.param(["run", "--devices", "tpu"], "xfbench: error: unknown device 'tpu'; choose one of: cpu, gpu",
                 id="run-device"),
    pytest.param(["run", "--tasks", "nope"],
                 "xfbench: error: unknown task 'nope'; choose one of: cnn, cnn28, mlp, mlp-binary, regression, resnet, "
                 "transformer",
                 id="run-task"),
    pytest.param(["run", "--threads", "0"], "xfbench: error: --threads must be a positive integer, got 0",
                 id="run-threads-0"),
    pytest.param(["run", "--threads", "x"],
                 "xfbench run: error: argument --threads: invalid int value: 'x' (see xfbench run --help)",
                 id="run-threads-x"),
    pytest.param(["run", "--epochs", "-1", "--tasks", "regression"],
                 "xfbench: error: --epochs must be a positive integer, got -1",
                 id="run-epochs"),
    pytest.param(["run", "--seeds", "0", "--tasks", "regression"],
                 "xfbench: error: --seeds must be a positive integer, got 0", id="run-seeds"),
    pytest.param(["run", "--timeout", "0", "--tasks", "regression"],
                 "xfbench: error: --timeout must be a positive number, got 0.0",
                 id="run-timeout"),
    pytest.param(["run", "--malloc", "jemalloc", "--tasks", "regression"],
                 "xfbench: error: unknown malloc policy 'jemalloc'; choose one of: steady, system", id="run-malloc"),
    pytest.param(["run", "--bogus"], "xfbench: error: unrecognized arguments: --bogus (see xfbench --help)",
                 id="run-unknown-flag"),
    pytest.param(["bench"], None, id="unknown-command"),
    pytest.param(["parity", "--backends", "pytorch"], BACKEND_ERROR, id="parity-backend"),
    pytest.param(["parity", "--steps", "0"], "xfbench: error: --steps must be a positive integer, got 0",
                 id="parity-steps"),
    pytest.param(["run", "--rounds", "0"], "xfbench: error: --rounds must be a positive integer, got 0", id="rounds"),
    pytest.param(["run", "--processes", "-2"], "xfbench: error: --processes must be a positive integer, got -2",
                 id="processes"),
    pytest.param(["run", "--turn-seconds", "nan"], "xfbench: error: --turn-seconds must be a positive number, got nan",
                 id="turn-seconds"),
    pytest.param(["run", "--order", "sideways"], "xfbench: error: unknown order 'sideways'; choose one of: rotate, "
                                                 "shuffle", id="order"),
    pytest.param(["run", "--backends", "torch,jax", "--relative-to", "tf-graph"],
                 "xfbench: error: --relative-to 'tf-graph' is not one of this run's backends; choose one of: torch, jax",
                 id="relative-to"),
    pytest.param(["run", "--json", "tests"], "xfbench: error: the output path 'tests' is a folder; give a file name "
                                             "inside it, e.g. 'tests/result.json'", id="json-folder"),
    pytest.param(["run", "--json", ""], "xfbench: error: the output path is empty; give a file name, e.g. --json "
                                        "results/run.json", id="json-empty"),
    pytest.param(["run", "--json", "README.md/x.json"], "xfbench: error: cannot write 'README.md/x.json': "
                 f"{str(REPO / 'README.md')!r} is a file, not a folder", id="json-under-a-file"),
    pytest.param(["run", "--resume", "no/such/run.json"], "xfbench: error: nothing to resume at 'no/such/run.json' "
                                                          "(no result and no no/such/run.json.partial)", id="resume-none"),
    pytest.param(["run", "--resume", "x.json", "--tasks", "mlp"], "xfbench: error: --resume takes its settings from "
                                                                   "the saved run; drop --tasks", id="resume-tasks"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], expected: str | None):
    done = run_cli(*args)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    if expected is None:
        assert lines[0].startswith("xfbench: error: argument COMMAND: invalid choice: 'bench'")
    else:
        assert lines[0] == expected


def test_run_end_to_end(regression_run: CliRun):
    """``xfbench run --tasks regression --backends tf-graph,tf-eager,torch,jax --epochs 5 --json PATH``."""
    done = regression_run
    assert done.returncode == 0, done.stderr
    table = done.stdout.splitlines()
    assert table[0].startswith("regression on cpu (") and "linear regression" in table[0]
    assert table[1].split()[:2] == ["backend", "R²"]
    rows = {line.split()[0]: line for line in table[3:3 + len(ALL_BACKENDS)]}
    assert sorted(rows) == sorted(ALL_BACKENDS)
    for row in rows.values():
        if row.split()[-1] == "ok":
            # 5 full-batch epochs get the regression only part of the way: R² well above 0, below 1
            assert 0.3 < float(row.split()[1]) < 0.999, row
        else:
            assert "unsupported" in row and "pip install" in row, row  # only a missing framework may skip it
    assert f"xfbench: result written to {done.json_path}" in done.stderr.splitlines()
    assert done.json_path.is_file()
    # progress goes to stderr, one "xfbench: " line each; frameworks' logs go nowhere
    assert done.stderr and all(line.startswith("xfbench: ") for line in done.stderr.splitlines())
    document = done.document()
    assert [(cell["task"], cell["backend"]) for cell in document["cells"]] == [("regression", b) for b in ALL_BACKENDS]
    assert document["config"]["epochs"] == {"regression": 5} and document["config"]["threads"] == 2
    # nothing left in the temporary folder: the run's worker folder is removed, and the workers' quick exit still
    # runs the frameworks' atexit clean-up (TensorFlow's autograph files)
    # (torch's inductor cache folder is a cache meant to persist, not a leftover)
    left = sorted(path.name for path in done.temp.iterdir()) if done.temp is not None else None
    assert left is not None and [name for name in left if not name.startswith("torchinductor_")] == [], left


def test_run_json_matches_table(regression_run: CliRun):
    """The R² in the table is the JSON's, to the 4 decimals shown."""
    document = regression_run.document()
    for cell in document["cells"]:
        if cell["status"] == "ok":
            row = next(line for line in regression_run.stdout.splitlines() if line.split()[:1] == [cell["backend"]])
            assert row.split()[1] == f"{cell['metrics']['r2']:.4f}"


def test_table_shows_ratios_with_intervals(regression_run: CliRun):
    """Each backend's row carries its step-time ratio to the fastest with the 95% interval of the JSON, and a line
    names the fastest and says whether the gap to the next one is resolved."""
    document = regression_run.document()
    (comparison,) = document["comparisons"]
    lines = regression_run.stdout.splitlines()
    assert f"vs {comparison['reference']} [95% CI]" in lines[1]
    for ratio in comparison["ratios"]:
        row = next(line for line in lines if line.split()[:1] == [ratio["backend"]])
        assert ratio_text(Ratio(**ratio)) in row, (row, ratio)
    answer = next(line for line in lines if " is fastest" in line)
    assert answer.startswith(f"{comparison['fastest']} is fastest: ")
    assert f" faster than {comparison['runner_up']} [" in answer and ", the next fastest (" in answer
    assert ("(resolved at 95%)" in answer) == bool(comparison["resolved"])


@pytest.mark.frameworks
@pytest.mark.processes
def test_list():
    done = run_cli("list")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if line.strip()}
    for task in ("regression", "mlp", "mlp-binary", "cnn", "cnn28"):
        assert task in rows
    for backend in backends.backend_names():  # every registered one, each probed in its own worker
        assert backend in rows
        assert "installed" in rows[backend] and backends.describe(backend) in rows[backend]
        if "not installed" not in rows[backend]:
            assert "cpu: " in rows[backend]
    assert done.stderr == ""  # frameworks' import chatter stays in the worker logs
