"""How much does the same native training loop vary from one process to the next on this machine, and why
does native_overhead.py compare processes turn by turn?

1. Runs one hand-written loop (benchmarks/native) ``--runs`` times, each in a fresh process, one after another,
   and prints the spread of the median step times and the minor page faults per step. On a shared machine this
   spread limits how precisely whole-process rounds can estimate an xfbench / native ratio.
2. Starts ``--pairs`` pairs of two identical native processes that take ``--turns`` alternating turns (as
   native_overhead.py does with native vs xfbench) and prints each pair's median ratio B / A: what "equal" looks
   like under this protocol.

Usage: python benchmarks/process_noise.py [--backend tf-eager] [--workload mlp] [--runs 10] [--seconds 1.5]
                                          [--pairs 3] [--turns 10] [--malloc steady]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from native_overhead import MODES, native_command, take_turns


def run_once(args: argparse.Namespace, env: dict[str, str]) -> dict:
    """The JSON line of one fresh native process timing ``args.workload`` once."""
    done = subprocess.run(native_command(args.backend, args.threads, (args.workload,), args.seconds),
                          capture_output=True, text=True, timeout=600, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"native {args.backend} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="tf-eager", choices=list(MODES))
    parser.add_argument("--workload", default="mlp", choices=("mlp", "cnn"))
    parser.add_argument("--runs", type=int, default=10, help="fresh processes, one after another (default: 10)")
    parser.add_argument("--seconds", type=float, default=1.5, help="timed seconds per process (default: 1.5)")
    parser.add_argument("--pairs", type=int, default=3, help="pairs of identical processes in turns (default: 3)")
    parser.add_argument("--turns", type=int, default=10, help="turns of 0.25 s per pair (default: 10)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--malloc", default="steady", choices=("steady", "system"),
                        help="C allocator policy, as xfbench run --malloc (default: %(default)s)")
    args = parser.parse_args()
    if args.runs < 2:
        parser.error(f"--runs must be at least 2, got {args.runs}")
    if args.pairs < 0 or args.turns < 1:
        parser.error(f"--pairs must be at least 0 and --turns at least 1, got {args.pairs} and {args.turns}")
    if not args.seconds > 0:
        parser.error(f"--seconds must be positive, got {args.seconds}")
    from xfbench.compare.platforms.allocator import worker_env

    env = worker_env(args.malloc, os.environ)
    what = f"{args.backend} {args.workload}, malloc {args.malloc}"
    medians, faults = [], []
    for run in range(args.runs):
        line = run_once(args, env)
        medians.append(line["step_ms"]["median"])
        faults.append(line["page_faults_per_step"])
        print(f"run {run + 1}/{args.runs}: {medians[-1]:.3f} ms, {faults[-1]:.0f} page faults/step", file=sys.stderr,
              flush=True)
    center = statistics.median(medians)
    print(f"{what}: {args.runs} fresh processes, median step {center:.3f} ms, range {min(medians):.3f}-"
          f"{max(medians):.3f} ms ({min(medians) / center - 1:+.0%} / {max(medians) / center - 1:+.0%}), stdev "
          f"{statistics.stdev(medians) / center:.0%} of the median; minor page faults per step "
          f"{min(faults):.0f}-{max(faults):.0f}")
    ratios = []
    for _ in range(args.pairs):
        command = native_command(args.backend, args.threads, (args.workload,), serve=True)
        turns = take_turns({"A": command, "B": command}, env, args.turns, 0.25, (args.workload,))[args.workload]
        ratios.append(statistics.median(b / a for a, b in zip(turns["A"], turns["B"], strict=True)))
    if ratios:
        print(f"{what}: {args.pairs} pairs of identical processes, {args.turns} turns each: median ratio B / A per "
              f"pair {' '.join(f'{ratio:.3f}' for ratio in ratios)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
