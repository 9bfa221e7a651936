"""The scheduler's orders, the ratio statistics on synthetic turns with known answers, and the journal's files.

No worker processes here: the scheduler runs plain callables, the statistics get turn tables drawn from a known
model (a true ratio, a machine drift shared by both sides of a round, a per-process offset, turn noise).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from xfbench.compare.results import files, journal
from xfbench.compare.results.cell import Cell, Device, ProcessPhases, Timing, Turn
from xfbench.compare.results.result import Result
from xfbench.compare.schedule import TurnError, round_order, run_rounds
from xfbench.compare.stats.ratios import compare_cells, random_effects, ratio
from xfbench.compare.stats.summary import step_stats
from xfbench.errors import XfbenchError


# ------------------------------------------------------------------------------------------------ schedule
def test_rotation_puts_everyone_in_every_position():
    keys = ["a", "b", "c", "d"]
    orders = [round_order(keys, index, "rotate", None) for index in range(4)]  # type: ignore[arg-type]
    for position in range(4):
        assert sorted(order[position] for order in orders) == keys
    assert round_order(["x", "y"], 1, "rotate", None) == ["y", "x"]  # type: ignore[arg-type]


def test_shuffle_is_seeded():
    import random

    first = [round_order(list("abcdef"), index, "shuffle", random.Random(7)) for index in range(3)]
    second = [round_order(list("abcdef"), index, "shuffle", random.Random(7)) for index in range(3)]
    assert first == second and all(sorted(order) == list("abcdef") for order in first)


def test_unknown_order():
    with pytest.raises(XfbenchError, match="unknown order 'zigzag'; choose one of: rotate, shuffle"):
        round_order(["a"], 0, "zigzag", None)  # type: ignore[arg-type]


def test_a_failing_participant_leaves_and_the_others_go_on():
    calls = {"a": 0}

    def failing() -> int:
        calls["a"] += 1
        if calls["a"] == 2:
            raise TurnError("died")
        return 1

    failures = []
    taken = run_rounds({"a": failing, "b": lambda: 2}, rounds=4, on_failure=lambda key, why: failures.append((key, why)))
    assert failures == [("a", "died")]
    # round 0: a, b; round 1: b, then a fails and leaves; rounds 2 and 3: b alone
    assert [(turn.key, turn.round, turn.position) for turn in taken] == [
        ("a", 0, 0), ("b", 0, 1), ("b", 1, 0), ("b", 2, 0), ("b", 3, 0)]
    starts = [turn.start_s for turn in taken]
    assert starts == sorted(starts)


# ------------------------------------------------------------------------------------------------- stats
def simulate(true_ratio: float, rounds: int, processes: int, rng: np.random.Generator, noise: float = 0.02,
             drift: float = 0.4, offset: float = 0.0) -> tuple[dict, dict]:
    """Turn tables of a target and a reference: each round scales both by the same drift factor (the machine's
    load), each process has a life-long offset, each turn its own noise."""
    target: dict[int, dict[int, float]] = {}
    reference: dict[int, dict[int, float]] = {}
    for process in range(processes):
        target_offset, reference_offset = np.exp(rng.normal(0, offset, size=2))
        for round_index in range(rounds):
            load = math.exp(rng.uniform(-drift, drift))
            target.setdefault(process, {})[round_index] = true_ratio * target_offset * load * math.exp(
                rng.normal(0, noise))
            reference.setdefault(process, {})[round_index] = reference_offset * load * math.exp(rng.normal(0, noise))
    return target, reference


def test_drift_cancels_within_a_round():
    """A load swinging by a factor of 2 from round to round does not move the paired ratio."""
    target, reference = simulate(1.3, rounds=10, processes=1, rng=np.random.default_rng(0), drift=0.7, noise=0.01)
    estimate = ratio(target, reference)
    assert estimate is not None and estimate.low is not None
    assert estimate.ratio == pytest.approx(1.3, rel=0.02)
    assert estimate.low < 1.3 < estimate.high and estimate.high / estimate.low < 1.05
    assert estimate.resolved is True and estimate.rounds == 10


def test_interval_coverage_is_near_95_percent():
    """Over 200 simulated runs (one process pair, 10 rounds), the 95% interval holds the true ratio in at least
    88% of them (bootstrap intervals of 10 samples run a little narrow; a broken one falls far below)."""
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(200):
        target, reference = simulate(1.1, rounds=10, processes=1, rng=rng)
        estimate = ratio(target, reference)
        hits += estimate.low <= 1.1 <= estimate.high  # type: ignore[operator]
    assert hits >= 176, f"coverage {hits / 200:.0%}"


def test_process_offsets_widen_the_interval():
    """With process pairs that disagree (a life-long offset per process), the random-effects interval widens to
    cover them; with agreeing pairs it stays narrow."""
    rng = np.random.default_rng(2)
    agreeing = ratio(*simulate(1.2, rounds=10, processes=3, rng=rng, offset=0.0))
    disagreeing = ratio(*simulate(1.2, rounds=10, processes=3, rng=rng, offset=0.05))
    assert agreeing is not None and disagreeing is not None
    width = lambda estimate: math.log(estimate.high / estimate.low)  # noqa: E731 (in log units)
    assert width(disagreeing) > 1.5 * width(agreeing)
    assert len(disagreeing.per_process) == 3
    assert min(disagreeing.per_process) < disagreeing.ratio < max(disagreeing.per_process)


def test_random_effects_without_heterogeneity_is_the_fixed_effect():
    pooled, error, tau = random_effects([0.1, 0.1, 0.1], [0.01, 0.02, 0.01])
    assert pooled == pytest.approx(0.1) and tau == 0.0
    assert error == pytest.approx(1 / math.sqrt(1 / 0.01**2 + 1 / 0.02**2 + 1 / 0.01**2))


def test_too_few_rounds_give_no_interval():
    estimate = ratio({0: {0: 2.0, 1: 2.2}}, {0: {0: 1.0, 1: 1.0}})
    assert estimate is not None and estimate.low is None and estimate.resolved is None
    assert ratio({0: {0: 1.0}}, {1: {0: 1.0}}) is None  # no process pair in common


def measured_cell(backend: str, table: dict[int, dict[int, float]], session: str = "s") -> Cell:
    turns = [Turn(process, round_index, 0, 0.0, [value, value]) for process, rows in table.items()
             for round_index, value in rows.items()]
    blocks = [value for turn in turns for value in turn.block_ms]
    timing = Timing(step_ms=step_stats(blocks), turns=turns, session=session, protocol={"schedule": "interleaved"},
                    processes=[ProcessPhases(process, peak_rss_mb=100.0) for process in table])
    return Cell("t", backend, Device("cpu", "x"), "ok", timing=timing)


def test_compare_cells_names_the_fastest_and_the_gap():
    rng = np.random.default_rng(3)
    slow, fast = simulate(2.0, rounds=8, processes=2, rng=rng)
    middle, _ = simulate(1.5, rounds=8, processes=2, rng=np.random.default_rng(3))
    cells = [measured_cell("slow", slow), measured_cell("fast", fast), measured_cell("middle", middle),
             Cell("t", "broken", Device("cpu"), "error", error="boom")]
    comparison = compare_cells(cells)
    assert comparison is not None
    assert comparison.reference == comparison.fastest == "fast" and comparison.runner_up == "middle"
    assert comparison.resolved is True and comparison.paired is True
    assert comparison.ratio("slow").ratio == pytest.approx(2.0, rel=0.05)  # type: ignore[union-attr]
    assert comparison.ratio("broken") is None
    assert comparison.workers_peak_rss_mb == 600.0  # 3 backends x 2 processes alive together
    relative = compare_cells(cells, relative_to="slow")
    assert relative.reference == "slow" and relative.fastest == "fast"  # type: ignore[union-attr]
    assert relative.ratio("fast").ratio == pytest.approx(0.5, rel=0.05)  # type: ignore[union-attr]
    fallback = compare_cells(cells, relative_to="broken")
    assert fallback.reference == "fast" and "broken was not measured" in fallback.note  # type: ignore[union-attr]


def test_cells_of_different_sessions_are_not_paired():
    table = {0: {0: 1.0, 1: 1.0, 2: 1.0}}
    comparison = compare_cells([measured_cell("a", table, "one"), measured_cell("b", table, "two")])
    assert comparison is not None and comparison.paired is False
    assert compare_cells([Cell("t", "a", Device("cpu"), "error", error="x")]) is None


# ------------------------------------------------------------------------------------------------ journal
def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "result.json"
    files.write_atomic(path, "old\n")
    assert path.read_text() == "old\n" and oct(path.stat().st_mode & 0o777) == oct(0o666 & ~files._umask())

    def broken_replace(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        files.write_atomic(path, "new\n")
    assert path.read_text() == "old\n"
    assert sorted(os.listdir(tmp_path)) == ["result.json"]  # no temporary file left behind


def test_partial_file_keeps_cells_and_skips_a_torn_last_line(tmp_path):
    target = tmp_path / "run.json"
    result = Result(config={"tasks": ["t"]})
    header = {key: value for key, value in result.to_dict().items() if key not in ("cells", "comparisons")}
    log = journal.Journal(target, header)
    log.append(Cell("t", "a", Device("cpu", "x"), "ok", metrics={"accuracy": 0.5}).to_dict())
    log.append(Cell("t", "b", Device("cpu", "x"), "error", error="boom").to_dict())
    log.close()
    with open(files.partial_path(target), "a", encoding="utf-8") as stream:
        stream.write('{"kind": "cell", "cell": {"task": "t", "back')  # killed mid-write
    loaded = Result.load(target)  # the partial file beside a missing (or older) result is read
    assert loaded.complete is False and [cell.backend for cell in loaded.cells] == ["a", "b"]
    assert loaded.cells[0].metrics == {"accuracy": 0.5} and loaded.config == {"tasks": ["t"]}
    partial = Path(files.partial_path(target))
    text = partial.read_text(encoding="utf-8").splitlines()
    text.insert(1, "{not json")
    partial.write_text("\n".join(text), encoding="utf-8")
    with pytest.raises(XfbenchError, match="line 2 is not JSON"):
        Result.load(target)


def test_finish_writes_the_result_and_removes_the_partial_file(tmp_path):
    target = tmp_path / "run.json"
    log = journal.Journal(target, {"schema_version": 2, "config": {}})
    result = Result(cells=[Cell("t", "a", Device("cpu", "x"), "ok")])
    log.finish(result.to_json())
    assert not os.path.exists(files.partial_path(target))
    assert json.loads(target.read_text())["complete"] is True


@pytest.mark.parametrize(("path", "message"), [
    ("", "the output path is empty"),
    (".", "is a folder; give a file name inside it"),
    ("x" * 300 + ".json", "is too long for this file system"),
])
def test_check_output_rejects(path, message):
    with pytest.raises(XfbenchError, match=message):
        files.check_output(path)


def test_check_output_accepts_missing_folders_and_rejects_a_file_as_folder(tmp_path):
    assert files.check_output(str(tmp_path / "new" / "deeper" / "r.json"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(XfbenchError, match="is a file, not a folder"):
        files.check_output(str(tmp_path / "file" / "r.json"))
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(XfbenchError, match="is not writable"):
            files.check_output(str(locked / "r.json"))
