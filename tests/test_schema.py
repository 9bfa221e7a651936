"""The JSON written by a small real run matches docs/schema.md; the checker itself rejects broken documents."""

from __future__ import annotations

import copy
import math

import pytest

import xfbench
from tests.conftest import ALL_BACKENDS, CliRun
from tests.schema import check_result_schema, load_document


@pytest.fixture(scope="module")
def document(regression_run: CliRun) -> dict:
    assert regression_run.returncode == 0, regression_run.stderr
    return load_document(regression_run.json_path)


def test_run_json_matches_schema(document: dict):
    check_result_schema(document)
    assert document["config"]["backends"] == list(ALL_BACKENDS)


def test_run_cells(document: dict):
    """Every installed backend ran: ok, with its own versions; regression metrics; compiled backends don't
    recompile while timed."""
    for cell in document["cells"]:
        if cell["status"] != "ok":
            assert cell["status"] == "unsupported" and "pip install" in cell["error"], cell["error"]
            continue
        assert set(cell["metrics"]) == {"r2", "mse", "loss", "train_loss"}
        assert cell["metrics"]["mse"] == pytest.approx(cell["metrics"]["loss"])
        framework = {"tf-graph": "tensorflow", "tf-eager": "tensorflow"}.get(cell["backend"], cell["backend"])
        assert framework in cell["versions"]
        assert cell["fingerprint"]["dtype"] == "float32"
        assert cell["fingerprint"]["layout"] == ("NCHW" if cell["backend"] == "torch" else "NHWC")
        timing = cell["timing"]
        protocol = timing["protocol"]
        assert protocol["schedule"] == "interleaved" and protocol["processes"] == 2 and protocol["rounds"] == 4
        assert timing["step_ms"]["n"] >= protocol["rounds"] * protocol["processes"] * protocol["min_blocks"]
        assert len({turn["process"] for turn in timing["turns"]}) == 2 and len(timing["processes"]) == 2
        assert timing["processes"][1]["trained_epochs"] == 1  # the timing-only process primes one epoch
        assert timing["recompiles"] == (0 if cell["backend"] in ("tf-graph", "jax") else None)
        assert timing["import_s"] > 0.01  # the framework import really happened in the worker


def test_load_round_trip(document: dict, regression_run: CliRun):
    assert xfbench.load(str(regression_run.json_path)).to_dict() == document


def _break(document: dict, change) -> dict:
    broken = copy.deepcopy(document)
    change(broken)
    return broken


def _first_ok(document: dict) -> dict:
    return next(cell for cell in document["cells"] if cell["status"] == "ok")


@pytest.mark.parametrize("change", [
    pytest.param(lambda d: d.update(schema_version=2), id="schema-version"),
    pytest.param(lambda d: d.update(complete=False), id="incomplete"),
    pytest.param(lambda d: d["versions"].pop("numpy"), id="no-numpy-version"),
    pytest.param(lambda d: _first_ok(d).update(task_hash="0" * 16), id="wrong-task-hash"),
    pytest.param(lambda d: _first_ok(d)["timing"].update(turns=[]), id="no-raw-turns"),
    pytest.param(lambda d: _first_ok(d)["timing"]["turns"][0]["block_ms"].append(1e9), id="summary-not-of-raw"),
    pytest.param(lambda d: _first_ok(d)["timing"]["turns"].append(copy.deepcopy(_first_ok(d)["timing"]["turns"][0])),
                 id="two-turns-per-round"),
    pytest.param(lambda d: _first_ok(d)["timing"]["processes"].pop(), id="missing-process"),
    pytest.param(lambda d: d["comparisons"].pop(), id="missing-comparison"),
    pytest.param(lambda d: d["comparisons"][0]["ratios"].pop(), id="missing-ratio"),
    pytest.param(lambda d: d["comparisons"][0].update(fastest="nobody"), id="wrong-fastest"),
    pytest.param(lambda d: next(r for r in d["comparisons"][0]["ratios"] if r["ratio"] > 1).update(low=0.5, high=0.9),
                 id="interval-without-its-estimate"),
    pytest.param(lambda d: d.pop("machine"), id="no-machine"),
    pytest.param(lambda d: d["machine"].pop("cores"), id="no-cores"),
    pytest.param(lambda d: d["config"].pop("threads"), id="no-config-threads"),
    pytest.param(lambda d: d["cells"].pop(), id="missing-cell"),
    pytest.param(lambda d: d["cells"].append(copy.deepcopy(d["cells"][0])), id="duplicate-cell"),
    pytest.param(lambda d: _first_ok(d).update(status="fine"), id="bad-status"),
    pytest.param(lambda d: _first_ok(d).update(error="boom"), id="ok-with-error"),
    pytest.param(lambda d: _first_ok(d).pop("fingerprint"), id="no-fingerprint"),
    pytest.param(lambda d: _first_ok(d).update(extra=1), id="undocumented-field"),
    pytest.param(lambda d: _first_ok(d)["metrics"].pop("r2"), id="no-r2"),
    pytest.param(lambda d: _first_ok(d)["metrics"].update(accuracy=0.5), id="wrong-metric"),
    pytest.param(lambda d: _first_ok(d)["timing"].pop("first_step_s"), id="no-first-step"),
    pytest.param(lambda d: _first_ok(d)["timing"].update(train_s=0.0), id="zero-for-not-measured"),
    pytest.param(lambda d: _first_ok(d)["timing"]["step_ms"].pop("iqr"), id="no-iqr"),
    pytest.param(lambda d: _first_ok(d)["timing"]["step_ms"].update(n=0), id="no-blocks"),
    pytest.param(lambda d: _first_ok(d)["timing"].update(samples_per_s=math.nan), id="nan-speed"),
    pytest.param(lambda d: _first_ok(d)["memory"].pop("peak_rss_mb"), id="no-rss"),
    pytest.param(lambda d: _first_ok(d)["device"].update(kind="tpu"), id="bad-device"),
    pytest.param(lambda d: d["cells"][0].update(status="error", error=None), id="error-without-reason"),
])
def test_checker_rejects(document: dict, change):
    with pytest.raises((AssertionError, KeyError, TypeError, ValueError)):
        check_result_schema(_break(document, change))
