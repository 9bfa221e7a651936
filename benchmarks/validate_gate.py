"""How often does ``xfbench ab`` cry wolf, and how often does it catch a real slowdown? Measured, not asserted.

A/A runs: ``xfbench ab`` with the same interpreter in both arms; every cell verdict of ``regression`` is a false
alarm. Injected runs: the same, with the head arm slowed by a known fraction (``--inject-slowdown``: real busy
work added to each timed block, ``xfbench.compare.engine.timing``); every ``regression`` is a detection. Runs alternate
between A/A and the injected levels, so the machine's drift over the hour hits both alike. Every run uses
``xfbench ab``'s default settings (pairs, rounds, turn length, minimum effect, alpha) unless flags after ``--``
change them.

Prints, per kind, the rate with its exact (Clopper-Pearson) 95% interval (``scipy.stats.binomtest``), the
distribution of verdicts, the A/A ratios' mean and spread (a bias check), the settings and the wall time.

    python benchmarks/validate_gate.py                       # 12 A/A runs + 4 injected, about 70 min here
    python benchmarks/validate_gate.py --aa-runs 2 --injected-runs 1 --tasks regression --backends torch
    python benchmarks/validate_gate.py --summarize DIR        # the figures from the runs kept in DIR
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_ab(python: str, tasks: str, backends: str, slowdown: float | None, out: Path, extra: list[str]) -> float:
    command = [python, "-m", "xfbench.cli", "ab", "--base-python", python, "--head-python", python,
               "--tasks", tasks, "--backends", backends, "--json", str(out), "--quiet", *extra]
    if slowdown:
        command += ["--inject-slowdown", str(slowdown)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        sys.exit(f"xfbench ab failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return time.perf_counter() - start


def rate(hits: int, total: int) -> str:
    from scipy import stats

    if total == 0:
        return "no comparisons"
    interval = stats.binomtest(hits, total).proportion_ci(0.95, method="exact")
    return f"{hits}/{total} = {hits / total:.1%} [95% CI {interval.low:.1%}–{interval.high:.1%}]"


def summarize(folder: Path) -> None:
    import numpy as np

    kinds: dict[str, list[dict]] = {}
    walls, config, method = [], {}, "not recorded"
    for path in sorted(folder.glob("run-*.json")):
        document = json.loads(path.read_text())
        if not document.get("complete"):
            continue
        config, method = document["config"], document.get("method", method)
        level = config.get("inject_slowdown")
        kind = "A/A" if not level else f"injected {float(level):.0%}"
        kinds.setdefault(kind, []).extend(item for item in document["verdicts"] if item["verdict"] != "not compared")
        walls.append(document.get("wall_s"))
    timing = config.get("timing") or {}
    print(f"settings: {config.get('pairs')} process pairs x {timing.get('rounds')} rounds of "
          f"{timing.get('turn_s')} s turns, minimum effect {config.get('min_effect')}, alpha {config.get('alpha')} "
          f"(Holm); tasks {','.join(config.get('tasks', []))}; backends {','.join(config.get('backends', []))}; "
          f"{config.get('threads')} threads")
    print(f"method: {method}")
    known = [wall for wall in walls if wall]
    if known:
        print(f"runs: {len(walls)}, {np.mean(known):.0f} s each on average ({sum(known) / 60:.0f} min in all)")
    for kind in sorted(kinds, key=lambda name: (name != "A/A", name)):
        verdicts = kinds[kind]
        counts = Counter(item["verdict"] for item in verdicts)
        hits = counts["regression"]
        label = "false alarms" if kind == "A/A" else "detected"
        print(f"{kind}: {label} {rate(hits, len(verdicts))}; verdicts: "
              + ", ".join(f"{name} {count}" for name, count in counts.most_common()))
        ratios = np.log([item["ratio"] for item in verdicts if item.get("ratio")])
        if ratios.size:
            print(f"  head/base ratios: geometric mean {math.exp(ratios.mean()):.4f}, sd of log {ratios.std():.4f}, "
                  f"range {math.exp(ratios.min()):.3f}–{math.exp(ratios.max()):.3f}")
    aa = kinds.get("A/A", [])
    ten = kinds.get("injected 10%", [])
    print(f"false alarms per cell: {rate(Counter(item['verdict'] for item in aa)['regression'], len(aa))}")
    print(f"detection of 10%: {rate(Counter(item['verdict'] for item in ten)['regression'], len(ten))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--aa-runs", type=int, default=12, help="A/A runs of xfbench ab (default: 12)")
    parser.add_argument("--injected-runs", type=int, default=4, help="injected runs, spread over the levels "
                                                                     "(default: 4)")
    parser.add_argument("--levels", default="0.1,0.05,0.1,0.2", help="injected slowdowns, taken in turn "
                                                                      "(default: 0.1,0.05,0.1,0.2)")
    parser.add_argument("--tasks", default="regression,mlp", help="default: regression,mlp")
    parser.add_argument("--backends", default="torch,jax", help="default: torch,jax (the quickest to start)")
    parser.add_argument("--keep", metavar="DIR", help="keep every run's JSON here (default: a temporary folder)")
    parser.add_argument("--summarize", metavar="DIR", help="only print the figures of the runs kept in DIR")
    parser.add_argument("extra", nargs="*", help="after --: flags passed to every xfbench ab")
    args = parser.parse_args()
    if args.summarize:
        summarize(Path(args.summarize))
        return
    folder = Path(args.keep or tempfile.mkdtemp(prefix="xfbench-gate-"))
    folder.mkdir(parents=True, exist_ok=True)
    levels = [float(level) for level in args.levels.split(",")]
    schedule: list[float | None] = []
    aa, injected = args.aa_runs, args.injected_runs
    while aa or injected:  # A/A and injected runs interleaved, evenly
        if aa and (not injected or aa / max(args.aa_runs, 1) >= injected / max(args.injected_runs, 1)):
            schedule.append(None)
            aa -= 1
        else:
            schedule.append(levels[(args.injected_runs - injected) % len(levels)])
            injected -= 1
    python = sys.executable
    os.environ.setdefault("PYTHONPATH", str(HERE.parent))
    for index, level in enumerate(schedule):
        out = folder / f"run-{index:03d}.json"
        wall = run_ab(python, args.tasks, args.backends, level, out, args.extra)
        document = json.loads(out.read_text())
        document["wall_s"] = wall
        out.write_text(json.dumps(document))
        counts = Counter(item["verdict"] for item in document["verdicts"])
        print(f"run {index + 1}/{len(schedule)} ({'A/A' if level is None else f'head slowed {level:.0%}'}): "
              f"{dict(counts)} in {wall:.0f} s", flush=True)
    print(f"runs kept in {folder}; flags beyond xfbench ab's defaults: {' '.join(args.extra) or 'none'}")
    summarize(folder)


if __name__ == "__main__":
    main()
