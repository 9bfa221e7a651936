"""The result of a comparison: one versioned JSON document of cells (``results.cell``) and the step-time
comparisons between backends computed from them. Reports and CI gates read only this.

``Result.save`` writes it atomically (``results.files``); ``Result.load`` reads a result or the partial file of an
unfinished run (``results.journal``), migrated and checked (``results.schema``). What a result shows of itself but
is computed elsewhere (its ratios, its notebook HTML, its charts) goes through ``results.views``.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

from xfbench._version import __version__
from xfbench.compare.results.cell import Cell, Node, known_fields
from xfbench.compare.results.files import finite, jsonable, write_atomic
from xfbench.compare.results.journal import read_document
from xfbench.compare.results.schema import SCHEMA_VERSION, check_document, check_fields, expect, migrate
from xfbench.compare.results.views import view
from xfbench.errors import XfbenchError
from xfbench.machine import machine_info


def software_versions() -> dict[str, str]:
    """xfbench's, NumPy's, SciPy's and Python's versions, recorded in every result (frameworks are per cell)."""
    import numpy
    import scipy

    return {"xfbench": __version__, "numpy": numpy.__version__, "scipy": scipy.__version__,
            "python": platform.python_version()}


# ------------------------------------------------------------------------------------------ comparisons
@dataclass
class Ratio:
    """One backend's step time relative to the comparison's reference backend, with its 95% interval.

    ``per_process``: the ratio of each process pair alone (process p of this backend vs process p of the reference).
    ``resolved``: the interval excludes 1.0, i.e. the difference is real at the 95% level.
    """

    backend: str
    ratio: float
    low: float | None = None
    high: float | None = None
    per_process: list[float] = field(default_factory=list)
    rounds: int = 0
    resolved: bool | None = None


@dataclass
class Comparison:
    """Step-time ratios of every ok backend of one task and device (on one node), relative to ``reference``."""

    task: str
    device: str
    reference: str
    ratios: list[Ratio]
    fastest: str
    runner_up: str | None = None
    resolved: bool | None = None
    paired: bool = True
    method: str = ""
    workers_peak_rss_mb: float | None = None
    note: str | None = None
    node: str | None = None

    def ratio(self, backend: str) -> Ratio | None:
        return next((item for item in self.ratios if item.backend == backend), None)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Comparison:
        values = known_fields(cls, data)
        values["ratios"] = [Ratio(**known_fields(Ratio, item)) for item in values.get("ratios", [])]
        return cls(**values)


# ------------------------------------------------------------------------------------------------ result
@dataclass
class Result:
    """All cells of one run plus the machine they ran on. ``save``/``load`` round-trip through JSON.

    Example:
        >>> from xfbench.compare.results.cell import Device
        >>> result = Result(cells=[Cell("mlp", "torch", Device("cpu", "x"), "ok")])
        >>> Result.from_json(result.to_json()).cells[0].backend
        'torch'
    """

    cells: list[Cell] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=machine_info)
    created: str = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat())
    versions: dict[str, str] = field(default_factory=software_versions)
    comparisons: list[Comparison] = field(default_factory=list)
    complete: bool = True
    schema_version: int = SCHEMA_VERSION

    def cell(self, task: str, backend: str, device: str = "cpu", node: str | None = None) -> Cell:
        """The cell for (task, backend, device kind); ``node``: a node id (or its start) where the same matrix ran
        on several nodes (``--on-each``)."""
        found = [cell for cell in self.cells if cell.key == (task, backend, device)
                 and (node is None or (cell.node_id or "").startswith(node))]
        if len(found) > 1:
            raise XfbenchError(f"task {task!r} on {backend!r}/{device} ran on {len(found)} nodes; choose one with "
                               f"node=: {', '.join(cell.node_id or 'local' for cell in found)}")
        if found:
            return found[0]
        raise XfbenchError(f"no cell for task {task!r}, backend {backend!r}, device {device!r}"
                           f"{f', node {node!r}' if node else ''} in this result")

    def nodes(self) -> list[Node]:
        """The distinct nodes the cells ran on, in order (empty for a local run)."""
        seen: dict[str, Node] = {}
        for cell in self.cells:
            if cell.node is not None:
                seen.setdefault(cell.node.id, cell.node)
        return list(seen.values())

    def comparison(self, task: str, device: str = "cpu", node: str | None = None) -> Comparison | None:
        """The step-time ratios of (task, device) on ``node`` (a node id; None: the local run, or the one node
        the task ran on), or None when fewer than one backend measured."""
        found = [item for item in self.comparisons if (item.task, item.device) == (task, device)]
        if node is not None:
            found = [item for item in found if item.node == node]
        else:
            found = [item for item in found if item.node is None] or found
        return found[0] if len(found) == 1 else None

    def compare(self, relative_to: str | None = None) -> None:
        """(Re)compute ``comparisons`` from the cells' raw timed turns; ``relative_to`` names the reference
        backend (default: the fastest of each task and device). Backends are compared only within one node: cells
        timed on different machines are never paired. (Computed by ``compare.stats.ratios.compare_result``.)"""
        view("compare")(self, relative_to)

    def _repr_html_(self) -> str:
        """The tables as HTML, for Jupyter (``reports.html.tables``)."""
        return view("html")(self)

    def plot(self, kinds: str | list[str] | None = None, task: str | None = None, target: float | None = None
             ) -> list[Any]:
        """matplotlib figures of this result: per task and device, ``kinds`` of ``step-time``, ``throughput``,
        ``quality``, ``phases``, ``curves``, ``distribution`` (default: all that have data).

        Example:
            >>> Result().plot()
            []
        """
        return view("plot")(self, kinds, task, target)

    def to_dict(self) -> dict[str, Any]:
        return finite({
            "schema_version": self.schema_version, "created": self.created, "complete": self.complete,
            "versions": self.versions, "machine": self.machine, "config": self.config,
            "cells": [cell.to_dict() for cell in self.cells],
            "comparisons": [asdict(comparison) for comparison in self.comparisons],
        })

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=False, default=jsonable)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        """A result from its JSON document; a malformed document is one :class:`XfbenchError` naming the field."""
        if not isinstance(data, dict):
            raise XfbenchError(f"a result is a JSON object, got {type(data).__name__}")
        data = migrate(data)
        check_document(data)
        for index, cell in enumerate(data.get("cells", [])):
            check_fields(Cell, cell, f"cells[{index}]")
        for index, comparison in enumerate(data.get("comparisons", [])):
            check_fields(Comparison, comparison, f"comparisons[{index}]")
        expect(isinstance(data.get("versions", {}), dict) and all(
            isinstance(value, str) for value in data.get("versions", {}).values()), "versions", "an object of strings",
            data.get("versions"))
        return cls(cells=[Cell.from_dict(cell) for cell in data.get("cells", [])], config=data.get("config", {}),
                   machine=data.get("machine", {}), created=data.get("created", ""),
                   versions=data.get("versions", {}),
                   comparisons=[Comparison.from_dict(item) for item in data.get("comparisons", [])],
                   complete=bool(data.get("complete", True)), schema_version=SCHEMA_VERSION)

    @classmethod
    def from_json(cls, text: str) -> Result:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the result as JSON, atomically: a temporary file in the same folder, flushed to disk, renamed over
        ``path`` (parent folders are created). A crash mid-write leaves the previous file as it was."""
        write_atomic(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Result:
        """Read a result file, or the partial file of an interrupted run (``PATH.partial``); a file that is not a
        result is one :class:`XfbenchError` naming it."""
        path = os.fspath(path)
        return document_result(repr(path), read_document(path))


def document_result(where: str, document: Any, what: str = "result") -> Result:
    """``Result.from_dict`` with every failure as one line naming ``where`` it came from (a quoted file name)."""
    try:
        return Result.from_dict(document)
    except XfbenchError as error:
        raise XfbenchError(f"{where}: {error}") from None
    except (TypeError, ValueError, KeyError, AttributeError) as error:  # a shape check_document does not cover
        raise XfbenchError(f"{where} is not a valid xfbench {what}: {type(error).__name__}: {error}") from None
