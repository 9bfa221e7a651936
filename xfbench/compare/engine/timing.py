"""The one timing harness. Every backend's steps are timed by this code and no other.

Protocol (recorded in every result cell under ``timing.protocol``):
- the first step (trace / compile) is timed alone, between two device syncs, and reported apart;
- warm-up steps run for ``warmup_s`` and are not recorded; they also estimate the time per step, from which the
  scheduler fixes ``block_steps`` per task and backend (the same in every process of that backend) so a block
  lasts at least ``min_block_s``;
- steady state is timed in **turns**: untimed steps first (thread pools and caches were just used by another
  process: ``untimed_s`` seconds' worth, or one block when None), then synced blocks of ``block_steps`` steps, one
  device sync at the end of each block and no host copies inside it, until ``turn_s`` seconds and ``min_blocks``
  blocks; the per-step time of a block is its time / ``block_steps``;
- the scheduler (``compare.schedule``) gives every live worker of a task one turn per round, for ``warmup_rounds``
  unrecorded rounds and then ``rounds`` rounds, in an order that rotates (or is shuffled) from round to round, with
  ``processes`` fresh worker processes per backend; ``schedule="sequential"`` instead times each backend's turns
  back to back, one backend after another;
- a trace/compile during timed blocks (the backend's compile counter moved) is reported as ``recompiles``;
- the process's minor page faults during timed blocks, per step, as ``page_faults_per_step``.

Test-only knob: ``XFBENCH_TEST_SLOWDOWN`` (a fraction such as ``0.1``, or per backend ``torch=0.1,jax=0.2``) makes
every timed block of a worker that fraction longer with real busy work on the worker's own thread (never a sleep),
so a gate's detection power can be measured against a known slowdown (``benchmarks/validate_gate.py``,
``xfbench ab --inject-slowdown``). Every turn reports the fraction it used; a result carries it in each turn reply.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

from xfbench.backends.base import Trainer
from xfbench.errors import XfbenchError


def time_first_step(trainer: Trainer) -> tuple[float, Any]:
    """Seconds for one step (including any trace/compile), synced before and after; and the step's loss."""
    trainer.sync()
    start = time.perf_counter()
    loss = trainer.train_step(0)
    trainer.sync(loss)
    return time.perf_counter() - start, loss


def minor_page_faults() -> int | None:
    """Minor page faults of this process so far (None where the OS does not count them). Memory a step frees to
    the OS and touches again shows up here: see ``compare.allocator``."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


SLOWDOWN_ENV = "XFBENCH_TEST_SLOWDOWN"


def injected_slowdown(backend: str, value: str | None = None) -> float:
    """The test-only slowdown fraction ``XFBENCH_TEST_SLOWDOWN`` asks of ``backend`` (0.0 when unset).

    Example:
        >>> injected_slowdown("torch", "jax=0.2,torch=0.1"), injected_slowdown("jax", "0.05"), injected_slowdown("jax", "")
        (0.1, 0.05, 0.0)
    """
    text = os.environ.get(SLOWDOWN_ENV, "") if value is None else value
    text = text.strip()
    if not text:
        return 0.0
    try:
        if "=" not in text:
            return float(text)
        for item in text.split(","):
            name, _, fraction = item.partition("=")
            if name.strip() == backend:
                return float(fraction)
    except ValueError:
        raise XfbenchError(f"{SLOWDOWN_ENV}={text!r} must be a fraction (0.1) or BACKEND=FRACTION,... (test only)"
                           ) from None
    return 0.0


def busy_until(deadline: float) -> None:
    """Real CPU work on this thread until ``time.perf_counter()`` passes ``deadline`` (the injected slowdown)."""
    value = 1.0
    while time.perf_counter() < deadline:
        for _ in range(200):
            value = value * 1.0000001 + 1e-9


class StepTimer:
    """Runs a trainer's steady-state steps in synced blocks, cycling through the current epoch's batches.
    ``slowdown``: the test-only injected slowdown (see the module's notes); 0.0 for every real measurement."""

    def __init__(self, trainer: Trainer, steps_per_epoch: int, slowdown: float = 0.0) -> None:
        self.trainer = trainer
        self.steps_per_epoch = steps_per_epoch
        self.batch = 0
        self.slowdown = slowdown

    def run(self, num_steps: int) -> None:
        """``num_steps`` steps with no host copies between them, then one device sync."""
        loss = None
        for _ in range(num_steps):
            loss = self.trainer.train_step(self.batch)
            self.batch = (self.batch + 1) % self.steps_per_epoch
        self.trainer.sync(loss)

    def warm_up(self, warmup_s: float) -> float:
        """Untimed steps for ``warmup_s`` seconds (at least 3); returns the seconds per step they took."""
        self.trainer.sync()
        warm_steps, chunk, start = 0, 1, time.perf_counter()
        while warm_steps < 3 or time.perf_counter() - start < warmup_s:
            self.run(chunk)
            warm_steps, chunk = warm_steps + chunk, min(2 * chunk, 64)
        return (time.perf_counter() - start) / warm_steps

    def time_block(self, block_steps: int) -> float:
        """Milliseconds per step of one synced block of ``block_steps`` steps."""
        start = time.perf_counter()
        self.run(block_steps)
        if self.slowdown:
            busy_until(start + (time.perf_counter() - start) * (1 + self.slowdown))
        return (time.perf_counter() - start) * 1e3 / block_steps

    def turn(self, block_steps: int, turn_s: float, min_blocks: int, untimed_blocks: int = 1,
             untimed_steps: int | None = None) -> dict[str, Any]:
        """One turn: untimed steps (``untimed_steps``, or ``untimed_blocks`` blocks when None), then timed blocks until
        ``turn_s`` seconds and ``min_blocks`` blocks. (``untimed_blocks=0`` drops the untimed start:
        benchmarks/idle_workers.py measures what it buys.)

        Returns ``block_ms`` (ms per step of each timed block), ``steps`` (timed steps), ``page_faults`` during the
        timed blocks (None where not counted) and ``compiles`` (the trainer's compile counter after the turn).
        """
        if untimed_steps is not None:
            self.run(untimed_steps)
        else:
            for _ in range(untimed_blocks):
                self.run(block_steps)
        faults_before = minor_page_faults()
        block_ms: list[float] = []
        start = time.perf_counter()
        while len(block_ms) < min_blocks or time.perf_counter() - start < turn_s:
            block_ms.append(self.time_block(block_steps))
        faults = minor_page_faults()
        return {"block_ms": block_ms, "steps": block_steps * len(block_ms),
                "page_faults": None if faults is None or faults_before is None else faults - faults_before,
                "compiles": self.trainer.compile_count(), "injected_slowdown": self.slowdown}


def block_steps_for(seconds_per_step: float, min_block_s: float) -> int:
    """Steps per timed block so that one block lasts at least ``min_block_s``.

    Example:
        >>> block_steps_for(0.001, 0.04)
        40
    """
    return max(1, math.ceil(min_block_s / max(seconds_per_step, 1e-9)))
