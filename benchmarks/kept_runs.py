"""What the kept runs of ``benchmarks/reproducibility.py --keep DIR`` say about where the ratios' spread comes from.

1. **Blocks per turn.** For every task and pair of backends, the ratio of each run is re-estimated from the same
   turns (per process pair, the 20% trimmed mean over rounds of the log ratio of the two turns, processes
   averaged) once with each turn's median block and once with its first block only; printed: the root mean square
   over pairs of the between-run standard deviation of the log ratio. When the two are close, a turn's further
   blocks add little: the noise is the turn's own, and shorter turns in more rounds buy more precision per second.
2. **Intervals across runs.** As ``reproducibility.py`` prints at its end: of every two runs and every ratio to a
   run's reference, how many differ by more than their joint 95% interval (about 5% if the intervals held).
3. **Between runs vs within a run.** For every ratio to a run's reference present in every run: the between-run sd
   of its log, the root mean square of the runs' own standard errors (from their 95% intervals), and the excess
   sd, sqrt(between^2 - within^2): what changes from run to run that no run's interval sees.
4. **Load elasticity.** Per task, each run's *state*: the mean over backends of the log median step time, centred
   over runs (how much slower the whole machine ran in that run). Per backend, the slope of its own centred log
   step time on the state (``scipy.stats.linregress``). Equal slopes would leave the ratios unchanged when the
   machine slows; unequal ones move a ratio by (slope difference x state change) however well each run is timed.
5. **Per-process medians.** For one backend and task (``--backend``, ``--task``), each run's per-process median
   step time: whether a backend's speed moved with its processes or with the whole run.

Usage: python benchmarks/kept_runs.py DIR [--mode interleaved] [--backend jax] [--task mlp]
"""

from __future__ import annotations

import argparse
import glob
import itertools
import math
import os
import statistics
import sys
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

if TYPE_CHECKING:
    from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="the --keep DIR of benchmarks/reproducibility.py")
    parser.add_argument("--mode", default="interleaved", choices=("interleaved", "sequential"),
                        help="which kept runs (default: %(default)s)")
    parser.add_argument("--backend", default="jax", help="backend of the per-process medians (default: %(default)s)")
    parser.add_argument("--task", default="mlp", help="task of the per-process medians (default: %(default)s)")
    args = parser.parse_args()
    args.files = sorted(glob.glob(os.path.join(args.folder, f"{args.mode}-*.json")),
                        key=lambda path: int(path.rsplit("-", 1)[1].split(".")[0]))
    if len(args.files) < 2:
        parser.error(f"need at least 2 kept {args.mode} runs in {args.folder!r}, found {len(args.files)}")
    return args


def load(path: str) -> tuple[dict[tuple[str, str], Any], Any]:
    """A kept run's measured cells by (task, backend), and the run's intervals (``reproducibility.intervals_of``)."""
    from reproducibility import intervals_of

    import xfbench

    result = xfbench.load(path)
    cells = {(cell.task, cell.backend): cell for cell in result.cells if cell.ok and cell.timing.turns}
    return cells, intervals_of(result)


def log_ratio(first: Any, second: Any, value: Callable[[list[float]], float]) -> float:
    """Per process pair the trimmed mean over rounds of log(first / second) (``xfbench run``'s 20%), averaged over
    the pairs; ``value`` makes a turn's value of its blocks."""
    from xfbench.compare.stats.ratios import TRIM, turn_table

    a, b = (turn_table(cell, lambda turn: value(turn.block_ms)) for cell in (first, second))
    estimates = []
    for process in sorted(set(a) & set(b)):
        logs = [math.log(a[process][r] / b[process][r]) for r in sorted(set(a[process]) & set(b[process]))]
        estimates.append(float(stats.trim_mean(logs, TRIM)))
    return float(np.mean(estimates))


def rms(values: Any) -> float:
    """Root mean square."""
    return math.sqrt(float(np.mean(np.square(values))))


def between_and_within(runs: list[Any]) -> dict[tuple[str, str, str], tuple[float, float, float]]:
    """Section 3. ``runs``: each run's ``reproducibility.intervals_of``. Per ratio that every run has: its between-run
    sd of the log, the rms of the runs' own standard errors, and the excess sd.

    Example:
        >>> key = ("mlp", "jax", "torch")
        >>> [round(v, 3) for v in between_and_within([{key: (0.0, 0.01)}, {key: (0.1, 0.01)}])[key]]
        [0.071, 0.01, 0.07]
    """
    rows = {}
    for key in sorted(set.intersection(*(set(run) for run in runs))):
        between = float(np.std([run[key][0] for run in runs], ddof=1))
        within = rms([run[key][1] for run in runs])
        rows[key] = (between, within, math.sqrt(max(0.0, between**2 - within**2)))
    return rows


def slopes_on_state(levels: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Section 4. ``levels``: log step times, one row per run, one column per backend. Returns the levels centred over
    runs, each run's state (their row means) and each backend's least-squares slope on it.

    Example:
        >>> state = np.array([-0.1, 0.0, 0.1])
        >>> _, _, slopes = slopes_on_state(np.column_stack([0.5 * state + 1.0, 1.5 * state - 2.0]))
        >>> [round(slope, 2) for slope in slopes]
        [0.5, 1.5]
    """
    centred = levels - levels.mean(axis=0)
    state = centred.mean(axis=1)
    if np.ptp(state) == 0:
        return centred, state, [math.nan] * levels.shape[1]
    return centred, state, [float(stats.linregress(state, column).slope) for column in centred.T]


def print_load_elasticity(runs: list[dict[tuple[str, str], Any]], keys: set[tuple[str, str]]) -> None:
    from xfbench.compare.stats.ratios import turn_table

    for task in sorted({task for task, _ in keys}):
        names = sorted(backend for other, backend in keys if other == task)
        levels = np.array([[math.log(statistics.median(value for rounds in turn_table(run[(task, name)]).values()
                                                       for value in rounds.values())) for name in names]
                           for run in runs])
        centred, state, slopes = slopes_on_state(levels)
        print(f"{task}: machine state per run (mean log step time over backends, centred): "
              + " ".join(f"{100 * value:+.0f}%" for value in state))
        for column, (name, slope) in enumerate(zip(names, slopes, strict=True)):
            print(f"  {name:9s} per run " + " ".join(f"{100 * value:+4.0f}%" for value in centred[:, column])
                  + f"   slope on the state {slope:.2f}")


def print_between_and_within(runs: list[Any]) -> None:
    rows = between_and_within(runs)
    if not rows:
        return
    print("ratio to the reference      between-run sd  within-run se  excess sd")
    for (task, reference, backend), row in rows.items():
        print(f"  {task:6s} {backend + ' / ' + reference:19s} " + "  ".join(f"{100 * v:12.2f}%" for v in row))
    print("  rms over ratios            " + "  ".join(f"{100 * rms(column):12.2f}%"
                                             for column in zip(*rows.values(), strict=True)))


def main() -> int:
    args = parse_args()
    from reproducibility import beyond_intervals

    loaded = [load(path) for path in args.files]
    runs = [cells for cells, _ in loaded]
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
        print(f"between-run sd of the log ratios, {label}: {100 * rms(sds):.2f}% "
              f"(rms over {len(sds)} task x pair)")
    beyond, total = beyond_intervals([intervals for _, intervals in loaded])
    if total:
        print(f"{beyond} of {total} ({beyond / total:.0%}) run pairs x ratios differ beyond their joint 95% interval")
    print_between_and_within([intervals for _, intervals in loaded])
    print_load_elasticity(runs, keys)
    key = (args.task, args.backend)
    if key not in keys:
        present = ", ".join(f"{backend} on {task}" for task, backend in sorted(keys))
        print(f"kept_runs.py: no {args.backend} cell on {args.task} in every run; choose from: {present}",
              file=sys.stderr)
        return 1
    print(f"{args.backend} on {args.task}, median ms per step of each process's turns, per run:")
    for path, run in zip(args.files, runs, strict=True):
        from xfbench.compare.stats.ratios import turn_table

        medians = [statistics.median(rounds.values()) for _, rounds in sorted(turn_table(run[key]).items())]
        print(f"  {os.path.basename(path)}: " + " ".join(f"{value:.4g}" for value in medians))
    return 0


if __name__ == "__main__":
    sys.exit(main())
