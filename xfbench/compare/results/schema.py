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

import dataclasses
import types
import typing
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
    if data.get("kind") == "xfbench-ab":
        raise XfbenchError("this is an xfbench ab comparison, not a run result; read it with xfbench report")
    if data.get("kind") is not None:
        raise XfbenchError(f"this is a document of kind {str(data.get('kind'))[:40]!r}, not an xfbench run result")
    if isinstance(data.get("cells"), list):  # a device given as its kind alone (early files) is read as an object
        data = {**data, "cells": [{**cell, "device": {"kind": cell["device"]}}
                                  if isinstance(cell, dict) and isinstance(cell.get("device"), str) else cell
                                  for cell in data["cells"]]}
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


def expect(ok: bool, where: str, what: str, value: Any) -> None:
    """Nothing when ``ok``, else the one-line error: ``where`` must be ``what``, got (the start of) ``value``."""
    if not ok:
        shown = repr(value)
        raise XfbenchError(f"malformed result: {where} must be {what}, got {shown[:60]}{'...' if len(shown) > 60 else ''}")


def _numbers(mapping: Any, keys: tuple[str, ...], where: str) -> None:
    expect(isinstance(mapping, dict), where, "an object", mapping)
    for key in keys:
        value = mapping.get(key)
        expect(value is None or is_number(value), f"{where}.{key}", "a number or null", value)


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _mapping(value: Any, kind: Any) -> bool:
    """An object whose every value passes ``kind``."""
    return isinstance(value, dict) and all(kind(item) for item in value.values())


def _number_or_null(value: Any) -> bool:
    return value is None or is_number(value)


# what readers of ``config`` rely on (reports, resume, the gate): key -> (check, what it must be); absent is fine
CONFIG = {
    "tasks": (_strings, "a list of strings"),
    "backends": (_strings, "a list of strings"),
    "devices": (_strings, "a list of strings"),
    "task_descriptions": (lambda v: _mapping(v, lambda item: isinstance(item, str)), "an object of strings"),
    "task_hashes": (lambda v: _mapping(v, lambda item: isinstance(item, str)), "an object of strings"),
    "epochs": (lambda v: _mapping(v, is_number), "an object of numbers"),
    "targets": (lambda v: _mapping(v, lambda item: item is None or (isinstance(item, dict) and _number_or_null(
        item.get("value")) and isinstance(item.get("metric", ""), str))), "an object of {metric, value} or null"),
    "threads": (lambda v: v is None or is_number(v), "a number or null"),
    "seeds": (is_number, "a number"),
    "timeout_s": (is_number, "a number"),
    "relative_to": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "malloc": (lambda v: v is None or isinstance(v, dict), "an object or null"),
    "executor": (lambda v: v is None or isinstance(v, dict), "an object or null"),
    "timing": (lambda v: v is None or isinstance(v, dict), "an object or null"),
    "parity": (lambda v: v is None or _mapping(v, lambda item: is_number(item) or isinstance(item, bool)),
               "an object of numbers"),
    "sweep": (lambda v: v is None or (isinstance(v, dict) and isinstance(v.get("task", ""), str)
                                      and isinstance(v.get("param", ""), str) and _strings(v.get("tasks", []))
                                      and isinstance(v.get("values", []), list)
                                      and all(is_number(item) for item in v.get("values", []))),
              "an object: task, param, values (numbers), tasks (strings)"),
}
TIMING_NUMBERS = ("rounds", "processes", "warmup_s", "min_block_s", "turn_s", "min_blocks", "warmup_rounds",
                  "untimed_s")
TIMING_STRINGS = ("order", "schedule", "imports", "sync", "turn")


def check_config(config: dict[str, Any]) -> None:
    """The types of the ``config`` entries that readers use (see :data:`CONFIG`)."""
    for key, (check, what) in CONFIG.items():
        if key in config:
            expect(check(config[key]), f"config.{key}", what, config[key])
    check_protocol(config.get("timing") or {}, "config.timing")


def check_protocol(timing: dict[str, Any], where: str) -> None:
    """The timing protocol of a run (``config.timing``, each cell's ``timing.protocol``): numbers and words."""
    for key in TIMING_NUMBERS:
        expect(_number_or_null(timing.get(key)), f"{where}.{key}", "a number or null", timing.get(key))
    for key in TIMING_STRINGS:
        expect(timing.get(key) is None or isinstance(timing.get(key), str), f"{where}.{key}", "a string or null",
               timing.get(key))


def check_document(data: dict[str, Any]) -> None:
    """The types every reader relies on (names are strings, measurements finite numbers or null, lists are lists), so
    a truncated, edited or hostile file is one clear error at load time instead of a crash in a renderer."""
    for key in ("machine", "config", "versions"):
        expect(isinstance(data.get(key, {}), dict), key, "an object", data.get(key))
    check_config(data.get("config", {}))
    expect(isinstance(data.get("created", ""), str), "created", "a string", data.get("created"))
    cells = data.get("cells", [])
    expect(isinstance(cells, list), "cells", "a list", cells)
    for index, cell in enumerate(cells):
        where = f"cells[{index}]"
        expect(isinstance(cell, dict), where, "an object", cell)
        for key in ("task", "backend"):
            expect(isinstance(cell.get(key), str) and bool(cell.get(key)), f"{where}.{key}", "a non-empty string",
                    cell.get(key))
        expect(cell.get("status") in STATUSES, f"{where}.status", f"one of {', '.join(STATUSES)}", cell.get("status"))
        expect(cell.get("error") is None or isinstance(cell.get("error"), str), f"{where}.error", "a string or null",
                cell.get("error"))
        device = cell.get("device")
        expect(isinstance(device, (dict, str)), f"{where}.device", "an object", device)
        if isinstance(device, dict):
            expect(isinstance(device.get("kind"), str), f"{where}.device.kind", "a string", device.get("kind"))
            expect(device.get("name") is None or isinstance(device.get("name"), str), f"{where}.device.name",
                    "a string or null", device.get("name"))
        for key in ("versions", "fingerprint", "metrics"):
            expect(isinstance(cell.get(key, {}), dict), f"{where}.{key}", "an object", cell.get(key))
        _numbers(cell.get("metrics", {}), tuple(cell.get("metrics", {})), f"{where}.metrics")
        expect(isinstance(cell.get("seed_metrics", []), list), f"{where}.seed_metrics", "a list", None)
        for number, metrics in enumerate(cell.get("seed_metrics", [])):
            _numbers(metrics, tuple(metrics) if isinstance(metrics, dict) else (), f"{where}.seed_metrics[{number}]")
        timing = cell.get("timing") or {}
        _numbers(timing, NUMERIC_TIMING, f"{where}.timing")
        if isinstance(timing.get("protocol"), dict):
            check_protocol(timing["protocol"], f"{where}.timing.protocol")
        if timing.get("step_ms") is not None:
            _numbers(timing["step_ms"], ("median", "iqr", "min", "n"), f"{where}.timing.step_ms")
        for key in ("turns", "processes"):
            expect(isinstance(timing.get(key, []), list), f"{where}.timing.{key}", "a list", timing.get(key))
        for number, turn in enumerate(timing.get("turns") or []):
            _numbers(turn, ("process", "round", "position", "start_s"), f"{where}.timing.turns[{number}]")
            blocks = turn.get("block_ms")
            expect(isinstance(blocks, list) and bool(blocks) and all(is_number(v) and v > 0 for v in blocks),
                    f"{where}.timing.turns[{number}].block_ms", "a list of positive numbers", blocks)
        _numbers(cell.get("memory") or {}, ("peak_rss_mb", "device_peak_mb"), f"{where}.memory")
        expect(isinstance(cell.get("curve", []), list), f"{where}.curve", "a list", cell.get("curve"))
        for number, point in enumerate(cell.get("curve") or []):
            _numbers(point, ("epoch", "train_s", "train_loss"), f"{where}.curve[{number}]")
            test = point.get("test", {})
            _numbers(test, tuple(test) if isinstance(test, dict) else (), f"{where}.curve[{number}].test")
        node = cell.get("node")
        expect(node is None or (isinstance(node, dict) and isinstance(node.get("id"), str)), f"{where}.node",
                "null or an object with an id", node)
        if node is not None:
            _numbers(node, ("cores", "usable_cores", "gpus", "memory_gb", "agent_pid"), f"{where}.node")
            expect(isinstance(node.get("labels", {}), dict), f"{where}.node.labels", "an object", node.get("labels"))
    comparisons = data.get("comparisons", [])
    expect(isinstance(comparisons, list), "comparisons", "a list", comparisons)
    for index, comparison in enumerate(comparisons):
        where = f"comparisons[{index}]"
        expect(isinstance(comparison, dict), where, "an object", comparison)
        for key in ("task", "device", "reference", "fastest"):
            expect(isinstance(comparison.get(key), str), f"{where}.{key}", "a string", comparison.get(key))
        expect(isinstance(comparison.get("ratios", []), list), f"{where}.ratios", "a list", None)
        for number, item in enumerate(comparison.get("ratios", [])):
            _numbers(item, ("ratio", "low", "high", "rounds"), f"{where}.ratios[{number}]")
            expect(isinstance(item.get("backend"), str), f"{where}.ratios[{number}].backend", "a string", None)


# ------------------------------------------------------------------------------------ every field, by its type
def describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if arg is type(None) else describe(arg) for arg in args)
    if origin is list:
        return f"a list of {describe(args[0])}s" if args and args[0] is not Any else "a list"
    if origin is dict or hint is dict:
        return "an object"
    if dataclasses.is_dataclass(hint):
        return "an object"
    return {float: "a number", int: "an integer", str: "a string", bool: "true or false"}.get(hint, "a value")


def conforms(value: Any, hint: Any) -> bool:
    """Whether a JSON value can be read as ``hint`` (nested dataclasses are checked field by field elsewhere)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and (not args or all(conforms(item, args[0]) for item in value))
    if origin is dict or hint is dict:
        return isinstance(value, dict) and all(isinstance(key, str) for key in value) and (
            len(args) < 2 or all(conforms(item, args[1]) for item in value.values()))
    if dataclasses.is_dataclass(hint):
        return isinstance(value, dict)
    if hint is float:
        return is_number(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool) and is_number(value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True


def check_fields(cls: type, data: Any, where: str) -> None:
    """Every field of dataclass ``cls`` present in ``data`` has a value of the field's type, checked through nested
    dataclasses, lists and objects of them: the model is built only from documents it can hold, so no reader meets a
    string where it computes with a number. The first wrong value is one :class:`XfbenchError` naming its path."""
    expect(isinstance(data, dict), where, "an object", data)
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        if item.name not in data:
            continue
        value, hint, path = data[item.name], hints[item.name], f"{where}.{item.name}"
        expect(conforms(value, hint), path, describe(hint), value)
        for nested, at in _nested(value, hint, path):
            check_fields(nested, at[0], at[1])


def _nested(value: Any, hint: Any, path: str) -> list[tuple[type, tuple[Any, str]]]:
    """The dataclass values inside ``value`` (itself, items of a list, values of an object), with their paths."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        kinds = [arg for arg in args if arg is not type(None)]
        return _nested(value, kinds[0], path) if value is not None and len(kinds) == 1 else []
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return [(hint, (value, path))]
    if origin is list and args and isinstance(value, list):
        return [found for index, item in enumerate(value) for found in _nested(item, args[0], f"{path}[{index}]")]
    if origin is dict and len(args) == 2 and isinstance(value, dict):
        return [found for key, item in value.items() for found in _nested(item, args[1], f"{path}.{key}")]
    return []
