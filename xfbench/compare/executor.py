"""Where worker processes live, and the channel the scheduler speaks to them through.

Two levels. A :class:`PlanExecutor` decides where the cells of a whole plan run: on this machine
(``runner.LocalPlanExecutor``, the default, no extra package) or on the nodes of a Ray cluster
(``ray_executor.RayPlanExecutor``, which runs a ``LocalPlanExecutor`` on each node it reserves). Below it, an
:class:`Executor` starts the worker processes of one machine.

The scheduler (``compare.runner``) never shares state with a worker: it sends JSON messages and receives JSON
messages (``compare.worker`` lists them), one per line, over a :class:`Channel`. An :class:`Executor` starts
workers and hands back a :class:`WorkerHandle`; :class:`LocalExecutor`, the default, runs each worker as a fresh
local process. Another executor can place workers elsewhere without the scheduler changing.

Local isolation rules:
- a worker's stdout/stderr (framework logs) go to a log file; messages travel on two pipes of their own;
- each worker runs in its own session (a Ctrl-C on the terminal reaches only the parent, which stops them);
- a worker dies with its parent (``PR_SET_PDEATHSIG`` on Linux, and end-of-file on its command pipe), so no worker
  outlives the run, even after a ``kill -9`` of the parent;
- :meth:`Executor.close` kills every worker still running and removes the temporary folder; a folder left by a run
  that was killed with ``kill -9`` (its name carries the run's pid) is removed by the next run that starts.
"""

from __future__ import annotations

import json
import os
import pickle
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from xfbench.compare.allocator import DEFAULT_POLICY, worker_env
from xfbench.tasks import Task

PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ChannelClosedError(Exception):
    """The other end of a channel is gone (the worker exited, or the parent did)."""


class Channel:
    """JSON messages, one per line, read from ``read_fd`` and written to ``write_fd``."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        self._buffer = b""
        self.closed = False

    def send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message, allow_nan=True, default=_jsonable) + "\n").encode()
        try:
            while data:
                data = data[os.write(self.write_fd, data):]
        except (BrokenPipeError, OSError) as error:
            raise ChannelClosedError(str(error)) from error

    def receive(self, deadline: float | None = None) -> dict[str, Any] | None:
        """The next message; None when ``deadline`` (a ``time.monotonic()`` value) passes first; raises
        :class:`ChannelClosedError` at end of file."""
        while b"\n" not in self._buffer:
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                return None
            ready, _, _ = select.select([self.read_fd], [], [], None if timeout is None else min(timeout, 1.0))
            if not ready:
                continue
            chunk = os.read(self.read_fd, 1 << 16)
            if not chunk:
                raise ChannelClosedError("end of file")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for fd in {self.read_fd, self.write_fd}:
            try:
                os.close(fd)
            except OSError:
                pass


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@dataclass
class WorkerSpec:
    """One worker: a backend on a device with ``threads`` threads, able to prepare any of ``tasks`` (by index).

    ``python``: the interpreter to run it with (another virtual environment, for ``xfbench ab``); that environment's
    own installed xfbench serves the worker. None: this interpreter and this xfbench. ``env``: extra environment
    variables for the worker.
    """

    backend: str
    device: str
    threads: int
    tasks: list[Task] = field(default_factory=list)
    malloc: str = DEFAULT_POLICY
    python: str | None = None
    env: dict[str, str] = field(default_factory=dict)


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


def _log_tail(path: str, lines: int = 3) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = [line.strip() for line in handle.read().splitlines() if line.strip()]
    except OSError:
        return ""
    return " | ".join(text[-lines:])


class LocalWorker(WorkerHandle):
    """A worker process on this machine (``python -m xfbench.compare.worker``)."""

    def __init__(self, spec: WorkerSpec, folder: str) -> None:
        self.label = f"{spec.backend}/{spec.device}"
        stem = os.path.join(folder, f"worker-{time.monotonic_ns()}")
        self.job_path, self.log_path = stem + ".pkl", stem + ".log"
        with open(self.job_path, "wb") as handle:  # written and read by xfbench itself: internal transport only
            pickle.dump(spec, handle)
        command_read, command_write = os.pipe()
        event_read, event_write = os.pipe()
        env = worker_env(spec.malloc, {**os.environ, **spec.env})
        if spec.python is None:  # another interpreter imports its own environment's xfbench, not this one
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, env.get("PYTHONPATH")]))
        env["XFBENCH_PARENT_PID"] = str(os.getpid())
        try:
            with open(self.log_path, "wb") as log:
                self.process = subprocess.Popen(
                    [spec.python or sys.executable, "-m", "xfbench.compare.worker", self.job_path, str(command_read),
                     str(event_write)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    pass_fds=(command_read, event_write), env=env, start_new_session=True,
                    # ``-m`` puts the working directory first on sys.path: another environment's worker starts in
                    # the run's folder, or a checkout it was started from would shadow that environment's xfbench
                    cwd=folder if spec.python is not None else None,
                )
        finally:
            os.close(command_read)
            os.close(event_write)
        self.channel = Channel(event_read, command_write)

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, message: dict[str, Any]) -> None:
        self.channel.send(message)

    def receive(self, deadline: float) -> dict[str, Any] | None:
        return self.channel.receive(deadline)

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()
        self.channel.close()

    def close(self) -> None:
        try:
            self.send({"op": "exit"})
        except ChannelClosedError:
            pass
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        self.kill()

    def failure(self) -> str:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        tail = _log_tail(self.log_path)
        how = f"worker exited with code {code}" if code is not None else "worker stopped answering"
        if code is not None and code < 0:
            how = f"worker killed by signal {signal.Signals(-code).name}"
        return f"{how}{': ' + tail if tail else ''}"


FOLDER_PREFIX = "xfbench-run-"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def sweep_stale_folders(parent: str | None = None) -> list[str]:
    """Remove the temporary folders of runs that are gone (killed with ``kill -9``); returns what was removed."""
    parent = parent or tempfile.gettempdir()
    removed = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(FOLDER_PREFIX):
            continue
        pid_text = name[len(FOLDER_PREFIX):].split("-", 1)[0]
        path = os.path.join(parent, name)
        try:
            owned = os.stat(path).st_uid == os.getuid()
        except OSError:
            continue
        if owned and pid_text.isdigit() and not _process_alive(int(pid_text)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


class LocalExecutor(Executor):
    """Workers as fresh processes on this machine, with their job files and logs in a temporary folder."""

    def __init__(self) -> None:
        sweep_stale_folders()
        self.folder = tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-")
        self.workers: list[LocalWorker] = []

    def start(self, spec: WorkerSpec) -> WorkerHandle:
        worker = LocalWorker(spec, self.folder)
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.kill()
            else:
                worker.channel.close()
        self.workers.clear()
        shutil.rmtree(self.folder, ignore_errors=True)
