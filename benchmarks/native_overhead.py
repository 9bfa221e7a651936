"""Does xfbench measure the frameworks, or itself? xfbench's adapters vs hand-written native loops.

Two workloads (batch 128, Adam lr 1e-3, softmax cross-entropy): an MLP 784-256-256-10 and a CNN
conv32 3x3 -> relu -> maxpool 2 -> conv64 3x3 -> relu -> maxpool 2 -> dense 10 on 28x28x1. The native loops
(benchmarks/native/, no xfbench code) and xfbench (the same workloads defined through its public task API) are
run side by side, alternating, each in its own process, with the same timing protocol (first step apart,
warm-up, blocks of >= 50 ms with one sync each, median per-step time), for ``--rounds`` rounds. The ratio
xfbench / native is taken within each round and the median over rounds is reported.

It also measures this machine's float32 matrix-multiply rate (NumPy/BLAS, same thread count), counts each
workload's FLOPs per step from the spec, and prints the fraction of that floor each backend reaches.

Usage: python benchmarks/native_overhead.py [--rounds 6] [--seconds 1.5] [--threads N] [--backends ...] [--json PATH]
The last line is ``max ratio: X.XX``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

# (backend, native script, native mode)
MODES = {
    "tf-graph": ("tf_loop.py", "graph"),
    "tf-eager": ("tf_loop.py", "eager"),
    "torch": ("torch_loop.py", "eager"),
    "jax": ("jax_loop.py", "jit"),
}
WORKLOADS = ("mlp", "cnn")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=1.5,
                        help="timed seconds per measurement (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="threads for every side")
    parser.add_argument("--backends", default=",".join(MODES), help="comma-separated (default: all four)")
    parser.add_argument("--json", metavar="PATH", help="also write all measurements as JSON")
    args = parser.parse_args()
    args.backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    unknown = [name for name in args.backends if name not in MODES]
    if unknown:
        parser.error(f"unknown backend {unknown[0]!r}; choose one of: {', '.join(MODES)}")
    return args


def workload_tasks():
    """The two workloads as xfbench Tasks, built with the public task API (synthetic data, as the native loops)."""
    import numpy as np

    from xfbench.tasks import Adam, Conv2D, Dataset, Dense, Flatten, MaxPool2D, Task

    rng = np.random.default_rng(1)
    num_samples = 128 * 40
    adam = Adam(learning_rate=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8)
    shapes = {"mlp": (784,), "cnn": (28, 28, 1)}
    layers = {
        "mlp": (Dense(256, "relu"), Dense(256, "relu"), Dense(10)),
        "cnn": (Conv2D(32, 3, activation="relu"), MaxPool2D(2), Conv2D(64, 3, activation="relu"), MaxPool2D(2),
                Flatten(), Dense(10)),
    }
    tasks = {}
    for name in WORKLOADS:
        x = rng.standard_normal((num_samples, *shapes[name]), dtype=np.float32)
        y = rng.integers(0, 10, num_samples).astype(np.int64)
        data = Dataset(x, y, x[:256], y[:256])
        tasks[name] = Task(name=f"bench-{name}", data=data, layers=layers[name], loss="softmax_cross_entropy",
                           optimizer=adam, batch_size=128, epochs=1, description=f"overhead workload {name}")
    return tasks


def run_native(backend: str, args: argparse.Namespace, workloads: tuple[str, ...] = WORKLOADS) -> dict[str, float]:
    """Median step ms of the workloads from one native process (one framework import)."""
    script, mode = MODES[backend]
    command = [sys.executable, os.path.join(HERE, "native", script), "--workload", ",".join(workloads),
               "--threads", str(args.threads), "--seconds", str(args.seconds)]
    if script == "tf_loop.py":
        command += ["--mode", mode]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"native {backend} failed: {done.stderr.strip().splitlines()[-1:]}")
    lines = [json.loads(line) for line in done.stdout.strip().splitlines() if line.startswith("{")]
    return {line["workload"]: line["step_ms"]["median"] for line in lines}


def run_xfbench(backend: str, tasks: dict, args: argparse.Namespace) -> dict[str, float]:
    import xfbench
    from xfbench.compare.timing import TimingOptions

    timing = TimingOptions(warmup_s=0.3, min_block_s=0.05, min_blocks=10, budget_s=args.seconds)
    result = xfbench.run(tasks=list(tasks.values()), backends=[backend], threads=args.threads, timing=timing)
    out = {}
    for workload, task in tasks.items():
        cell = result.cell(task.name, backend)
        if not cell.ok:
            raise RuntimeError(f"xfbench {backend} {workload}: {cell.status}: {cell.error}")
        out[workload] = cell.step_ms()
    return out


def matmul_gflops(threads: int, size: int = 2048, repeats: int = 5) -> float:
    """This machine's float32 matrix-multiply rate through NumPy's BLAS, best of ``repeats``, in a subprocess
    so its BLAS thread count is set before NumPy loads."""
    code = (
        "import time, numpy as np\n"
        f"a = np.random.default_rng(0).random(({size}, {size}), dtype=np.float32); b = a.copy(); a @ b\n"
        f"best = min((lambda t: (a @ b, time.perf_counter() - t)[1])(time.perf_counter()) for _ in range({repeats}))\n"
        f"print(2 * {size}**3 / best / 1e9)\n"
    )
    env = {**os.environ, **{key: str(threads) for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                                check=True).stdout.strip())


def main() -> int:
    args = parse_args()
    from tabulate import tabulate

    from xfbench.tasks.flops import flops_per_step

    tasks = workload_tasks()
    started = time.perf_counter()
    floor = matmul_gflops(args.threads)
    print(f"machine float32 matmul floor: {floor:.1f} GFLOP/s ({args.threads} threads, NumPy BLAS 2048x2048)",
          file=sys.stderr)
    native: dict[tuple[str, str], list[float]] = {}
    ours: dict[tuple[str, str], list[float]] = {}
    for round_number in range(args.rounds):
        for backend in args.backends:
            sides = ["native", "xfbench"] if round_number % 2 == 0 else ["xfbench", "native"]
            for side in sides:
                if side == "native":
                    for workload, value in run_native(backend, args).items():
                        native.setdefault((backend, workload), []).append(value)
                else:
                    for workload, value in run_xfbench(backend, tasks, args).items():
                        ours.setdefault((backend, workload), []).append(value)
            print(f"round {round_number + 1}/{args.rounds} {backend}: "
                  + ", ".join(f"{w} native {native[(backend, w)][-1]:.3g} ms, xfbench {ours[(backend, w)][-1]:.3g} ms"
                              for w in WORKLOADS) + f" [{time.perf_counter() - started:.0f} s]", file=sys.stderr)

    rows, ratios, records = [], [], []
    for workload in WORKLOADS:
        flops = flops_per_step(tasks[workload])
        for backend in args.backends:
            key = (backend, workload)
            round_ratios = [ours_ms / native_ms for ours_ms, native_ms in zip(ours[key], native[key], strict=True)]
            ratio = statistics.median(round_ratios)
            ratios.append(ratio)
            ours_ms, native_ms = statistics.median(ours[key]), statistics.median(native[key])
            fraction = flops / (ours_ms / 1e3) / (floor * 1e9)
            rows.append([workload, backend, f"{native_ms:.3g}", f"{ours_ms:.3g}", f"{ratio:.2f}",
                         f"{min(round_ratios):.2f}-{max(round_ratios):.2f}", f"{flops / 1e6:.0f}", f"{fraction:.0%}"])
            records.append({"workload": workload, "backend": backend, "native_ms": native[key], "xfbench_ms": ours[key],
                            "ratio": ratio, "flops_per_step": flops, "floor_fraction": fraction})
    print(tabulate(rows, headers=["workload", "backend", "native ms", "xfbench ms", "ratio", "ratio range",
                                  "MFLOP/step", "of floor"], disable_numparse=True))
    print(f"\nmedian step times over {args.rounds} alternating rounds, {args.threads} threads; ratio = xfbench / "
          f"native within each round, median over rounds; floor = {floor:.1f} GFLOP/s float32 matmul "
          f"(NumPy BLAS); total {time.perf_counter() - started:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"floor_gflops": floor, "threads": args.threads, "rounds": args.rounds, "rows": records}, handle,
                      indent=2)
    print(f"max ratio: {max(ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
