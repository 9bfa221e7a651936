"""The xfbench side of benchmarks/native_overhead.py: xfbench's own worker code, measuring on command.

Usage (started by native_overhead.py): python benchmarks/_xfbench_serve.py BACKEND THREADS WORKLOAD[,WORKLOAD]

Each workload goes through exactly what ``xfbench run`` does in its worker process (``start_backend``: process
and thread configuration, framework import, backend setup; then ``build_train_evaluate``: build from the task's
initial weights, one training epoch, evaluation) and is timed by xfbench's harness (``StepTimer``: the same
warm-up, block calibration and synced blocks as ``measure_steady_state``). Only the order of the blocks differs:
they run in turns on command, interleaved with the native process, through the protocol in native/common.py.
"""

from __future__ import annotations

import functools
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), os.path.join(HERE, "native")]


def main(backend_name: str, threads: int, workloads: list[str]) -> None:
    from xfbench.compare.worker import start_backend

    backend, import_s = start_backend(backend_name, threads)

    import common
    from native_overhead import workload_tasks

    from xfbench.compare.cell import build_train_evaluate, steady_state_timer
    from xfbench.compare.timing import TimingOptions

    tasks = workload_tasks()
    block_ms, first_step_s = {}, {}
    for workload in workloads:
        trainer, _, phases = build_train_evaluate(backend, tasks[workload], "cpu")
        first_step_s[workload] = phases["first_step_s"]
        timer = steady_state_timer(trainer, tasks[workload])
        block_ms[workload] = functools.partial(timer.time_block, timer.warm_up(TimingOptions()))
    common.serve(block_ms, {"framework": backend_name, "import_s": import_s, "first_step_s": first_step_s,
                         "threads": threads, "versions": backend.versions()})


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3].split(","))
