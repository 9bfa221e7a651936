"""Do the other workers of an interleaved run disturb the one being timed?

In ``xfbench run`` every worker of a task stays alive while the others take their turns, and a turn starts right
after another worker's turn ended: that worker's thread pools may still spin (OpenMP, Eigen), and its memory stays
resident. Each turn therefore begins with untimed steps (``TimingOptions.untimed_s``). This script measures, for one
target backend, with the other backends' workers alive and prepared on the same task, with ``xfbench run``'s turn
protocol:

1. ``after another``: the target's turn starts right after another worker's turn (as in ``xfbench run``);
2. ``after quiet``: the target's turn starts after ``--gap`` seconds in which no worker ran;
3. ``no untimed start``: as 1, but the turn skips its untimed steps (what they buy).

The three kinds of turn take place in every round, in rotating order, so the machine's drift cancels in the ratios
1 / 2 and 3 / 2 (median over rounds, with the interquartile range). Then, to see what idle workers cost just by
being alive, it times the target in quiet turns with the other workers alive and after they have exited, in
``--cycles`` alternations (the others are started afresh each cycle), and prints the ratio alive / exited.

Usage: python benchmarks/idle_workers.py [--backend torch] [--task cnn28] [--rounds 20] [--cycles 3] [--gap 0.5]
The last line is ``idle workers: after another / after quiet X.XX, alive / exited Y.YY``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

BACKENDS = ("tf-graph", "tf-eager", "torch", "jax")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="torch", help="the backend timed (default: %(default)s)")
    parser.add_argument("--task", default="cnn28", help="a built-in task (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=20, help="rounds of the three kinds of turn (default: 20)")
    parser.add_argument("--cycles", type=int, default=3, help="alive / exited alternations (default: 3)")
    parser.add_argument("--turns", type=int, default=5, help="quiet turns per alive or exited phase (default: 5)")
    parser.add_argument("--gap", type=float, default=0.5, help="seconds of quiet before a quiet turn (default: 0.5)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    if args.backend not in BACKENDS:
        parser.error(f"unknown backend {args.backend!r}; choose from: {', '.join(BACKENDS)}")
    for name in ("rounds", "cycles", "turns"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if not args.gap >= 0:
        parser.error(f"--gap must be >= 0, got {args.gap}")
    return args


class Worker:
    """One xfbench worker process prepared on the task, timed through the commands ``xfbench run`` sends."""

    def __init__(self, executor: Any, backend: str, task: Any, threads: int) -> None:
        from xfbench.compare.engine.timing import block_steps_for
        from xfbench.compare.platforms.base import request
        from xfbench.compare.platforms.job import WorkerSpec
        from xfbench.compare.protocol import TimingOptions

        self.name = backend
        self.handle = executor.start(WorkerSpec(backend, "cpu", threads, [task]))
        request(self.handle, None, "ready", 600, "importing")
        reply = request(self.handle, {"op": "prepare", "task": 0, "process": 0, "warmup_s": TimingOptions.warmup_s},
                        "prepared", 600, "training")
        if reply.get("status") != "ok":
            raise SystemExit(f"{backend}: {reply.get('error')}")
        self.block_steps = block_steps_for(reply["seconds_per_step"], TimingOptions.min_block_s)
        self.untimed_steps = TimingOptions().untimed_steps(reply["seconds_per_step"], self.block_steps)

    def turn(self, untimed: bool = True) -> float:
        from xfbench.compare.platforms.base import request
        from xfbench.compare.protocol import TimingOptions

        reply = request(self.handle, {"op": "turn", "block_steps": self.block_steps, "turn_s": TimingOptions.turn_s,
                                      "min_blocks": TimingOptions.min_blocks, "untimed_blocks": 0,
                                      "untimed_steps": self.untimed_steps if untimed else None},
                        "turn", 600, "timing")
        return statistics.median(reply["block_ms"])

    def close(self) -> None:
        self.handle.close()


def quiet_turns(worker: Worker, count: int, gap: float) -> list[float]:
    """``count`` turns, each after ``gap`` seconds in which no worker ran."""
    values = []
    for _ in range(count):
        time.sleep(gap)
        values.append(worker.turn())
    return values


def quartiles(values: list[float]) -> str:
    q1, median, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3
    return f"{median:.3f} (IQR {q1:.3f}-{q3:.3f}, {len(values)} rounds)"


def main() -> int:
    args = parse_args()
    from xfbench.compare.engine.server import configure_process
    from xfbench.compare.platforms.local import LocalExecutor
    from xfbench.machine import cpu_name
    from xfbench.tasks import get_task

    configure_process(args.threads)
    task = get_task(args.task)
    others_names = [name for name in BACKENDS if name != args.backend]
    started = time.perf_counter()
    with LocalExecutor() as executor:
        target = Worker(executor, args.backend, task, args.threads)
        others = [Worker(executor, name, task, args.threads) for name in others_names]
        print(f"{len(others) + 1} workers prepared [{time.perf_counter() - started:.0f} s]", file=sys.stderr)
        kinds = ("after another", "after quiet", "no untimed start")
        values: dict[str, list[float]] = {kind: [] for kind in kinds}
        for round_index in range(args.rounds):
            shift = round_index % len(kinds)
            for kind in kinds[shift:] + kinds[:shift]:
                if kind == "after quiet":
                    time.sleep(args.gap)
                    values[kind].append(target.turn())
                else:
                    others[round_index % len(others)].turn()
                    values[kind].append(target.turn(untimed=kind != "no untimed start"))
        busy = [a / b for a, b in zip(values["after another"], values["after quiet"], strict=True)]
        bare = [a / b for a, b in zip(values["no untimed start"], values["after quiet"], strict=True)]
        alive_ratios = []
        for cycle in range(args.cycles):
            alive = quiet_turns(target, args.turns, args.gap)
            for worker in others:
                worker.close()
            exited = quiet_turns(target, args.turns, args.gap)
            alive_ratios.append(statistics.median(alive) / statistics.median(exited))
            if cycle + 1 < args.cycles:
                others = [Worker(executor, name, task, args.threads) for name in others_names]
            print(f"cycle {cycle + 1}/{args.cycles}: alive / exited {alive_ratios[-1]:.3f} "
                  f"[{time.perf_counter() - started:.0f} s]", file=sys.stderr)
    print(f"{args.backend} on {args.task}, {args.threads} threads, {cpu_name()}; other workers: "
          f"{', '.join(others_names)}; median per-step ms of quiet turns {statistics.median(values['after quiet']):.3g}")
    print(f"after another worker's turn / after {args.gap:g} s quiet: {quartiles(busy)}")
    print(f"same, without the untimed start:        {quartiles(bare)}")
    print(f"other workers alive / exited (quiet turns, {args.cycles} cycles of {args.turns} turns each): "
          f"{' '.join(f'{ratio:.3f}' for ratio in alive_ratios)}")
    print(f"idle workers: after another / after quiet {statistics.median(busy):.2f}, "
          f"alive / exited {statistics.median(alive_ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
