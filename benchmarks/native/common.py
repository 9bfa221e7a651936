"""Shared helpers for the native (xfbench-free) training loops.

Only argument parsing, thread environment setup, the numpy data/weight generator,
the timing protocol and JSON output live here.  Nothing here imports a framework,
so the loop scripts can set thread environment variables before their framework import.

Canonical layouts (TF/JAX style): inputs NHWC, dense kernels (in, out), conv kernels HWIO.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

BATCH = 128
BATCHES_PER_EPOCH = 40
N_SAMPLES = BATCH * BATCHES_PER_EPOCH
N_CLASSES = 10
LR, BETA1, BETA2, EPS = 1e-3, 0.9, 0.999, 1e-8

# The two modern workloads, the built-in ``transformer`` and ``resnet`` tasks at their default sizes (their weights
# start from each framework's own initializers: the time of a step does not depend on the values).
WORKLOADS = ("mlp", "cnn", "transformer", "resnet")
BATCHES = {"mlp": 128, "cnn": 128, "transformer": 32, "resnet": 32}
# transformer: characters in, 2 pre-norm blocks of causal 4-head self-attention and a GELU (tanh) MLP of 4x the
# width, learned positions; AdamW (decoupled decay) with global-norm clipping and a linear warm-up then cosine
VOCAB, SEQ, WIDTH, HEADS, BLOCKS, MLP_RATIO = 30, 64, 128, 4, 2, 4
ADAMW = {"lr": 3e-3, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8, "weight_decay": 0.01, "clip": 1.0}
WARMUP, TOTAL, FINAL = 15, 156, 0.1
# resnet: 28x28x1 digits' shape; conv-BN-relu stem, a residual block, 2x2 max pool, a residual block of twice the
# filters with a 1x1 projection, global average pool, dense 10; Adam 2e-3; BatchNorm momentum 0.1 (PyTorch's sense)
FILTERS, RESNET_LR, BN_MOMENTUM, BN_EPS = 16, 2e-3, 0.1, 1e-5


def batch_size(workload: str) -> int:
    return BATCHES[workload]


def n_samples(workload: str) -> int:
    return BATCHES[workload] * BATCHES_PER_EPOCH


def schedule_factor(step: float, xp: Any = math) -> Any:
    """The learning-rate factor of update ``step`` (from 1): linear warm-up over WARMUP updates, then a cosine down
    to FINAL at TOTAL (the built-in transformer's schedule), in an array library ``xp`` with ``minimum``,
    ``maximum`` and ``cos``."""
    if xp is math:
        xp = np  # plain numbers: NumPy's minimum, maximum and cos
    rising = xp.minimum(step / WARMUP, 1.0)
    progress = xp.minimum(xp.maximum(step - WARMUP, 0.0) / (TOTAL - WARMUP), 1.0)
    after = xp.minimum(xp.maximum(step - WARMUP, 0.0), 1.0)
    falling = FINAL + (1 - FINAL) * 0.5 * (1 + xp.cos(math.pi * progress))
    factor = rising * (1 - after) + falling * after
    return float(factor) if isinstance(factor, np.generic) else factor

# name -> shape, in canonical (TF/JAX) layout, in forward order.
PARAM_SHAPES: dict[str, dict[str, tuple[int, ...]]] = {
    "mlp": {
        "w1": (784, 256),
        "b1": (256,),
        "w2": (256, 256),
        "b2": (256,),
        "w3": (256, 10),
        "b3": (10,),
    },
    "cnn": {
        "c1": (3, 3, 1, 32),
        "cb1": (32,),
        "c2": (3, 3, 32, 64),
        "cb2": (64,),
        "w": (5 * 5 * 64, 10),
        "b": (10,),  # 28 -conv-> 26 -pool-> 13 -conv-> 11 -pool-> 5; flattened in HWC order
    },
}
INPUT_SHAPE = {"mlp": (784,), "cnn": (28, 28, 1)}


def _workloads(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    bad = [name for name in names if name not in WORKLOADS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown workload {value!r}; choose from {', '.join(WORKLOADS)} "
                                         "(comma-separated)")
    return names


def parse_args(framework: str) -> argparse.Namespace:
    """Parse the common command line; `--mode` is only meaningful for TF."""
    p = argparse.ArgumentParser(description=f"native {framework} training loop benchmark")
    p.add_argument("--workload", required=True, type=_workloads,
                   help=f"one or more of {', '.join(WORKLOADS)}, comma-separated (one JSON line each, one framework "
                        "import)")
    p.add_argument("--mode", choices=("graph", "eager", "xla", "jit", "compile", "jax", "tensorflow", "torch"),
                   default="graph", help="tf: graph, eager or xla; torch: eager or compile; keras: its backend")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--serve", action="store_true",
                   help="build and warm up every workload, then measure on command (see common.serve)")
    return p.parse_args()


def set_thread_env(threads: int) -> None:
    """Set thread env vars; must run before the framework is imported."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = str(threads)


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence C++ log spam written to fd 2 (e.g. TF's pre-absl-init oneDNN notice) during a framework
    import; the captured text is replayed if the import fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            tmp.seek(0)
            sys.stderr.write(tmp.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def make_params(workload: str, seed: int) -> dict[str, np.ndarray]:
    """Glorot-uniform kernels and zero biases (float32), canonical layout."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in PARAM_SHAPES[workload].items():
        if len(shape) == 1:
            params[name] = np.zeros(shape, np.float32)
            continue
        receptive = math.prod(shape[:-2])
        fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        params[name] = rng.uniform(-limit, limit, shape).astype(np.float32)
    return params


def make_data(workload: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic inputs and int32 labels: (N, *INPUT_SHAPE) float32 and labels in [0, 10); for the transformer,
    (N, SEQ) character ids and (N, SEQ) next characters in [0, VOCAB)."""
    rng = np.random.default_rng(seed + 1)
    n = n_samples(workload)
    if workload == "transformer":
        return (rng.integers(0, VOCAB, (n, SEQ), dtype=np.int32), rng.integers(0, VOCAB, (n, SEQ), dtype=np.int32))
    shape = (28, 28, 1) if workload == "resnet" else INPUT_SHAPE[workload]
    x = rng.standard_normal((n, *shape), dtype=np.float32)
    y = rng.integers(0, N_CLASSES, n, dtype=np.int32)
    return x, y


def epoch_permutation(seed: int, epoch: int = 0, workload: str = "mlp") -> np.ndarray:
    """Sample order for one epoch (int64 indices into the workload's N samples)."""
    return np.random.default_rng((seed, epoch)).permutation(n_samples(workload))


class BlockTimer:
    """Times `step(i)` (training step i, batch i % 40, returns the loss without syncing) in blocks of k steps
    with one `sync(loss)` each (the call that blocks until the device has finished)."""

    def __init__(self, step: Callable[[int], Any], sync: Callable[[Any], Any]) -> None:
        self.step, self.sync = step, sync
        self.counter = 0
        self.k = 1

    def block(self, k: int) -> float:
        """Seconds for k steps and one sync."""
        t0 = time.perf_counter()
        loss = None
        for _ in range(k):
            loss = self.step(self.counter)
            self.counter += 1
        self.sync(loss)
        return time.perf_counter() - t0

    def warm_up(self, warmup_s: float = 0.3, min_block_s: float = 0.05) -> float:
        """The first step alone (returns its seconds: trace/compile), then untimed warm-up that calibrates the
        block size k so a block lasts >= min_block_s."""
        first_step_s = self.block(1)
        t_warm = time.perf_counter()
        while True:
            dt = self.block(self.k)
            if dt < min_block_s:
                self.k = min(self.k * 10, max(self.k + 1, math.ceil(self.k * 1.25 * min_block_s / max(dt, 1e-9))))
            elif time.perf_counter() - t_warm >= warmup_s:
                return first_step_s

    def block_ms(self) -> float:
        """Milliseconds per step of one calibrated block."""
        return self.block(self.k) / self.k * 1e3


def epoch_batches(workload: str, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The first epoch's batches ``(xs, ys)`` as NumPy arrays, in training order (for a loop that puts each on
    the device as it is)."""
    x, y = make_data(workload, seed)
    perm = epoch_permutation(seed, workload=workload)
    return np.split(x[perm], BATCHES_PER_EPOCH), np.split(y[perm], BATCHES_PER_EPOCH)


def time_steps(step: Callable[[int], Any], sync: Callable[[Any], Any], seconds: float, *, min_blocks: int = 10
               ) -> dict[str, Any]:
    """The shared one-shot timing protocol: first step apart, warm-up, then calibrated blocks for `seconds`."""
    timer = BlockTimer(step, sync)
    first_step_s = timer.warm_up()
    per_step_ms: list[float] = []
    faults_before, steps_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, timer.counter
    t_start = time.perf_counter()
    while len(per_step_ms) < min_blocks or time.perf_counter() - t_start < seconds:
        per_step_ms.append(timer.block_ms())
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
    q25, q50, q75 = np.percentile(per_step_ms, [25, 50, 75])
    return {
        "step_ms": {"median": float(q50), "iqr": float(q75 - q25), "min": min(per_step_ms), "n": len(per_step_ms)},
        "first_step_s": first_step_s,
        "steps_per_block": timer.k,
        "page_faults_per_step": faults / (timer.counter - steps_before),  # minor faults, whole process
    }


def timed_turn(block_ms: Callable[[], float], seconds: float, min_blocks: int = 3) -> list[float]:
    """One turn of an interleaved measurement: one untimed block (caches and thread pools were just used by the
    other process), then blocks until `seconds` and `min_blocks` are reached; per-step ms of each block."""
    block_ms()
    samples: list[float] = []
    t_start = time.perf_counter()
    while len(samples) < min_blocks or time.perf_counter() - t_start < seconds:
        samples.append(block_ms())
    return samples


def serve(block_ms: dict[str, Callable[[], float]], ready: dict[str, Any]) -> None:
    """Interleaving protocol for benchmarks/native_overhead.py: after build and warm-up, print one JSON line
    {"ready": ...}, then for each stdin line {"workload": W, "seconds": S} run one `timed_turn` of W's calibrated
    block (`block_ms[W]`, per-step ms of one block) and print {"step_ms": [per-step ms of each block]}; exit at end
    of input. The process stays idle between turns while the other side measures."""
    print(json.dumps({"ready": ready}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        print(json.dumps({"step_ms": timed_turn(block_ms[command["workload"]], command["seconds"])}), flush=True)


def run(framework: str, mode: str, args: argparse.Namespace, build: Callable[[str], tuple[Callable, Callable]],
        versions: dict[str, str]) -> None:
    """Time every requested workload once (one JSON line each), or with --serve measure on command. ``build`` gives
    the ``(step, sync)`` pair, or (with --serve) a timer of its own with ``warm_up()`` and ``block_ms()``."""
    if not args.serve:
        for workload in args.workload:
            emit(framework, mode, args, time_steps(*build(workload), args.seconds), versions, workload)
        return
    block_ms, first_step_s = {}, {}
    for workload in args.workload:
        built = build(workload)
        timer = built if hasattr(built, "block_ms") else BlockTimer(*built)
        first_step_s[workload] = timer.warm_up()
        block_ms[workload] = timer.block_ms
    serve(block_ms, {"framework": framework, "mode": mode, "first_step_s": first_step_s, "threads": args.threads,
                  "versions": versions})


def emit(framework: str, mode: str, args: argparse.Namespace, timing: dict[str, Any], versions: dict[str, str],
         workload: str) -> None:
    """Print the single JSON result line (last line of stdout)."""
    result = {
        "framework": framework,
        "mode": mode,
        "workload": workload,
        "step_ms": {k: round(v, 4) if isinstance(v, float) else v for k, v in timing["step_ms"].items()},
        "first_step_s": round(timing["first_step_s"], 4),
        "page_faults_per_step": round(timing["page_faults_per_step"], 1),
        "threads": args.threads,
        "versions": {"python": platform.python_version(), "numpy": np.__version__, **versions},
    }
    sys.stdout.flush()
    print(json.dumps(result), flush=True)
