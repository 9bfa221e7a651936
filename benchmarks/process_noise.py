"""How much does the same native training loop vary from one fresh process to the next on this machine?

Runs one hand-written loop (benchmarks/native) ``--runs`` times, each in a fresh process, and prints the median
step times and their spread. On a shared machine this process-to-process spread, not the adapters, limits how
precisely ``native_overhead.py`` can estimate an xfbench / native ratio from a few rounds.

Usage: python benchmarks/process_noise.py [--backend tf-eager] [--workload mlp] [--runs 10] [--seconds 1.5] [--malloc steady]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from native_overhead import MODES, run_native


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="tf-eager", choices=sorted(MODES))
    parser.add_argument("--workload", default="mlp", choices=("mlp", "cnn"))
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--malloc", default="steady", choices=("steady", "system"),
                        help="C allocator policy, as xfbench run --malloc (default: %(default)s)")
    args = parser.parse_args()
    if args.runs < 2:
        parser.error(f"--runs must be at least 2, got {args.runs}")
    medians = []
    for run in range(args.runs):
        medians.append(run_native(args.backend, args, workloads=(args.workload,))[args.workload])
        print(f"run {run + 1}/{args.runs}: {medians[-1]:.3f} ms", file=sys.stderr, flush=True)
    center = statistics.median(medians)
    print(f"{args.backend} {args.workload}: {args.runs} fresh processes, median step {center:.3f} ms, "
          f"range {min(medians):.3f}-{max(medians):.3f} ms ({min(medians) / center - 1:+.0%} / "
          f"{max(medians) / center - 1:+.0%}), stdev {statistics.stdev(medians) / center:.0%} of the median")
    return 0


if __name__ == "__main__":
    sys.exit(main())
