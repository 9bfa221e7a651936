"""The result of a comparison: one versioned JSON document. Reports and CI gates read only this.

Schema (``schema_version`` 1; documented in docs/schema.md and checked by tests/test_schema.py):
``{"schema_version", "created", "machine": {cpu, cores, os, python, ...}, "config": {...}, "cells": [Cell...]}``.
A cell always has ``task``, ``backend``, ``device`` (``kind``, ``name``), ``status`` (ok / unsupported / error)
and ``error`` (None when ok); measurements are None when they were not taken, never zero.
"""

from __future__ import annotations

import datetime
import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from xfbench.errors import XfbenchError
from xfbench.machine import machine_info

SCHEMA_VERSION = 1
STATUSES = ("ok", "unsupported", "error")


@dataclass
class Cell:
    """One task on one backend and device."""

    task: str
    backend: str
    device: dict[str, str | None]
    status: str
    error: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    threads: int | None = None
    fingerprint: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    seed_metrics: list[dict[str, float]] = field(default_factory=list)
    timing: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, float | None] = field(default_factory=dict)
    parity: dict[str, Any] | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return self.task, self.backend, str(self.device.get("kind"))

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def step_ms(self) -> float | None:
        """Median steady-state step time in ms, or None when not measured."""
        return (self.timing.get("step_ms") or {}).get("median")


@dataclass
class Result:
    """All cells of one run plus the machine they ran on. ``save``/``load`` round-trip through JSON.

    Example:
        >>> result = Result(cells=[Cell("mlp", "torch", {"kind": "cpu", "name": "x"}, "ok")])
        >>> Result.from_json(result.to_json()).cells[0].backend
        'torch'
    """

    cells: list[Cell] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=machine_info)
    created: str = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat())
    schema_version: int = SCHEMA_VERSION

    def cell(self, task: str, backend: str, device: str = "cpu") -> Cell:
        """The cell for (task, backend, device kind)."""
        for cell in self.cells:
            if cell.key == (task, backend, device):
                return cell
        raise XfbenchError(f"no cell for task {task!r}, backend {backend!r}, device {device!r} in this result")

    def to_dict(self) -> dict[str, Any]:
        data = _finite(asdict(self))
        return {"schema_version": data.pop("schema_version"), **data}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False, default=_jsonable)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise XfbenchError(f"result schema_version {version!r} is not supported; this xfbench reads {SCHEMA_VERSION}")
        cells = [Cell(**cell) for cell in data.get("cells", [])]
        return cls(cells=cells, config=data.get("config", {}), machine=data.get("machine", {}),
                   created=data.get("created", ""), schema_version=version)

    @classmethod
    def from_json(cls, text: str) -> Result:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the result as JSON (parent folders are created)."""
        folder = os.path.dirname(os.fspath(path))
        if folder:
            os.makedirs(folder, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Result:
        try:
            with open(path, encoding="utf-8") as handle:
                return cls.from_json(handle.read())
        except FileNotFoundError as error:
            raise XfbenchError(f"no result file at {os.fspath(path)!r}") from error
        except json.JSONDecodeError as error:
            raise XfbenchError(f"{os.fspath(path)!r} is not a JSON result: {error}") from error


def _finite(value: Any) -> Any:
    """Replace NaN / infinity (a diverged loss, say) with None: the JSON stays standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _jsonable(value: Any) -> Any:
    """JSON fallback for NumPy scalars and arrays."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
