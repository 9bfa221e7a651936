"""The worker process: one backend on one device, a small command server speaking JSON lines.

Started by an executor (``compare.platforms``) as ``python -m xfbench.compare.worker JOB_FILE COMMAND_FD EVENT_FD``
(that entry point never moves: ``xfbench ab`` starts other environments' workers by it). The job file says what to
be (``platforms.job``, any version this xfbench reads). Thread settings and the backend's quiet environment are
applied before the framework is imported. Messages travel on two pipes, never on stdout/stderr, which carry the
frameworks' log output and are captured by the executor.

The protocol below is additive only: a field is never removed or renamed, every reader takes a missing field as
its default, so a driver and a worker of different xfbench versions understand each other.

The protocol (every message is one JSON object on one line):

==========================================================  ===============================================
scheduler -> worker                                         worker -> scheduler
==========================================================  ===============================================
(start)                                                     ``ready``: import_s, versions, devices, pid
``prepare``: task (index), process, seeds, measure,         ``prepared``: status, error, device_name,
parity, warmup_s                                            fingerprint, metrics, seed_metrics, phases,
                                                            parity, seconds_per_step, compiles
``turn``: block_steps, turn_s, min_blocks, untimed_blocks,  ``turn``: block_ms, steps, page_faults, compiles,
untimed_steps                                               injected_slowdown
``release``                                                 ``released``: peak_rss_mb, device_peak_mb,
                                                            compiles
``exit`` (or end of file)                                   (exits at once, skipping interpreter teardown)
==========================================================  ===============================================

A failure inside a command answers ``{"event": "error", "error": ...}`` (``prepare`` answers a cell with status
``error``) and the worker goes on serving. A worker whose parent is gone exits (Linux: ``PR_SET_PDEATHSIG``;
everywhere: end of file on the command pipe).
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import time
import traceback
from typing import Any


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies, and exit now if the parent is already gone."""
    expected = os.environ.get("XFBENCH_PARENT_PID")
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: end of file on the command pipe still ends the worker
        pass
    if expected and os.getppid() != int(expected):
        os._exit(1)


def configure_process(threads: int, quiet_env: dict[str, str] | None = None) -> None:
    """The backend's quiet environment (its frameworks' log levels, set unless the user set them) and this process
    pinned to ``threads`` cores; before any framework import."""
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    for key, value in (quiet_env or {}).items():
        os.environ.setdefault(key, value)
    try:
        cores = sorted(os.sched_getaffinity(0))
        if threads < len(cores):
            os.sched_setaffinity(0, cores[:threads])
    except (AttributeError, OSError):  # not Linux: thread counts alone
        pass


def start_backend(name: str, threads: int) -> tuple[Any, float]:
    """Configure this process for ``threads``, then import and set up the backend (framework import timed)."""
    from xfbench import backends

    backend = backends.get(name)
    configure_process(threads, backend.quiet_env())
    os.environ.update(backend.process_env())
    backend.configure_threads(threads)
    start = time.perf_counter()
    backend.setup(threads)
    return backend, time.perf_counter() - start


def _error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


class Server:
    """The worker's state between commands: the backend, and the prepared task's trainer and timer."""

    def __init__(self, spec: Any, backend: Any) -> None:
        self.spec = spec
        self.backend = backend
        self.timer: Any = None
        self.devices = backend.devices()

    def prepare(self, message: dict[str, Any]) -> dict[str, Any]:
        from xfbench.compare.engine.loop import DivergedError, peak_rss_mb, prime_cell, steady_state_timer, train_cell

        self.timer = None
        task = self.spec.tasks[message["task"]]
        device_kind = self.spec.device
        reply: dict[str, Any] = {
            "event": "prepared", "task": task.name, "status": "ok", "error": None,
            "device_name": next((d["name"] for d in self.devices if d["kind"] == device_kind), None),
        }
        try:
            reason = self.backend.unsupported_reason(task, device_kind)
            if reason:
                return {**reply, "status": "unsupported", "error": reason}
            cls = type(self.backend)
            reply["fingerprint"] = {**self.backend.fingerprint(device_kind),
                                    "adapter": f"{cls.__module__}:{cls.__qualname__}"}
            parity = message.get("parity")
            trainer = None
            if not (parity and parity.get("only")):
                if message.get("process", 0) == 0:
                    trainer, out = train_cell(self.backend, task, device_kind, seeds=message.get("seeds", 1))
                else:
                    trainer, out = prime_cell(self.backend, task, device_kind)
                reply.update(out)
            if parity:
                from xfbench.compare.engine.parity import cell_parity

                reply["parity"] = cell_parity(self.backend, task, device_kind, parity)
            if trainer is not None:
                reply["fingerprint"].update(trainer.describe())
                if message.get("measure", True):
                    from xfbench.compare.engine.timing import injected_slowdown

                    self.timer = steady_state_timer(trainer, task, injected_slowdown(self.spec.backend))
                    reply["seconds_per_step"] = self.timer.warm_up(message.get("warmup_s", 0.3))
                    reply["compiles"] = trainer.compile_count()
            reply["peak_rss_mb"] = peak_rss_mb()
            reply["device_peak_mb"] = trainer.device_peak_mb() if trainer is not None else None
        except DivergedError as diverged:  # not a failure of xfbench or the framework: of the training itself
            self.timer = None
            return {**reply, "status": "diverged", "error": str(diverged), "curve": diverged.curve}
        except Exception as error:  # one task's failure must not lose the others
            traceback.print_exc()
            self.timer = None
            return {**reply, "status": "error", "error": _error(error)}
        return reply

    def turn(self, message: dict[str, Any]) -> dict[str, Any]:
        if self.timer is None:
            return {"event": "error", "error": "no prepared task to time"}
        try:
            return {"event": "turn", **self.timer.turn(message["block_steps"], message["turn_s"],
                                                        message.get("min_blocks", 2), message.get("untimed_blocks", 1),
                                                        message.get("untimed_steps"))}
        except Exception as error:
            traceback.print_exc()
            return {"event": "error", "error": _error(error)}

    def release(self, message: dict[str, Any]) -> dict[str, Any]:
        from xfbench.compare.engine.loop import peak_rss_mb

        reply: dict[str, Any] = {"event": "released", "peak_rss_mb": peak_rss_mb(), "device_peak_mb": None,
                                 "compiles": None}
        if self.timer is not None:
            trainer = self.timer.trainer
            reply.update(device_peak_mb=trainer.device_peak_mb(), compiles=trainer.compile_count())
        self.timer = None
        gc.collect()
        return reply

    def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        handler = {"prepare": self.prepare, "turn": self.turn, "release": self.release}.get(message.get("op", ""))
        if handler is None:
            return {"event": "error", "error": f"unknown command {message.get('op')!r}"}
        return handler(message)


def leave(code: int) -> None:
    """Exit without the interpreter's teardown: TensorFlow's and torch's finalizers took 0.3-1.5 s per worker here
    (8 s for the default run's eight workers, closed one by one), and a worker has nothing left to save: every
    answer was sent and the log goes straight to a file. The ``atexit`` handlers still run (TensorFlow's autograph
    removes its temporary files in one), then the standard streams are flushed."""
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def main(job_path: str, command_fd: int, event_fd: int) -> int:
    die_with_parent()
    from xfbench.compare.platforms.channel import Channel, ChannelClosedError
    from xfbench.compare.platforms.job import read_job

    spec = read_job(job_path)
    channel = Channel(command_fd, event_fd)
    backend, import_s = start_backend(spec.backend, spec.threads)
    server = Server(spec, backend)
    channel.send({"event": "ready", "import_s": import_s, "versions": backend.versions(), "devices": server.devices,
                  "pid": os.getpid()})
    while True:
        try:
            message = channel.receive()
        except ChannelClosedError:  # the parent is gone
            return 0
        if message is None or message.get("op") == "exit":
            return 0
        try:
            channel.send(server.handle(message))
        except ChannelClosedError:
            return 0

