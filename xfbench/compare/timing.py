"""The one timing harness. Every backend's steps are timed by this code and no other.

Protocol (recorded in every result cell under ``timing.protocol``):
- the first step (trace / compile) is timed alone, between two device syncs, and reported apart;
- warm-up steps run for ``warmup_s`` and are not recorded;
- steady state is timed in blocks of ``block_steps`` steps with one device sync at the end of each block and
  no host copies inside it; ``block_steps`` is calibrated so a block lasts at least ``min_block_s``;
- blocks are collected until at least ``min_blocks`` and ``budget_s`` seconds (or ``max_blocks``);
- the per-step time of a block is its time / block_steps; we report the median, IQR, min and number of blocks;
- a trace/compile during timed blocks (the backend's compile counter moved) is reported as ``recompiles``;
- the process's minor page faults during timed blocks, per step, as ``page_faults_per_step``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from xfbench.backends.base import Trainer


@dataclass(frozen=True)
class TimingOptions:
    """How long and how finely to time the steady state. ``quick()`` is for tests."""

    warmup_s: float = 0.3
    min_block_s: float = 0.05
    min_blocks: int = 10
    max_blocks: int = 200
    budget_s: float = 2.0

    @classmethod
    def quick(cls) -> TimingOptions:
        return cls(warmup_s=0.02, min_block_s=0.005, min_blocks=5, max_blocks=50, budget_s=0.1)


def summarize(samples_ms: list[float]) -> dict[str, float | int]:
    """Median, IQR (q75 - q25), min and count of per-step times in milliseconds.

    Example:
        >>> summarize([1.0, 2.0, 3.0, 4.0, 100.0])
        {'median': 3.0, 'iqr': 2.0, 'min': 1.0, 'n': 5}
    """
    values = np.asarray(samples_ms, dtype=np.float64)
    q25, median, q75 = np.percentile(values, [25, 50, 75])
    return {"median": float(median), "iqr": float(q75 - q25), "min": float(values.min()), "n": int(values.size)}


def time_first_step(trainer: Trainer) -> float:
    """Seconds for one step (including any trace/compile), synced before and after."""
    trainer.sync()
    start = time.perf_counter()
    trainer.sync(trainer.train_step(0))
    return time.perf_counter() - start


def minor_page_faults() -> int | None:
    """Minor page faults of this process so far (None where the OS does not count them). Memory a step frees to
    the OS and touches again shows up here: see ``compare.allocator``."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class StepTimer:
    """Runs a trainer's steady-state steps in synced blocks, cycling through the current epoch's batches.

    ``measure_steady_state`` is built from it; a harness that interleaves blocks with another process (the
    adapter-overhead benchmark) calls ``warm_up`` once and ``time_block`` on demand.
    """

    def __init__(self, trainer: Trainer, steps_per_epoch: int) -> None:
        self.trainer = trainer
        self.steps_per_epoch = steps_per_epoch
        self.batch = 0

    def run(self, num_steps: int) -> None:
        """``num_steps`` steps with no host copies between them, then one device sync."""
        loss = None
        for _ in range(num_steps):
            loss = self.trainer.train_step(self.batch)
            self.batch = (self.batch + 1) % self.steps_per_epoch
        self.trainer.sync(loss)

    def warm_up(self, options: TimingOptions) -> int:
        """Untimed steps for ``options.warmup_s`` (at least 3); returns the block size that lasts
        ``options.min_block_s``."""
        self.trainer.sync()
        warm_steps, chunk, start = 0, 1, time.perf_counter()
        while warm_steps < 3 or time.perf_counter() - start < options.warmup_s:
            self.run(chunk)
            warm_steps, chunk = warm_steps + chunk, min(2 * chunk, 64)
        per_step = (time.perf_counter() - start) / warm_steps
        return max(1, math.ceil(options.min_block_s / max(per_step, 1e-9)))

    def time_block(self, block_steps: int) -> float:
        """Milliseconds per step of one synced block of ``block_steps`` steps."""
        start = time.perf_counter()
        self.run(block_steps)
        return (time.perf_counter() - start) * 1e3 / block_steps


def measure_steady_state(timer: StepTimer, options: TimingOptions) -> dict[str, Any]:
    """Time steady-state steps: warm-up, then synced blocks until the options' budget is spent.

    Returns ``step_ms`` statistics, ``block_steps``, ``timed_steps``, ``recompiles`` (None where the backend
    does not compile) and ``page_faults_per_step`` (None where the OS does not count them).
    """
    block_steps = timer.warm_up(options)
    compiles_before = timer.trainer.compile_count()
    faults_before = minor_page_faults()
    samples_ms: list[float] = []
    started = time.perf_counter()
    while len(samples_ms) < options.max_blocks:
        samples_ms.append(timer.time_block(block_steps))
        elapsed = time.perf_counter() - started
        if len(samples_ms) >= options.min_blocks and elapsed >= options.budget_s:
            break
        if len(samples_ms) >= max(3, options.min_blocks // 2) and elapsed >= 4 * options.budget_s:
            break  # very slow steps: fewer blocks rather than a run that never ends
    faults = minor_page_faults()
    compiles_after = timer.trainer.compile_count()
    recompiles = None if compiles_before is None or compiles_after is None else compiles_after - compiles_before
    return {
        "step_ms": summarize(samples_ms),
        "block_steps": block_steps,
        "timed_steps": block_steps * len(samples_ms),
        "recompiles": recompiles,
        "page_faults_per_step": (None if faults is None  # the OS counts both readings or neither
                                 else (faults - faults_before) / (block_steps * len(samples_ms))),
    }


def protocol(options: TimingOptions) -> dict[str, Any]:
    """The measurement settings, recorded in each cell."""
    return {"sync": "one device sync per block", **asdict(options)}
