"""Workers as fresh processes on this machine (the default executor).

The scheduler never shares state with a worker: it speaks to it over a channel (``platforms.channel``), and the
worker learns what it is from its job file (``platforms.job``). A worker runs ``python -m xfbench.compare.worker``,
with this interpreter and this xfbench, or with another environment's interpreter and that environment's own
xfbench (``xfbench ab``).

Isolation rules:
- a worker's stdout/stderr (framework logs) go to a log file; messages travel on two pipes of their own;
- each worker runs in its own session (a Ctrl-C on the terminal reaches only the parent, which stops them);
- a worker dies with its parent (``PR_SET_PDEATHSIG`` on Linux, and end-of-file on its command pipe), so no worker
  outlives the run, even after a ``kill -9`` of the parent;
- :meth:`LocalExecutor.close` kills every worker still running and removes the temporary folder; a folder left by a
  run that was killed with ``kill -9`` (its name carries the run's pid) is removed by the next run that starts.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from xfbench.compare.platforms.allocator import worker_env
from xfbench.compare.platforms.base import Executor, WorkerHandle
from xfbench.compare.platforms.channel import Channel, ChannelClosedError
from xfbench.compare.platforms.job import WorkerSpec, write_job

PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
WORKER_MODULE = "xfbench.compare.worker"  # the worker's entry point in every xfbench version: never moves


def _log_tail(path: str, lines: int = 3) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = [line.strip() for line in handle.read().splitlines() if line.strip()]
    except OSError:
        return ""
    return " | ".join(text[-lines:])


class LocalWorker(WorkerHandle):
    """A worker process on this machine (``python -m xfbench.compare.worker JOB COMMAND_FD EVENT_FD``)."""

    def __init__(self, spec: WorkerSpec, folder: str) -> None:
        self.label = f"{spec.backend}/{spec.device}"
        stem = os.path.join(folder, f"worker-{time.monotonic_ns()}")
        self.log_path = stem + ".log"
        self.job_path = write_job(spec, stem)
        command_read, command_write = os.pipe()
        event_read, event_write = os.pipe()
        env = worker_env(spec.malloc, {**os.environ, **spec.env})
        if spec.python is None:  # another interpreter imports its own environment's xfbench, not this one
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, env.get("PYTHONPATH")]))
        env["XFBENCH_PARENT_PID"] = str(os.getpid())
        try:
            with open(self.log_path, "wb") as log:
                self.process = subprocess.Popen(
                    [spec.python or sys.executable, "-m", WORKER_MODULE, self.job_path, str(command_read),
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
