"""The document of an ``xfbench ab`` run: both arms' results (the schema of ``results.result``), the two
environments, and one :class:`Verdict` per cell. The gate's statistics that produce the verdicts live in
``compare.stats.gate``; the runner that measures them in ``compare.ab``.
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from xfbench.compare.results.cell import known_fields
from xfbench.compare.results.files import jsonable, write_atomic
from xfbench.compare.results.journal import read_document
from xfbench.compare.results.result import Result, document_result
from xfbench.compare.results.schema import check_fields, conforms, describe, expect
from xfbench.errors import XfbenchError
from xfbench.machine import machine_info

AB_SCHEMA_VERSION = 1
AB_KIND = "xfbench-ab"
AB_CONFIG = {"min_effect": float, "alpha": float, "pairs": int, "timing": dict, "inject_slowdown": str | None,
             "allow_missing": bool}  # what the gate's renderers read of an ab document's config
VERDICTS = ("regression", "missing", "failed", "improvement", "no change", "too noisy to decide", "not compared")
FAILING = ("regression", "missing", "failed")  # verdicts that fail the gate (exit code 1)
ALLOWED_MISSING = ("missing", "failed")  # ... except these, when the user allows cells not measured


@dataclass
class Verdict:
    """The gate's answer for one cell (``p_value``: the Holm-corrected p of the direction of the estimate)."""

    task: str
    backend: str
    device: str
    verdict: str
    reason: str
    ratio: float | None = None
    low: float | None = None
    high: float | None = None
    p_value: float | None = None
    replicates: int = 0
    base_ms: float | None = None
    head_ms: float | None = None
    per_pair: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        return cls(**known_fields(cls, data))


def exit_code(verdicts: list[Verdict], allow_missing: bool = False) -> int:
    """1 when any cell's verdict fails the gate (a confirmed regression; a cell missing or failed, unless
    ``allow_missing``), else 0.

    Example:
        >>> missing = [Verdict("mlp", "torch", "cpu", "no change", ""), Verdict("mlp", "jax", "cpu", "missing", "")]
        >>> exit_code(missing), exit_code(missing, allow_missing=True)
        (1, 0)
    """
    failing = set(FAILING) - (set(ALLOWED_MISSING) if allow_missing else set())
    return 1 if any(item.verdict in failing for item in verdicts) else 0


@dataclass
class AbResult:
    """An ``ab`` run: the base and head results (the same schema as ``xfbench run``'s), the arms, the verdicts."""

    base: Result
    head: Result
    arms: dict[str, dict[str, Any]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    verdicts: list[Verdict] = field(default_factory=list)
    created: str = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat())
    machine: dict[str, Any] = field(default_factory=machine_info)
    complete: bool = True
    method: str = ""

    @property
    def exit_code(self) -> int:
        return exit_code(self.verdicts, bool(self.config.get("allow_missing", False)))

    def regressions(self) -> list[Verdict]:
        return [item for item in self.verdicts if item.verdict == "regression"]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": AB_KIND, "schema_version": AB_SCHEMA_VERSION, "created": self.created,
                "complete": self.complete, "machine": self.machine, "config": self.config, "arms": self.arms,
                "method": self.method, "verdicts": [item.to_dict() for item in self.verdicts],
                "base": self.base.to_dict(), "head": self.head.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AbResult:
        """An ``ab`` comparison from its JSON document; a malformed one is one :class:`XfbenchError` naming the field."""
        if not isinstance(data, dict) or data.get("kind") != AB_KIND:
            raise XfbenchError(f"not an xfbench ab result (no \"kind\": \"{AB_KIND}\")")
        check_fields(cls, data, "comparison")
        for index, item in enumerate(data.get("verdicts", [])):
            expect(isinstance(item, dict) and item.get("verdict") in VERDICTS, f"verdicts[{index}].verdict",
                   f"one of {', '.join(VERDICTS)}", item.get("verdict") if isinstance(item, dict) else item)
        config = data.get("config", {})
        for key, kind in AB_CONFIG.items():
            expect(key not in config or conforms(config[key], kind), f"config.{key}", describe(kind), config.get(key))
        return cls(base=Result.from_dict(data["base"]), head=Result.from_dict(data["head"]),
                   arms=data.get("arms", {}), config=data.get("config", {}),
                   verdicts=[Verdict.from_dict(item) for item in data.get("verdicts", [])],
                   created=data.get("created", ""), machine=data.get("machine", {}),
                   complete=bool(data.get("complete", True)), method=data.get("method", ""))

    def save(self, path: str | os.PathLike[str]) -> None:
        write_atomic(path, json.dumps(self.to_dict(), indent=1, allow_nan=False, default=jsonable) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AbResult:
        """Read an ``ab`` document; a file that is not one is one :class:`XfbenchError` naming it."""
        path = os.fspath(path)
        return ab_document(repr(path), read_document(path))


def ab_document(where: str, document: Any) -> AbResult:
    """``AbResult.from_dict`` with every failure as one line naming ``where`` it came from (a quoted file name)."""
    try:
        return AbResult.from_dict(document)
    except XfbenchError as error:
        raise XfbenchError(f"{where}: {error}") from None
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        raise XfbenchError(f"{where} is not a valid xfbench ab comparison: {type(error).__name__}: {error}") from None


def load_any(path: str | os.PathLike[str]) -> Result | AbResult:
    """Any document xfbench writes: a run result (or the partial file of one) or an ``ab`` comparison."""
    path = os.fspath(path)
    document = read_document(path)
    if isinstance(document, dict) and document.get("kind") == AB_KIND:
        return ab_document(repr(path), document)
    return document_result(repr(path), document)
