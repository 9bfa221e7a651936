"""The CI gate's verdicts as a terminal table and as Markdown that fits ``$GITHUB_STEP_SUMMARY``
(``xfbench ab`` and ``xfbench check``). Reads only verdicts and the settings they were made with."""

from __future__ import annotations

from collections import Counter
from typing import Any

from xfbench.compare.results.ab import VERDICTS, AbResult, Verdict
from xfbench.reports import numbers
from xfbench.reports.markdown import _table, escape
from xfbench.reports.table import grid, printable

MARKS = {"regression": "❌", "missing": "⛔", "failed": "🛑", "improvement": "✅", "no change": "✔️",
         "too noisy to decide": "❔", "not compared": "➖"}
NAMED = ("regression", "missing", "failed")  # verdicts whose cells the headline names
HEADER = ["task", "backend", "device", "base", "head", "head/base [95%]", "verdict", "why"]


def _rows(verdicts: list[Verdict]) -> list[list[str]]:
    return [[item.task, item.backend, item.device, numbers.step_time(item.base_ms), numbers.step_time(item.head_ms),
             f"{numbers.times(item.ratio)} {numbers.interval(item.low, item.high)}" if item.ratio else numbers.MISSING,
             item.verdict, item.reason] for item in verdicts]


def headline(verdicts: list[Verdict]) -> str:
    """One line: what the gate found, e.g. ``1 regression (mlp on torch/cpu), 3 no change``; the cells of every
    verdict that fails the gate are named.

    Example:
        >>> headline([Verdict("mlp", "jax", "cpu", "missing", ""), Verdict("mlp", "torch", "cpu", "no change", "")])
        '1 missing (mlp on jax/cpu), 1 no change'
    """
    counts = Counter(item.verdict for item in verdicts)
    if not counts:
        return "no cells compared"
    parts = []
    for name in VERDICTS:
        if counts[name]:
            label = f"{counts[name]} {name}" + ("s" if name in ("regression", "improvement") and counts[name] > 1 else "")
            if name in NAMED:
                label += f" ({', '.join(cell_name(item) for item in verdicts if item.verdict == name)})"
            parts.append(label)
    return ", ".join(parts)


def cell_name(verdict: Verdict) -> str:
    return f"{verdict.task} on {verdict.backend}/{verdict.device}"


def settings_line(config: dict[str, Any], evidence: str) -> str:
    timing = config.get("timing") or {}
    parts = [evidence, f"minimum effect {config.get('min_effect', 0.05):.0%}", f"α {config.get('alpha', 0.05):g} (Holm)"]
    if config.get("pairs"):
        parts.append(f"{config['pairs']} process pairs × {timing.get('rounds', '?')} rounds of "
                     f"{timing.get('turn_s', '?')} s turns")
    if config.get("threads"):
        parts.append(f"{config['threads']} threads")
    if config.get("inject_slowdown"):
        parts.append(f"TEST ONLY: head slowed by {config['inject_slowdown']}")
    if config.get("allow_missing"):
        parts.append("missing and failed cells allowed (--allow-missing)")
    return "; ".join(parts)


def render_text(verdicts: list[Verdict], config: dict[str, Any], title: str, evidence: str) -> str:
    return "\n".join([printable(f"{title}: {headline(verdicts)}"), printable(settings_line(config, evidence)), "",
                      grid(_rows(verdicts), HEADER)])


def render_markdown(verdicts: list[Verdict], config: dict[str, Any], title: str, evidence: str,
                    arms: dict[str, dict[str, Any]] | None = None) -> str:
    rows = [[f"{MARKS.get(row[6], '')} {row[6]}", *row[:6], row[7]] for row in _rows(verdicts)]
    lines = [f"### {escape(title)}: {escape(headline(verdicts))}", "",
             _table(["verdict", *HEADER[:6], "why"], rows), "", f"_{escape(settings_line(config, evidence))}_"]
    for name, arm in (arms or {}).items():
        commit = (arm.get("commit") or "")[:12]
        lines.append(f"- **{escape(name)}**: `{escape(arm.get('python', ''))}`, xfbench {escape(arm.get('xfbench', '?'))}"
                     + (f" at {escape(commit)}" if commit else ""))
    return "\n".join(lines) + "\n"


AB_TITLE = "xfbench ab"
AB_EVIDENCE = "base and head timed together in alternating turns"


def render_ab(outcome: AbResult, fmt: str = "text") -> str:
    """An ``xfbench ab`` document as the terminal table (``text``) or the Markdown summary (``md``)."""
    if fmt == "md":
        return render_markdown(outcome.verdicts, outcome.config, AB_TITLE, AB_EVIDENCE, outcome.arms)
    return render_text(outcome.verdicts, outcome.config, AB_TITLE, AB_EVIDENCE)
