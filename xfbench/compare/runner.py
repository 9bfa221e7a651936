"""Run a plan: one fresh worker process per (backend, device), one after another, never two at once.

Isolation rules:
- a worker's stdout/stderr (framework logs) go to a log file, results come back on a separate pipe;
- each cell has its own deadline (``timeout``); a worker that hangs is killed with its whole process group;
- after a crash or timeout the cell in flight becomes ``error`` and a new worker runs the remaining tasks;
- a framework that is not installed gives ``unsupported`` cells without starting a process.
"""

from __future__ import annotations

import json
import os
import pickle
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from xfbench import backends
from xfbench.compare.allocator import DEFAULT_POLICY, worker_env
from xfbench.compare.plan import Plan
from xfbench.compare.result import Cell
from xfbench.tasks import Task

Progress = Callable[[str], None]
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _log_tail(path: str, lines: int = 3) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = [line.strip() for line in handle.read().splitlines() if line.strip()]
    except OSError:
        return ""
    return " | ".join(text[-lines:])


class _Worker:
    """One running worker process and its event pipe."""

    def __init__(self, job: dict[str, Any], folder: str, malloc: str = DEFAULT_POLICY) -> None:
        self.job_path = os.path.join(folder, f"job-{time.monotonic_ns()}.pkl")
        with open(self.job_path, "wb") as handle:
            pickle.dump(job, handle)
        self.log_path = self.job_path.replace(".pkl", ".log")
        read_fd, write_fd = os.pipe()
        env = worker_env(malloc, os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, env.get("PYTHONPATH")]))
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "xfbench.compare.worker", self.job_path, str(write_fd)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, pass_fds=(write_fd,),
                env=env, start_new_session=True,
            )
        os.close(write_fd)
        self.read_fd = read_fd
        self.buffer = b""

    def next_event(self, deadline: float) -> dict[str, Any] | None:
        """The next event, or None when the worker exited or the deadline passed (check ``timed_out``)."""
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self.read_fd], [], [], min(remaining, 1.0))
            if ready:
                chunk = os.read(self.read_fd, 65536)
                if not chunk:
                    return None
                self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.close()

    def close(self) -> None:
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        os.close(self.read_fd)

    def failure(self) -> str:
        code = self.process.poll()
        tail = _log_tail(self.log_path)
        how = f"worker exited with code {code}" if code is not None else "worker stopped answering"
        if code is not None and code < 0:
            how = f"worker killed by signal {signal.Signals(-code).name}"
        return f"{how}{': ' + tail if tail else ''}"


def _blank_cell(task: Task, backend: str, device: str, status: str, error: str) -> Cell:
    return Cell(task=task.name, backend=backend, device={"kind": device, "name": None}, status=status, error=error)


def run_group(plan: Plan, backend: str, device: str, folder: str, progress: Progress) -> list[Cell]:
    """All of the plan's tasks on one backend and device; one worker, replaced after a crash or timeout."""
    try:
        reason = backends.get(backend).unavailable_reason()
    except Exception as error:  # a broken adapter module: error cells, the other backends still run
        return [_blank_cell(task, backend, device, "error", f"cannot load the adapter: {error}") for task in plan.tasks]
    if reason:
        return [_blank_cell(task, backend, device, "unsupported", reason) for task in plan.tasks]
    cells: list[Cell] = []
    remaining = list(plan.tasks)
    while remaining:
        job = {"backend": backend, "device": device, "threads": plan.threads, "tasks": remaining,
               "timing": plan.timing, "seeds": plan.seeds, "measure": plan.measure, "parity": plan.parity}
        worker = _Worker(job, folder, plan.malloc)
        deadline = time.monotonic() + plan.timeout
        current: Task | None = None
        imported = False
        while True:
            event = worker.next_event(deadline)
            if event is None:
                timed_out = worker.process.poll() is None and time.monotonic() >= deadline
                if timed_out:
                    error = f"timed out after {plan.timeout:g} s ({'running' if imported else 'importing the framework'})"
                    worker.kill()
                else:
                    worker.close()
                    error = worker.failure()
                failed = [current] if current is not None and imported else list(remaining)
                for task in failed:
                    cells.append(_blank_cell(task, backend, device, "error", error))
                    progress(f"{task.name} on {backend}/{device}: error: {error}")
                    remaining.remove(task)
                break
            kind = event["event"]
            if kind == "ready":
                imported = True
            elif kind == "start":
                current = next(task for task in remaining if task.name == event["task"])
                deadline = time.monotonic() + plan.timeout
                progress(f"{current.name} on {backend}/{device}: training")
            elif kind == "cell":
                cell = Cell(**event["cell"])
                cells.append(cell)
                remaining.remove(current)  # type: ignore[arg-type]
                progress(f"{cell.task} on {backend}/{device}: {_summary(cell)}")
                current = None
            elif kind == "done":
                worker.close()
                break
    return cells


def _summary(cell: Cell) -> str:
    if not cell.ok:
        return f"{cell.status}: {cell.error}"
    metrics = ", ".join(f"{name} {value:.4g}" for name, value in cell.metrics.items() if name in ("accuracy", "r2"))
    step = cell.step_ms()
    return f"ok ({metrics}{f', {step:.3g} ms/step' if step is not None else ''})"


def run_plan(plan: Plan, progress: Progress | None = None) -> list[Cell]:
    """Run every (backend, device) group of the plan in turn and return all cells, in plan order."""
    report = progress or (lambda message: None)
    cells: list[Cell] = []
    groups = [(backend, device) for device in plan.devices for backend in plan.backends]
    with tempfile.TemporaryDirectory(prefix="xfbench-") as folder:
        for number, (backend, device) in enumerate(groups, start=1):
            report(f"[{number}/{len(groups)}] {backend} on {device}")
            cells += run_group(plan, backend, device, folder, report)
    order = {(task.name, backend, device): index for index, (task, backend, device) in enumerate(
        (task, backend, device) for task in plan.tasks for device in plan.devices for backend in plan.backends)}
    return sorted(cells, key=lambda cell: order[cell.key])


def probe_backends(timeout: float = 120.0) -> list[list[str]]:
    """Rows (backend, status, versions, devices) for ``xfbench list``; each framework imported in a worker."""
    rows = []
    seen: dict[str, dict[str, Any] | str] = {}
    with tempfile.TemporaryDirectory(prefix="xfbench-") as folder:
        for name in backends.backend_names():
            try:
                backend = backends.get(name)
            except Exception as error:  # a broken adapter module: say so, list the others
                rows.append([name, "broken", "-", f"cannot load the adapter: {error}"])
                continue
            reason = backend.unavailable_reason()
            if reason:
                rows.append([name, "not installed", "-", reason])
                continue
            if backend.module not in seen:
                job = {"backend": name, "device": "cpu", "threads": 1, "tasks": [], "timing": None, "seeds": 1,
                       "measure": False, "parity": None}
                worker = _Worker(job, folder)
                event = worker.next_event(time.monotonic() + timeout)
                if event is None:
                    worker.kill()
                    seen[backend.module] = worker.failure()
                else:
                    worker.close()
                    seen[backend.module] = event
            info = seen[backend.module]
            if isinstance(info, str):
                rows.append([name, "broken", "-", info])
                continue
            versions = ", ".join(f"{key} {value}" for key, value in info["versions"].items())
            devices = "; ".join(f"{d['kind']}: {d['name']}" for d in info["devices"])
            rows.append([name, "installed", versions, devices])
    return rows
