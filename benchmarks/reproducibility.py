"""Do two identical `xfbench run`s give the same between-backend ratios? Interleaved vs sequential timing.

Runs ``xfbench run`` (the same tasks and flags) ``--runs`` times with the default interleaved schedule and
``--runs`` times with ``--sequential`` (one backend after another, the way xfbench timed before), alternating the two
run by run so both meet the same machine. For every task and pair of backends it takes the step-time ratio each run
reported (from the result's comparisons: each backend's ratio to the run's reference, divided), and prints its
spread across the runs: max / min - 1. Then, per mode, whether the 95% intervals a run prints hold across runs: of
every two runs and every ratio to a run's reference backend, how often the two estimates differ by more than their
joint interval (sqrt(se1^2 + se2^2) x 1.96, the se read from each interval on the log scale): about 5% if each
run's interval covered what changes from run to run. The last line is ``max spread: X%`` over every task and pair,
interleaved.

Usage: python benchmarks/reproducibility.py [--runs 5] [--tasks mlp,cnn28] [--backends ...] [--json PATH]
                                            [-- more xfbench run flags, e.g. -- --rounds 20]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

MODES = ("interleaved", "sequential")
Z95 = 1.959964


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per mode (default: %(default)s)")
    parser.add_argument("--tasks", default="mlp,cnn28", help="xfbench run --tasks (default: %(default)s)")
    parser.add_argument("--backends", default="tf-graph,tf-eager,torch,jax",
                        help="xfbench run --backends (default: %(default)s)")
    parser.add_argument("--modes", default=",".join(MODES), help="interleaved, sequential or both (default: both)")
    parser.add_argument("--json", metavar="PATH", help="also write every run's ratios as JSON")
    parser.add_argument("--keep", metavar="DIR", help="keep every run's result file in DIR")
    parser.add_argument("extra", nargs="*", help="more flags for xfbench run (after --)")
    args = parser.parse_args()
    if args.runs < 2:
        parser.error(f"--runs must be at least 2, got {args.runs}")
    args.modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    unknown = [mode for mode in args.modes if mode not in MODES]
    if unknown or not args.modes:
        parser.error(f"unknown mode {unknown[0] if unknown else ''!r}; choose from: {', '.join(MODES)}")
    return args


Ratios = dict[tuple[str, str, str], float]
Intervals = dict[tuple[str, str, str], tuple[float, float]]


def one_run(args: argparse.Namespace, mode: str, path: str) -> tuple[Ratios, Intervals]:
    """One ``xfbench run``: the step-time ratio of every pair of backends of every task, (task, a, b) -> a / b; and
    every ratio to the run's reference with its interval, (task, reference, backend) -> (log ratio, its se)."""
    import xfbench

    command = [sys.executable, "-m", "xfbench", "run", "--tasks", args.tasks, "--backends", args.backends,
               "--json", path, "--quiet", *(["--sequential"] if mode == "sequential" else []), *args.extra]
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"xfbench run failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    result = xfbench.load(path)
    ratios = {}
    for comparison in result.comparisons:
        values = {ratio.backend: ratio.ratio for ratio in comparison.ratios}
        for first, second in itertools.combinations(args.backends.split(","), 2):
            if first in values and second in values:
                ratios[(comparison.task, first, second)] = values[first] / values[second]
    return ratios, intervals_of(result)


def intervals_of(result: Any) -> Intervals:  # result: an xfbench.Result
    """Every ratio to the run's reference that has an interval: (task, reference, backend) -> (log ratio, its se)."""
    intervals = {}
    for comparison in result.comparisons:
        for ratio in comparison.ratios:
            if ratio.backend != comparison.reference and ratio.low and ratio.high:
                se = (math.log(ratio.high) - math.log(ratio.low)) / (2 * Z95)
                intervals[(comparison.task, comparison.reference, ratio.backend)] = (math.log(ratio.ratio), se)
    return intervals


def beyond_intervals(runs: list[Intervals]) -> tuple[int, int]:
    """Of every two runs and every ratio both have: how many differ by more than their joint 95% interval, of how many.

    Example:
        >>> key = ("mlp", "jax", "torch")
        >>> beyond_intervals([{key: (0.0, 0.01)}, {key: (0.1, 0.01)}, {key: (0.005, 0.01)}])
        (2, 3)
    """
    beyond = total = 0
    for first, second in itertools.combinations(runs, 2):
        for key in set(first) & set(second):
            (x, se_x), (y, se_y) = first[key], second[key]
            total += 1
            beyond += abs(x - y) > Z95 * math.hypot(se_x, se_y)
    return beyond, total


def spread(values: list[float]) -> float:
    """max / min - 1 of positive values.

    Example:
        >>> round(spread([1.0, 1.05, 0.98]), 4)
        0.0714
    """
    return max(values) / min(values) - 1


def main() -> int:
    args = parse_args()
    from tabulate import tabulate

    runs: dict[str, list[Ratios]] = {mode: [] for mode in args.modes}
    intervals: dict[str, list[Intervals]] = {mode: [] for mode in args.modes}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="xfbench-repro-") as scratch:
        folder = args.keep or scratch
        os.makedirs(folder, exist_ok=True)
        for index in range(args.runs):
            order = args.modes if index % 2 == 0 else args.modes[::-1]
            for mode in order:
                ratios, bounds = one_run(args, mode, os.path.join(folder, f"{mode}-{index}.json"))
                runs[mode].append(ratios)
                intervals[mode].append(bounds)
                print(f"run {index + 1}/{args.runs} {mode} done [{time.perf_counter() - started:.0f} s]",
                      file=sys.stderr, flush=True)
    keys = sorted(set.intersection(*(set(ratios) for mode in args.modes for ratios in runs[mode])),
                  key=lambda key: (args.tasks.split(",").index(key[0]), key[1:]))
    rows, spreads = [], {mode: {} for mode in args.modes}
    for key in keys:
        row = [key[0], f"{key[1]} / {key[2]}"]
        for mode in args.modes:
            values = [ratios[key] for ratios in runs[mode]]
            spreads[mode][key] = spread(values)
            row += [" ".join(f"{value:.3f}" for value in values), f"{spreads[mode][key]:.1%}"]
        rows.append(row)
    headers = ["task", "step-time ratio"]
    for mode in args.modes:
        headers += [f"{mode}: per run", f"{mode} spread"]
    print(tabulate(rows, headers=headers, disable_numparse=True))
    print(f"\n{args.runs} runs per mode of xfbench run --tasks {args.tasks} --backends {args.backends} "
          f"{' '.join(args.extra)}".rstrip() + f"; spread = max / min - 1 across runs; total "
          f"{time.perf_counter() - started:.0f} s")
    for mode in args.modes:
        beyond, total = beyond_intervals(intervals[mode])
        if total:
            print(f"{mode}: {beyond} of {total} ({beyond / total:.0%}) run pairs x ratios differ beyond their joint 95% "
                  "interval (about 5% if each run's interval covered what changes between runs)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({mode: [{" ".join(key): value for key, value in ratios.items()} for ratios in runs[mode]]
                       for mode in args.modes}, handle, indent=1)
    for mode in args.modes[::-1]:
        print(f"max spread{'' if mode == 'interleaved' else f' ({mode})'}: {max(spreads[mode].values()):.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
