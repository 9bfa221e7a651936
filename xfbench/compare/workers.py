"""The scheduler's operations on workers, written once: start them (alone or together), prepare a cell in each,
time them in rounds, release the cell, close them. ``xfbench run``'s :class:`~xfbench.compare.runner.Runner` and
``xfbench ab``'s :class:`~xfbench.compare.ab.AbRunner` each drive a :class:`Workers`, so both prepare and time cells
the same way and differ only in which workers they start and in what order.

A worker that crashes, hangs past the timeout (per command) or cannot start fails its cell (``error``, with the
reason) and is dropped; the other cells go on.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from xfbench.compare.cells import CellState
from xfbench.compare.platforms.base import Executor, WorkerError, WorkerHandle, request
from xfbench.compare.platforms.channel import ChannelClosedError
from xfbench.compare.platforms.job import WorkerSpec
from xfbench.compare.protocol import TimingOptions
from xfbench.compare.results.cell import Turn
from xfbench.compare.schedule import TurnError, TurnRecord, run_rounds
from xfbench.progress import Progress


@dataclass
class Slot:
    """Process number ``process`` of one cell's backend (of one arm, in ``xfbench ab``): the worker it runs and,
    while it runs, the worker's handle and its ``ready`` message. ``key`` names it in the timing schedule."""

    spec: WorkerSpec
    process: int
    key: Hashable = None
    name: str = ""
    worker: WorkerHandle | None = None
    ready: dict[str, Any] = field(default_factory=dict)

    @property
    def backend(self) -> str:
        return self.spec.backend

    @property
    def device(self) -> str:
        return self.spec.device

    @property
    def label(self) -> str:
        return f"{self.backend}/{self.device}" + (f" ({self.name})" if self.name else "")


class Workers:
    """Workers of one executor, with the run's per-command timeout and its progress."""

    def __init__(self, executor: Executor, timeout: float, progress: Progress) -> None:
        self.executor = executor
        self.timeout = timeout
        self.progress = progress

    # ------------------------------------------------------------------------------------------ starting
    def request(self, slot: Slot, message: dict[str, Any] | None, expect: str, doing: str) -> dict[str, Any]:
        """One command to the slot's worker and its answer; a worker that fails is dropped (:class:`WorkerError`)."""
        assert slot.worker is not None
        try:
            return request(slot.worker, message, expect, self.timeout, doing)
        except WorkerError:
            slot.worker = None
            raise

    def launch(self, slot: Slot) -> None:
        """Start the slot's worker process (it imports its framework meanwhile; ``ready`` says when it is done)."""
        slot.worker = self.executor.start(slot.spec)

    def start(self, slot: Slot) -> None:
        """The slot's worker started, if it is not yet, and its framework imported."""
        if slot.worker is None:
            self.launch(slot)
        if not slot.ready:
            slot.ready = self.request(slot, None, "ready", "importing the framework")

    def start_together(self, pairs: list[tuple[Slot, CellState]]) -> None:
        """Start the workers of every slot not yet running at once and wait until each has imported its framework
        (an import is mostly one thread, so on a 2-core machine two import in about the time of one). A worker that
        cannot start fails its cell."""
        waiting = []
        for slot, state in pairs:
            if slot.worker is not None:
                continue
            try:
                self.launch(slot)
            except OSError as error:
                state.fail("error", f"cannot start the worker: {error}")
                continue
            waiting.append((slot, state))
        for slot, state in waiting:
            try:
                slot.ready = self.request(slot, None, "ready", "importing the framework")
            except WorkerError as failure:
                state.fail("error", str(failure))

    def close(self, slot: Slot, graceful: bool = True) -> None:
        """End the slot's worker: asked to exit (``graceful``), or killed at once (an interruption: it may be hung)."""
        if slot.worker is not None:
            if graceful:
                slot.worker.close()
            else:
                slot.worker.kill()
            slot.worker = None

    # ----------------------------------------------------------------------------------------- preparing
    def keep_prepared(self, slot: Slot, state: CellState, reply: dict[str, Any]) -> None:
        state.ready[slot.process] = slot.ready
        state.prepared[slot.process] = reply
        if reply.get("status") != "ok":
            state.fail(reply.get("status", "error"), reply.get("error") or "the worker gave no reason")

    def prepare(self, slot: Slot, state: CellState, message: dict[str, Any]) -> None:
        """Start the slot's worker if need be and prepare the cell in it (train or prime, warm up); alone."""
        try:
            self.start(slot)
            reply = self.request(slot, message, "prepared", "running")
        except WorkerError as failure:
            state.fail("error", str(failure))
            return
        self.keep_prepared(slot, state, reply)

    def prepare_together(self, pairs: list[tuple[Slot, CellState]], message: Callable[[Slot], dict[str, Any]]
                         ) -> None:
        """Prepare every slot's cell at once (timing-only processes, whose phase times are not reported): each
        builds the task, runs its priming epoch and warms up while the others do. A worker that fails fails its
        cell, as in :meth:`prepare`."""
        sent = []
        for slot, state in pairs:
            try:
                self.start(slot)
            except WorkerError as failure:
                state.fail("error", str(failure))
                continue
            try:
                slot.worker.send(message(slot))  # type: ignore[union-attr]
            except ChannelClosedError:
                pass  # the worker is gone: awaiting its answer below describes it, as for any command
            sent.append((slot, state))
        for slot, state in sent:
            try:
                self.keep_prepared(slot, state, self.request(slot, None, "prepared", "priming"))
            except WorkerError as failure:
                state.fail("error", str(failure))

    def release(self, slot: Slot, state: CellState) -> None:
        if slot.worker is None:
            return
        try:
            state.released[slot.process] = self.request(slot, {"op": "release"}, "released", "releasing the task")
        except WorkerError:
            pass  # the measurement is complete; the worker is replaced for the next task

    # -------------------------------------------------------------------------------------------- timing
    def _participant(self, slot: Slot, state: CellState, options: TimingOptions) -> Callable[[], dict[str, Any]]:
        def turn() -> dict[str, Any]:
            if state.status != "ok":
                raise TurnError(state.error or "failed")
            try:
                reply = self.request(slot, {"op": "turn", "block_steps": state.block_steps,
                                            "untimed_steps": state.untimed_steps, "turn_s": options.turn_s,
                                            "min_blocks": options.min_blocks}, "turn", "timing")
            except WorkerError as failure:
                state.fail("error", f"during timing: {failure}")
                raise TurnError(str(failure)) from None
            if reply.get("event") == "error":
                state.fail("error", f"during timing: {reply.get('error')}")
                raise TurnError(str(reply.get("error")))
            return reply
        return turn

    def time(self, pairs: list[tuple[Slot, CellState]], options: TimingOptions, order: str | None = None) -> None:
        """Timing rounds (``compare.schedule``) over every (slot, cell) whose cell is still ok and whose block size is
        fixed; each turn is recorded in its cell, under the slot's process."""
        live = [(slot, state) for slot, state in pairs if state.status == "ok" and slot.worker is not None]
        participants = {slot.key: self._participant(slot, state, options) for slot, state in live}
        owners = {slot.key: (slot, state) for slot, state in live}

        def record(turn: TurnRecord) -> None:
            slot, state = owners[turn.key]
            state.turns.append(Turn(slot.process, turn.round, turn.position, round(turn.start_s, 4),
                                    turn.value["block_ms"]))
            state.turn_replies.append(turn.value)

        run_rounds(participants, options.rounds, order or options.order, on_turn=record,
                   warmup_rounds=options.warmup_rounds)
