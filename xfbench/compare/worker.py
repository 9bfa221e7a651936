"""The worker process: one backend on one device, running a list of tasks, one JSON event per line.

Started by ``compare.runner`` as ``python -m xfbench.compare.worker JOB_FILE RESULT_FD``. Thread settings are
applied before the framework is imported. Events go to ``RESULT_FD`` (a pipe), never to stdout/stderr, which
carry the frameworks' log output and are captured by the runner. An exception in one task becomes that cell's
``error`` and the worker goes on with the next task.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import time
import traceback
from typing import Any

QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",        # TensorFlow C++ logs
    "TF_ENABLE_ONEDNN_OPTS": "1",       # the default, stated so the fingerprint is explicit
    "ABSL_MIN_LOG_LEVEL": "3",
    "GRPC_VERBOSITY": "ERROR",
    "JAX_PLATFORMS": "",
    "PYTHONWARNINGS": "ignore",
}


def configure_process(threads: int) -> None:
    """Quiet logging and pin this process to ``threads`` cores; before any framework import."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if not os.environ["JAX_PLATFORMS"]:
        del os.environ["JAX_PLATFORMS"]
    try:
        cores = sorted(os.sched_getaffinity(0))
        if threads < len(cores):
            os.sched_setaffinity(0, cores[:threads])
    except (AttributeError, OSError):  # not Linux: thread counts alone
        pass


def start_backend(name: str, threads: int) -> tuple[Any, float]:
    """Configure this process for ``threads``, then import and set up the backend (framework import timed)."""
    configure_process(threads)
    from xfbench import backends

    backend = backends.get(name)
    backend.configure_threads(threads)
    start = time.perf_counter()
    backend.setup(threads)
    return backend, time.perf_counter() - start


def main(job_path: str, result_fd: int) -> int:
    with open(job_path, "rb") as handle:
        job: dict[str, Any] = pickle.load(handle)  # written by our own runner; internal transport only
    channel = os.fdopen(result_fd, "w", buffering=1)

    def emit(event: dict[str, Any]) -> None:
        channel.write(json.dumps(event, default=lambda value: value.tolist()) + "\n")

    threads, device_kind = job["threads"], job["device"]
    backend, import_s = start_backend(job["backend"], threads)
    from xfbench.compare.cell import run_cell

    versions = backend.versions()
    devices = backend.devices()
    device_name = next((d["name"] for d in devices if d["kind"] == device_kind), None)
    emit({"event": "ready", "import_s": import_s, "versions": versions, "devices": devices})

    for task in job["tasks"]:
        emit({"event": "start", "task": task.name})
        cell: dict[str, Any] = {
            "task": task.name, "backend": job["backend"], "device": {"kind": device_kind, "name": device_name},
            "versions": versions, "threads": threads,
        }
        try:
            reason = backend.unsupported_reason(task, device_kind)
            if reason:
                cell.update(status="unsupported", error=reason)
            else:
                cell["fingerprint"] = backend.fingerprint(device_kind)
                parity = job.get("parity")
                if not (parity and parity.get("only")):
                    cell.update(run_cell(backend, task, device_kind, job["timing"], seeds=job["seeds"],
                                         measure=job["measure"]))
                    cell["timing"]["import_s"] = import_s
                if parity:
                    from xfbench.compare.parity import cell_parity

                    cell["parity"] = cell_parity(backend, task, device_kind, parity)
                cell["status"] = "ok"
        except Exception as error:  # one task's failure must not lose the others
            traceback.print_exc()
            cell.update(status="error", error=f"{type(error).__name__}: {error}")
        emit({"event": "cell", "cell": cell})
    emit({"event": "done"})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
