"""What the kept runs of ``benchmarks/reproducibility.py --keep DIR`` say about where the ratios' spread comes from.

1. **Blocks per turn.** For every task and pair of backends, the ratio of each run is re-estimated from the same
   turns (per process pair, the 20% trimmed mean over rounds of the log ratio of the two turns, processes
   averaged) once with each turn's median block and once with its first block only; printed: the root mean square
   over pairs of the between-run standard deviation of the log ratio. When the two are close, a turn's further
   blocks add little: the noise is the turn's own, and shorter turns in more rounds buy more precision per second.
2. **Per-process medians.** For one backend and task (``--backend``, ``--task``), each run's per-process median
   step time: whether a backend's speed moved with its processes or with the whole run.

Usage: python benchmarks/kept_runs.py DIR [--mode interleaved] [--backend jax] [--task mlp]
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import math
import os
import statistics
import sys

import numpy as np
from scipy import stats


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="the --keep DIR of benchmarks/reproducibility.py")
    parser.add_argument("--mode", default="interleaved", help="interleaved or sequential (default: %(default)s)")
    parser.add_argument("--backend", default="jax", help="backend of the per-process medians (default: %(default)s)")
    parser.add_argument("--task", default="mlp", help="task of the per-process medians (default: %(default)s)")
    args = parser.parse_args()
    args.files = sorted(glob.glob(os.path.join(args.folder, f"{args.mode}-*.json")),
                        key=lambda path: int(path.rsplit("-", 1)[1].split(".")[0]))
    if len(args.files) < 2:
        parser.error(f"need at least 2 kept {args.mode} runs in {args.folder!r}, found {len(args.files)}")
    return args


def turns_of(path: str) -> dict[tuple[str, str], list[dict]]:
    with open(path, encoding="utf-8") as handle:
        result = json.load(handle)
    return {(cell["task"], cell["backend"]): cell["timing"]["turns"] for cell in result["cells"]
            if cell["status"] == "ok" and cell["timing"].get("turns")}


def log_ratio(first: list[dict], second: list[dict], value) -> float:
    """Per process pair the 20% trimmed mean over rounds of log(first / second), averaged over the pairs."""
    a = {(turn["process"], turn["round"]): value(turn["block_ms"]) for turn in first}
    b = {(turn["process"], turn["round"]): value(turn["block_ms"]) for turn in second}
    estimates = []
    for process in sorted({key[0] for key in a} & {key[0] for key in b}):
        logs = [math.log(a[key] / b[key]) for key in a if key[0] == process and key in b]
        estimates.append(float(stats.trim_mean(logs, 0.2)))
    return float(np.mean(estimates))


def main() -> int:
    args = parse_args()
    runs = [turns_of(path) for path in args.files]
    keys = set.intersection(*(set(run) for run in runs))
    tasks = sorted({task for task, _ in keys})
    values = {"every block (median)": statistics.median, "first block only": lambda blocks: blocks[0]}
    print(f"{len(runs)} {args.mode} runs in {args.folder}")
    for label, value in values.items():
        sds = []
        for task in tasks:
            names = sorted(backend for other, backend in keys if other == task)
            for first, second in itertools.combinations(names, 2):
                ratios = [log_ratio(run[(task, first)], run[(task, second)], value) for run in runs]
                sds.append(float(np.std(ratios, ddof=1)))
        print(f"between-run sd of the log ratios, {label}: {100 * math.sqrt(np.mean(np.square(sds))):.2f}% "
              f"(rms over {len(sds)} task x pair)")
    key = (args.task, args.backend)
    if key not in keys:
        print(f"no {args.backend} cells on {args.task} in every run", file=sys.stderr)
        return 1
    print(f"{args.backend} on {args.task}, median ms per step of each process's turns, per run:")
    for path, run in zip(args.files, runs, strict=True):
        processes = sorted({turn["process"] for turn in run[key]})
        medians = [statistics.median(statistics.median(turn["block_ms"]) for turn in run[key]
                                     if turn["process"] == process) for process in processes]
        print(f"  {os.path.basename(path)}: " + " ".join(f"{value:.4g}" for value in medians))
    return 0


if __name__ == "__main__":
    sys.exit(main())
