"""The result document's schema: its version, the statuses, migration of older documents and the type checks every
reader relies on. Works on the JSON document (dicts), before the typed model is built from it.

Schema (``schema_version`` 4; documented in docs/schema.md and checked by tests/schema.py):
``{"schema_version", "created", "complete", "versions", "machine", "config", "cells": [cell...],
"comparisons": [comparison...]}``. A cell always has ``task``, ``backend``, ``device`` (``kind``, ``name``),
``status`` (ok / diverged / unsupported / error) and ``error`` (None when ok); measurements are None when they were
not taken, never zero.

Older documents are migrated on load (:func:`migrate`), never refused: a schema 1 file reads with no raw samples
and no comparisons, a schema 2 file with no training curves, a schema 3 file with no nodes (every cell ran here).
"""

from __future__ import annotations

from typing import Any

from xfbench.compare.results.files import is_number
from xfbench.errors import XfbenchError

SCHEMA_VERSION = 4
STATUSES = ("ok", "diverged", "unsupported", "error")
FAILED = ("error", "diverged")  # statuses that fail a run (exit code 1) and its gates


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Bring an older result document to the current schema (it is not modified in place).

    Example:
        >>> migrate({"schema_version": 1, "cells": []})["schema_version"]
        4
    """
    version = data.get("schema_version")
    if version == SCHEMA_VERSION:
        return data
    if version not in (1, 2, 3):
        raise XfbenchError(f"result schema_version {version!r} is not one this xfbench reads (1 to {SCHEMA_VERSION}); "
                           "a newer xfbench wrote it, or it is not an xfbench result")
    data = dict(data)
    cells = data.get("cells") or []
    if not isinstance(cells, list) or not all(isinstance(cell, dict) for cell in cells):
        raise XfbenchError("malformed result: cells must be a list of objects")
    if version == 1:  # 1 -> 2: raw turns, processes, software versions and comparisons appeared
        cells = [{**cell, "timing": {**(cell.get("timing") or {}), "turns": [], "processes": []}} for cell in cells]
        data.setdefault("versions", {})
        data.setdefault("comparisons", [])
    if version in (1, 2):  # 2 -> 3: training curves appeared
        cells = [{**cell, "curve": cell.get("curve") or []} for cell in cells]
    # 3 -> 4: cells and comparisons name the Ray node they ran on (None: the result's machine)
    data["cells"] = [{**cell, "node": cell.get("node"), "lost": bool(cell.get("lost", False))} for cell in cells]
    data["schema_version"] = SCHEMA_VERSION
    return data


NUMERIC_TIMING = ("import_s", "build_s", "first_step_s", "train_s", "eval_s", "samples_per_s", "block_steps",
                  "untimed_steps", "timed_steps", "recompiles", "page_faults_per_step")


def _expect(ok: bool, where: str, what: str, value: Any) -> None:
    if not ok:
        shown = repr(value)
        raise XfbenchError(f"malformed result: {where} must be {what}, got {shown[:60]}{'...' if len(shown) > 60 else ''}")


def _numbers(mapping: Any, keys: tuple[str, ...], where: str) -> None:
    _expect(isinstance(mapping, dict), where, "an object", mapping)
    for key in keys:
        value = mapping.get(key)
        _expect(value is None or is_number(value), f"{where}.{key}", "a number or null", value)


def check_document(data: dict[str, Any]) -> None:
    """The types every reader relies on (names are strings, measurements numbers or null, lists are lists), so a
    truncated, edited or hostile file is one clear error at load time instead of a crash in a renderer."""
    for key in ("machine", "config", "versions"):
        _expect(isinstance(data.get(key, {}), dict), key, "an object", data.get(key))
    cells = data.get("cells", [])
    _expect(isinstance(cells, list), "cells", "a list", cells)
    for index, cell in enumerate(cells):
        where = f"cells[{index}]"
        _expect(isinstance(cell, dict), where, "an object", cell)
        for key in ("task", "backend"):
            _expect(isinstance(cell.get(key), str) and bool(cell.get(key)), f"{where}.{key}", "a non-empty string",
                    cell.get(key))
        _expect(cell.get("status") in STATUSES, f"{where}.status", f"one of {', '.join(STATUSES)}", cell.get("status"))
        _expect(cell.get("error") is None or isinstance(cell.get("error"), str), f"{where}.error", "a string or null",
                cell.get("error"))
        device = cell.get("device")
        _expect(isinstance(device, (dict, str)), f"{where}.device", "an object", device)
        if isinstance(device, dict):
            _expect(isinstance(device.get("kind"), str), f"{where}.device.kind", "a string", device.get("kind"))
            _expect(device.get("name") is None or isinstance(device.get("name"), str), f"{where}.device.name",
                    "a string or null", device.get("name"))
        for key in ("versions", "fingerprint", "metrics"):
            _expect(isinstance(cell.get(key, {}), dict), f"{where}.{key}", "an object", cell.get(key))
        _numbers(cell.get("metrics", {}), tuple(cell.get("metrics", {})), f"{where}.metrics")
        _expect(isinstance(cell.get("seed_metrics", []), list), f"{where}.seed_metrics", "a list", None)
        for number, metrics in enumerate(cell.get("seed_metrics", [])):
            _numbers(metrics, tuple(metrics) if isinstance(metrics, dict) else (), f"{where}.seed_metrics[{number}]")
        timing = cell.get("timing") or {}
        _numbers(timing, NUMERIC_TIMING, f"{where}.timing")
        if timing.get("step_ms") is not None:
            _numbers(timing["step_ms"], ("median", "iqr", "min", "n"), f"{where}.timing.step_ms")
        for key in ("turns", "processes"):
            _expect(isinstance(timing.get(key, []), list), f"{where}.timing.{key}", "a list", timing.get(key))
        for number, turn in enumerate(timing.get("turns") or []):
            _numbers(turn, ("process", "round", "position", "start_s"), f"{where}.timing.turns[{number}]")
            blocks = turn.get("block_ms")
            _expect(isinstance(blocks, list) and bool(blocks) and all(is_number(v) and v > 0 for v in blocks),
                    f"{where}.timing.turns[{number}].block_ms", "a list of positive numbers", blocks)
        _numbers(cell.get("memory") or {}, ("peak_rss_mb", "device_peak_mb"), f"{where}.memory")
        _expect(isinstance(cell.get("curve", []), list), f"{where}.curve", "a list", cell.get("curve"))
        for number, point in enumerate(cell.get("curve") or []):
            _numbers(point, ("epoch", "train_s", "train_loss"), f"{where}.curve[{number}]")
            test = point.get("test", {})
            _numbers(test, tuple(test) if isinstance(test, dict) else (), f"{where}.curve[{number}].test")
        node = cell.get("node")
        _expect(node is None or (isinstance(node, dict) and isinstance(node.get("id"), str)), f"{where}.node",
                "null or an object with an id", node)
        if node is not None:
            _numbers(node, ("cores", "usable_cores", "gpus", "memory_gb", "agent_pid"), f"{where}.node")
            _expect(isinstance(node.get("labels", {}), dict), f"{where}.node.labels", "an object", node.get("labels"))
    comparisons = data.get("comparisons", [])
    _expect(isinstance(comparisons, list), "comparisons", "a list", comparisons)
    for index, comparison in enumerate(comparisons):
        where = f"comparisons[{index}]"
        _expect(isinstance(comparison, dict), where, "an object", comparison)
        for key in ("task", "device", "reference", "fastest"):
            _expect(isinstance(comparison.get(key), str), f"{where}.{key}", "a string", comparison.get(key))
        _expect(isinstance(comparison.get("ratios", []), list), f"{where}.ratios", "a list", None)
        for number, item in enumerate(comparison.get("ratios", [])):
            _numbers(item, ("ratio", "low", "high", "rounds"), f"{where}.ratios[{number}]")
            _expect(isinstance(item.get("backend"), str), f"{where}.ratios[{number}].backend", "a string", None)
