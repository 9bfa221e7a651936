"""Where workers run, as two small contracts.

A :class:`PlanExecutor` decides where the cells of a whole plan run: on this machine (``compare.runner``'s
``LocalPlanExecutor``, the default, no extra package) or on the nodes of a Ray cluster (``platforms.ray``, which
runs a local plan executor on each node it reserves). Below it, an :class:`Executor` starts the worker processes
of one machine (``platforms.local``) and hands back a :class:`WorkerHandle`, the scheduler's end of one worker.

The scheduler never shares state with a worker: it sends JSON messages and receives JSON messages over a channel
(``platforms.channel``; ``compare.engine.server`` lists the messages). :func:`request` is the one way to ask a
worker something and wait for the answer.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any

from xfbench.compare.platforms.channel import ChannelClosedError
from xfbench.compare.platforms.job import WorkerSpec


class WorkerHandle(ABC):
    """The scheduler's end of one worker."""

    label: str = ""

    @abstractmethod
    def send(self, message: dict[str, Any]) -> None:
        """Send one command; raises :class:`ChannelClosedError` when the worker is gone."""

    @abstractmethod
    def receive(self, deadline: float) -> dict[str, Any] | None:
        """The next message, None at the deadline; raises :class:`ChannelClosedError` when the worker is gone."""

    @abstractmethod
    def kill(self) -> None:
        """Stop the worker now (and everything it started)."""

    @abstractmethod
    def failure(self) -> str:
        """Why the worker is gone: exit code or signal, and the end of its log."""

    @abstractmethod
    def close(self) -> None:
        """Ask the worker to exit and wait for it; kill it if it does not."""


class Executor(ABC):
    """Starts workers; :meth:`close` stops every one still running. Use as a context manager."""

    @abstractmethod
    def start(self, spec: WorkerSpec) -> WorkerHandle:
        """Start a worker for ``spec``; its first message is ``ready`` (or it fails)."""

    @abstractmethod
    def close(self) -> None:
        """Kill every worker still running and remove what the executor created."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PlanExecutor(ABC):
    """Runs the cells of a plan somewhere and hands each finished cell to ``on_cell`` as it arrives.

    :meth:`check` is called before any work starts (a bad address or label is one line there); :meth:`describe` is
    recorded in the result's ``config.executor``; :meth:`close` releases what :meth:`check` acquired.
    """

    kind = "local"

    def check(self, plan: Any) -> None:
        """Validate the request against where it will run (connect, find nodes); raise XfbenchError if it cannot."""
        return None  # this machine was checked by the plan

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind}

    @abstractmethod
    def run(self, plan: Any, progress: Any, on_cell: Any, done: list[Any]) -> None:
        """Run every cell of ``plan`` not already among the ``done`` cells; every process it started is gone when
        this returns or raises (Ctrl-C included)."""

    def close(self) -> None:
        """Release what :meth:`check` acquired (e.g. a cluster started for the run)."""
        return None

    def __enter__(self) -> PlanExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WorkerError(Exception):
    """A worker crashed, hung past its deadline or could not start; the message says which and why."""


def request(worker: WorkerHandle, message: dict[str, Any] | None, expect: str, timeout: float, doing: str
            ) -> dict[str, Any]:
    """Send ``message`` (None: send nothing, e.g. to await ``ready``) and return the worker's answer ``expect`` (or its
    ``error`` answer). A worker that does not answer within ``timeout`` seconds is killed; a worker that is gone is
    described. Both raise :class:`WorkerError`, whose message names what it was ``doing``."""
    deadline = time.monotonic() + timeout
    try:
        if message is not None:
            worker.send(message)
        while True:
            reply = worker.receive(deadline)
            if reply is None:
                worker.kill()
                raise WorkerError(f"timed out after {timeout:g} s ({doing})")
            if reply.get("event") in (expect, "error"):
                return reply
    except ChannelClosedError:
        reason = worker.failure()
        worker.kill()
        raise WorkerError(reason) from None
