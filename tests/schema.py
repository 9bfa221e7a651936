"""The result schema of docs/schema.md (``schema_version`` 4) as a checker other tests reuse.

``check_result_schema(document)`` asserts that a result document (the parsed JSON) has every documented field with
the documented type and range, and nothing undocumented. Cells that are not ``ok`` need only the identity fields and
an ``error``; an ``ok`` cell needs its provenance, metrics, timing and memory.
"""

from __future__ import annotations

import datetime
import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest

from xfbench.tasks import get_task, task_names

TOP_LEVEL = ["schema_version", "created", "complete", "versions", "machine", "config", "cells", "comparisons"]
MACHINE = {"cpu": str, "cores": int, "os": str, "python": str}
VERSIONS = {"xfbench", "numpy", "scipy", "python"}
CONFIG = {"tasks": list, "task_descriptions": dict, "task_hashes": dict, "backends": list, "devices": list,
          "threads": int, "timeout_s": float, "seeds": int, "epochs": dict, "targets": dict, "malloc": dict,
          "executor": dict}
CELL = {"task", "backend", "device", "status", "error", "task_hash", "versions", "threads", "fingerprint", "metrics",
        "seed_metrics", "curve", "timing", "memory", "parity", "node", "lost"}
NODE = {"id", "hostname", "address", "cpu", "cores", "usable_cores", "gpus", "memory_gb", "labels", "ray_version",
        "agent_pid"}
EPOCH_POINT = {"epoch", "train_s", "train_loss", "test"}
STATUSES = ("ok", "unsupported", "error")
PHASES = ("import_s", "build_s", "first_step_s", "train_s", "eval_s")  # seconds, measured in every ok run cell
STEADY = ("step_ms", "block_steps", "untimed_steps", "timed_steps", "samples_per_s", "recompiles", "page_faults_per_step")
TIMING = {*PHASES, *STEADY, "session", "protocol", "processes", "turns"}
PROTOCOL = {"sync", "turn", "warmup_s", "min_block_s", "turn_s", "min_blocks", "rounds", "warmup_rounds", "processes",
            "order", "schedule", "imports", "untimed_s"}
PROCESS = {"process", "pid", "import_s", "build_s", "first_step_s", "train_s", "eval_s", "trained_epochs",
           "peak_rss_mb"}
TURN = {"process", "round", "position", "start_s", "block_ms"}
COMPARISON = {"task", "device", "reference", "ratios", "fastest", "runner_up", "resolved", "paired", "method",
              "workers_peak_rss_mb", "note", "node"}
RATIO = {"backend", "ratio", "low", "high", "per_process", "rounds", "resolved"}


def _reject_constant(name: str) -> None:
    raise AssertionError(f"non-standard JSON constant {name} (NaN/Infinity must be written as null)")


def load_document(path: str | Path) -> dict[str, Any]:
    """Parse a result file as strict, standard JSON."""
    return json.loads(Path(path).read_text(encoding="utf-8"), parse_constant=_reject_constant)


def _number(value: Any, where: str, low: float = -math.inf, high: float = math.inf, integer: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    assert isinstance(value, kinds) and not isinstance(value, bool), f"{where}: expected a number, got {value!r}"
    assert low <= value <= high, f"{where}: {value!r} not in [{low}, {high}]"


def check_metrics(cell: dict[str, Any], where: str) -> None:
    metrics = cell["metrics"]
    if cell["task"] in task_names():  # built-in task: exactly its metrics, its loss and the training loss
        expected = {*get_task(cell["task"]).metrics, "loss", "train_loss"}
        assert set(metrics) == expected, f"{where}: metrics {sorted(metrics)}, expected {sorted(expected)}"
    assert {"loss", "train_loss"} <= set(metrics), f"{where}: metrics lack loss/train_loss: {sorted(metrics)}"
    for name, value in metrics.items():
        if value is None:  # a diverged loss is written as null
            continue
        low, high = {"accuracy": (0, 1), "r2": (-math.inf, 1), "mse": (0, math.inf)}.get(name, (0, math.inf))
        _number(value, f"{where}.metrics.{name}", low, high)


def check_turns(timing: dict[str, Any], where: str) -> None:
    """The raw turns: every process took at most one turn per round, positions are distinct within a round, and the
    summary statistics are those of the raw blocks."""
    protocol = timing["protocol"]
    turns = timing["turns"]
    assert turns, f"{where}: a measured cell keeps its raw turns"
    seen = set()
    for turn in turns:
        assert set(turn) == TURN, f"{where}.turns: {sorted(turn)}"
        assert 0 <= turn["process"] < protocol["processes"] and 0 <= turn["round"] < protocol["rounds"], turn
        assert (turn["process"], turn["round"]) not in seen, f"{where}: two turns of one process in one round"
        seen.add((turn["process"], turn["round"]))
        assert len(turn["block_ms"]) >= protocol["min_blocks"] and all(v > 0 for v in turn["block_ms"]), turn
        _number(turn["start_s"], f"{where}.turns.start_s", low=0)
    blocks = [value for turn in turns for value in turn["block_ms"]]
    assert timing["step_ms"]["n"] == len(blocks), f"{where}: step_ms.n {timing['step_ms']['n']} != {len(blocks)} blocks"
    assert timing["step_ms"]["min"] == min(blocks)
    assert timing["step_ms"]["median"] == pytest.approx(statistics.median(blocks))


def check_curve(cell: dict[str, Any], where: str) -> None:
    """The training curve: one point per trained epoch, numbered from 1, cumulative training time rising to the
    cell's ``train_s``, the test metrics of the cell's metric names; the last point's are the cell's."""
    curve = cell["curve"]
    epochs = cell["timing"]["processes"][0]["trained_epochs"]
    assert [point["epoch"] for point in curve] == list(range(1, epochs + 1)), f"{where}.curve epochs"
    times = [point["train_s"] for point in curve]
    assert all(set(point) == EPOCH_POINT for point in curve), f"{where}.curve: {curve[:1]}"
    assert times == sorted(times) and times[0] > 0, f"{where}.curve train_s {times}"
    assert times[-1] == pytest.approx(cell["timing"]["train_s"]), f"{where}: curve ends at {times[-1]}"
    last = curve[-1]["test"]
    for name, value in last.items():
        assert cell["metrics"][name] == pytest.approx(value, abs=1e-12), f"{where}: last epoch's {name}"


def check_timing(timing: dict[str, Any], where: str, steady: bool) -> None:
    assert set(timing) == TIMING, f"{where}.timing: {sorted(set(timing) ^ TIMING)}"
    for name in PHASES:
        _number(timing.get(name), f"{where}.timing.{name}", low=0)
        assert timing[name] > 0, f"{where}.timing.{name} is 0: a measurement not taken must be null"
    processes = timing["processes"]
    assert processes and all(set(process) == PROCESS for process in processes), f"{where}.processes"
    assert processes[0]["process"] == 0 and processes[0]["trained_epochs"] >= 1, f"{where}.processes[0]"
    if not steady:
        assert all(timing[name] is None for name in STEADY), f"{where}: steady-state fields without measuring"
        assert timing["turns"] == [] and timing["protocol"] == {}, where
        return
    assert set(timing["protocol"]) == PROTOCOL, f"{where}.protocol: {sorted(timing['protocol'])}"
    assert len(processes) == timing["protocol"]["processes"], f"{where}: one entry per worker process"
    assert isinstance(timing["session"], str) and timing["session"], f"{where}.session"
    step = timing["step_ms"]
    assert set(step) == {"median", "iqr", "min", "n"}, f"{where}.timing.step_ms: {sorted(step)}"
    _number(step["n"], f"{where}.step_ms.n", low=1, integer=True)
    _number(step["median"], f"{where}.step_ms.median", low=0)
    _number(step["min"], f"{where}.step_ms.min", low=0)
    _number(step["iqr"], f"{where}.step_ms.iqr", low=0)
    assert 0 < step["min"] <= step["median"], f"{where}.step_ms: min {step['min']} median {step['median']}"
    _number(timing["block_steps"], f"{where}.block_steps", low=1, integer=True)
    _number(timing["untimed_steps"], f"{where}.untimed_steps", low=1, integer=True)
    assert timing["untimed_steps"] <= timing["block_steps"], f"{where}: untimed_steps"
    assert timing["timed_steps"] == timing["block_steps"] * step["n"], f"{where}: timed_steps"
    _number(timing["samples_per_s"], f"{where}.samples_per_s", low=0)
    assert timing["samples_per_s"] > 0
    assert timing["recompiles"] is None or (isinstance(timing["recompiles"], int) and timing["recompiles"] >= 0)
    faults = timing["page_faults_per_step"]
    assert faults is None or (isinstance(faults, (int, float)) and faults >= 0), f"{where}: page_faults_per_step"
    check_turns(timing, where)


def check_comparison(comparison: dict[str, Any], cells: list[dict[str, Any]], where: str) -> None:
    """A comparison: one ratio per measured ok cell of its task and device, 1.0 for the reference, intervals that
    hold their estimate, the fastest the one with the lowest ratio."""
    assert set(comparison) == COMPARISON, f"{where}: {sorted(set(comparison) ^ COMPARISON)}"
    measured = sorted(cell["backend"] for cell in cells if cell["task"] == comparison["task"]
                      and cell["device"]["kind"] == comparison["device"] and cell["status"] == "ok"
                      and (cell["node"] or {}).get("id") == comparison["node"])
    ratios = {ratio["backend"]: ratio for ratio in comparison["ratios"]}
    assert sorted(ratios) == measured, f"{where}: ratios for {sorted(ratios)}, measured {measured}"
    for ratio in comparison["ratios"]:
        assert set(ratio) == RATIO, f"{where}.ratios: {sorted(ratio)}"
        _number(ratio["ratio"], f"{where}.ratio", low=0)
        if ratio["low"] is not None:
            assert ratio["low"] <= ratio["ratio"] <= ratio["high"], f"{where}: {ratio}"
            assert ratio["resolved"] == (ratio["low"] > 1 or ratio["high"] < 1), f"{where}: {ratio}"
    reference = ratios[comparison["reference"]]
    assert reference["ratio"] == reference["low"] == reference["high"] == 1.0, reference
    fastest = min(comparison["ratios"], key=lambda item: item["ratio"])["backend"]
    assert comparison["fastest"] == fastest, f"{where}: fastest {comparison['fastest']} but lowest ratio {fastest}"


def check_node(node: dict[str, Any], where: str) -> None:
    """The machine of a cell that ran on a Ray node."""
    assert set(node) == NODE, f"{where}: fields {sorted(node)}; documented {sorted(NODE)}"
    assert isinstance(node["id"], str) and len(node["id"]) >= 8, f"{where}.id: {node['id']!r}"
    for name in ("hostname", "cpu", "ray_version"):
        assert node[name] is None or (isinstance(node[name], str) and node[name]), f"{where}.{name}: {node[name]!r}"
    for name in ("cores", "usable_cores", "agent_pid"):
        assert node[name] is None or (isinstance(node[name], int) and node[name] >= 1), f"{where}.{name}"
    assert isinstance(node["gpus"], int) and node["gpus"] >= 0 and isinstance(node["labels"], dict), where


def check_cell(cell: dict[str, Any], where: str = "cell", steady: bool = True, seeds: int = 1) -> None:
    """One cell. ``steady``: the run measured steady-state timing (``xfbench run``; not ``parity``)."""
    assert set(cell) == CELL, f"{where}: fields {sorted(cell)}; documented {sorted(CELL)}"
    assert isinstance(cell["task"], str) and cell["task"], where
    assert isinstance(cell["backend"], str) and cell["backend"], where
    device = cell["device"]
    assert set(device) == {"kind", "name"} and device["kind"] in ("cpu", "gpu"), f"{where}.device: {device}"
    assert device["name"] is None or (isinstance(device["name"], str) and device["name"]), f"{where}.device: {device}"
    assert cell["status"] in STATUSES, f"{where}.status: {cell['status']!r}"
    assert isinstance(cell["seed_metrics"], list) and (cell["parity"] is None or isinstance(cell["parity"], dict))
    for name in ("versions", "fingerprint", "metrics", "timing", "memory"):
        assert isinstance(cell[name], dict), f"{where}.{name}: {cell[name]!r}"
    assert isinstance(cell["lost"], bool), f"{where}.lost: {cell['lost']!r}"
    if cell["node"] is not None:
        check_node(cell["node"], f"{where}.node")
    if cell["status"] != "ok":
        assert isinstance(cell["error"], str) and cell["error"], f"{where}: a {cell['status']} cell needs its reason"
        return
    assert cell["error"] is None, f"{where}: ok cell with error {cell['error']!r}"
    assert device["name"], f"{where}: ok cell without a device name"
    assert cell["versions"] and all(isinstance(v, str) for v in cell["versions"].values()), f"{where}.versions"
    _number(cell["threads"], f"{where}.threads", low=1, integer=True)
    fingerprint = cell["fingerprint"]
    assert isinstance(fingerprint.get("dtype"), str), f"{where}.fingerprint: {fingerprint}"
    assert fingerprint.get("layout") in ("NHWC", "NCHW"), f"{where}.fingerprint: {fingerprint}"
    check_metrics(cell, where)
    check_timing(cell["timing"], where, steady)
    if steady:
        check_curve(cell, where)
    assert set(cell["memory"]) == {"peak_rss_mb", "device_peak_mb"}, f"{where}.memory: {cell['memory']}"
    _number(cell["memory"]["peak_rss_mb"], f"{where}.memory.peak_rss_mb", low=1)
    if device["kind"] == "cpu":
        assert cell["memory"]["device_peak_mb"] is None, f"{where}: a CPU cell has no device memory counter"
    if seeds > 1:
        assert len(cell["seed_metrics"]) == seeds and cell["seed_metrics"][0] == cell["metrics"], where
    else:
        assert cell["seed_metrics"] == [], where


def check_result_schema(document: dict[str, Any], steady: bool = True) -> None:
    """A whole result document: top level, machine, config, and one cell per task x backend x device."""
    assert list(document) == TOP_LEVEL, f"top-level keys {list(document)}; documented {TOP_LEVEL}"
    assert document["schema_version"] == 4 and document["complete"] is True
    assert set(document["versions"]) == VERSIONS, document["versions"]
    created = datetime.datetime.fromisoformat(document["created"])
    assert created.utcoffset() == datetime.timedelta(0), f"created is not UTC: {document['created']}"
    machine = document["machine"]
    for name, kind in MACHINE.items():
        assert isinstance(machine.get(name), kind) and machine[name], f"machine.{name}: {machine.get(name)!r}"
    assert machine["cores"] >= 1
    config = document["config"]
    for name, kind in CONFIG.items():
        assert isinstance(config.get(name), kind), f"config.{name}: {config.get(name)!r}"
    assert config["malloc"]["policy"] in ("steady", "system", "user"), f"config.malloc: {config['malloc']}"
    cells = document["cells"]
    assert isinstance(cells, list)
    executor = config["executor"]
    assert executor["kind"] in ("local", "ray"), f"config.executor: {executor}"
    copies = len(executor["nodes"]) if executor["kind"] == "ray" and executor.get("on_each") else 1
    expected = sorted((task, backend, device) for task in config["tasks"] for backend in config["backends"]
                      for device in config["devices"] for _ in range(copies))
    keys = [(cell.get("task"), cell.get("backend"), (cell.get("device") or {}).get("kind")) for cell in cells]
    assert sorted(keys) == expected, f"cells {keys}; expected one per task x backend x device"
    tasks_in_order = [key[0] for key in keys]
    assert tasks_in_order == sorted(tasks_in_order, key=config["tasks"].index), "cells are not in task order"
    for index, cell in enumerate(cells):
        where = f"cells[{index}] ({cell['task']}, {cell['backend']}, {cell['device']['kind']})"
        check_cell(cell, where, steady=steady, seeds=config["seeds"])
        assert cell["task_hash"] == config["task_hashes"][cell["task"]], where
        if executor["kind"] == "local":
            assert cell["node"] is None and cell["lost"] is False, where
        else:  # every cell of a Ray run names its node; a failed placement is a lost cell
            assert cell["node"] is not None and cell["node"]["id"] in executor["nodes"], where
        if cell["status"] == "ok" and cell["node"] is None:
            assert cell["threads"] == config["threads"], where
        elif cell["status"] == "ok":
            assert 1 <= cell["threads"] <= cell["node"]["usable_cores"], where
    groups = {(cell["task"], cell["device"]["kind"], (cell["node"] or {}).get("id")) for cell in cells
              if cell["status"] == "ok"}
    if steady:
        assert sorted(((item["task"], item["device"], item["node"]) for item in document["comparisons"]),
                      key=str) == sorted(groups, key=str)
    else:
        assert document["comparisons"] == []
    for index, comparison in enumerate(document["comparisons"]):
        check_comparison(comparison, cells, f"comparisons[{index}]")
