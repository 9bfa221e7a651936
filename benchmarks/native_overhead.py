"""Does xfbench measure the frameworks, or itself? xfbench's adapters vs hand-written native loops.

Four workloads (softmax cross-entropy): an MLP 784-256-256-10 and a CNN conv32 3x3 -> relu -> maxpool 2 -> conv64
3x3 -> relu -> maxpool 2 -> dense 10 on 28x28x1 (batch 128, Adam lr 1e-3), and the built-in ``transformer`` and
``resnet`` at their default sizes (batch 32; AdamW with clipping and a warm-up-cosine schedule, and Adam). The
native side is benchmarks/native/ (no xfbench code); the xfbench side is xfbench's own worker process, given the same
workloads through the public task API and trained and timed by the same commands ``xfbench run`` sends it.

How it is measured. For each backend, a native process and an xfbench worker are started; the native process
builds and warms up both workloads, the worker prepares one workload at a time (build, one epoch, evaluation,
warm-up). Then they take turns through xfbench's own scheduler (``compare.schedule.run_rounds``): one measures
for ``--seconds`` while the other sits idle, then the other, the order flipping every round, ``--turns`` times per
workload. Each turn is one untimed block and then synced blocks of >= 50 ms; the turn's value is the median
per-step time of its blocks. The ratio xfbench / native is taken between the two turns of a round, so the load of
this shared machine, which drifts by tens of percent over seconds, cancels. Fresh pairs of processes are started
``--pairs`` times (process placement and memory layout vary between processes); the reported ratio is the median
of all turn ratios, with the per-pair medians.

It also measures this machine's float32 matrix-multiply rate (NumPy/BLAS, same thread count, once per round of
pairs, the best taken as the floor), counts each workload's FLOPs per step from the spec, and prints the fraction
of that floor each backend reaches.

Usage: python benchmarks/native_overhead.py [--pairs 3] [--turns 10] [--seconds 0.25] [--threads N]
                                            [--backends ...] [--workloads mlp,cnn,transformer,resnet] [--json PATH]
The last line is ``max ratio: X.XX``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from xfbench.compare.schedule import TurnError, run_rounds  # noqa: E402

# (backend, native script, native mode)
MODES = {
    "tf-graph": ("tf_loop.py", "graph"),
    "tf-eager": ("tf_loop.py", "eager"),
    "torch": ("torch_loop.py", "eager"),
    "jax": ("jax_loop.py", "jit"),
    "tf-xla": ("tf_loop.py", "xla"),
    "torch-compile": ("torch_loop.py", "compile"),
    "keras-jax": ("keras_loop.py", "jax"),
    "keras-tensorflow": ("keras_loop.py", "tensorflow"),
    "keras-torch": ("keras_loop.py", "torch"),
}
WORKLOADS = ("mlp", "cnn", "transformer", "resnet")
CLASSIC = ("mlp", "cnn")  # the default workloads (seconds per backend)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3,
                        help="fresh native + xfbench process pairs per backend (default: %(default)s)")
    parser.add_argument("--turns", type=int, default=10,
                        help="alternating turns per pair and workload (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=0.25,
                        help="timed seconds per turn (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="threads for every side")
    parser.add_argument("--backends", default=",".join(MODES),
                        help=f"comma-separated, from: {', '.join(MODES)} (default: all)")
    parser.add_argument("--workloads", default=",".join(CLASSIC),
                        help=f"comma-separated, from: {', '.join(WORKLOADS)} (default: %(default)s; the transformer "
                             "and resnet take minutes per backend)")
    parser.add_argument("--malloc", default="steady", choices=("steady", "system"),
                        help="C allocator policy of both sides' processes, as xfbench run --malloc "
                             "(default: %(default)s)")
    parser.add_argument("--json", metavar="PATH", help="also write every turn's measurements as JSON")
    args = parser.parse_args()
    args.backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    unknown = [name for name in args.backends if name not in MODES]
    if unknown or not args.backends:
        parser.error(f"unknown backend {unknown[0] if unknown else ''!r}; choose from: {', '.join(MODES)}")
    args.workloads = tuple(name.strip() for name in args.workloads.split(",") if name.strip())
    unknown = [name for name in args.workloads if name not in WORKLOADS]
    if unknown or not args.workloads:
        parser.error(f"unknown workload {unknown[0] if unknown else ''!r}; choose from: {', '.join(WORKLOADS)}")
    for name in ("pairs", "turns"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if not args.seconds > 0:
        parser.error(f"--seconds must be positive, got {args.seconds}")
    return args


def workload_tasks(workloads: tuple[str, ...] = WORKLOADS):
    """The workloads as xfbench Tasks, built with the public task API (synthetic data, as the native loops; the
    transformer and resnet are the built-in tasks' models and optimizers on such data)."""
    import numpy as np

    from xfbench.tasks import Adam, Conv2D, Dataset, Dense, Flatten, MaxPool2D, Task, get_task

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
    for name in workloads:
        if name in ("transformer", "resnet"):
            builtin = get_task(name)
            count = builtin.batch_size * 40
            if name == "transformer":
                x = rng.integers(0, 30, (count, 64)).astype(np.int32)
                y = rng.integers(0, 30, (count, 64)).astype(np.int64)
            else:
                x = rng.standard_normal((count, 28, 28, 1), dtype=np.float32)
                y = rng.integers(0, 10, count).astype(np.int64)
            tasks[name] = builtin.replace(name=f"bench-{name}", data=Dataset(x, y, x[:64], y[:64]), epochs=1,
                                          description=f"overhead workload {name}")
            continue
        x = rng.standard_normal((num_samples, *shapes[name]), dtype=np.float32)
        y = rng.integers(0, 10, num_samples).astype(np.int64)
        data = Dataset(x, y, x[:256], y[:256])
        tasks[name] = Task(name=f"bench-{name}", data=data, layers=layers[name], loss="softmax_cross_entropy",
                           optimizer=adam, batch_size=128, epochs=1, description=f"overhead workload {name}")
    return tasks


def native_command(backend: str, threads: int, workloads: tuple[str, ...] = CLASSIC, seconds: float = 1.5,
                   serve: bool = False) -> list[str]:
    script, mode = MODES[backend]
    command = [sys.executable, os.path.join(HERE, "native", script), "--workload", ",".join(workloads),
               "--threads", str(threads), "--seconds", str(seconds)]
    command += ["--mode", mode]
    return command + (["--serve"] if serve else [])


class Server:
    """A native measuring process speaking the protocol of native/common.py's ``serve``."""

    def __init__(self, name: str, command: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in close())
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                        text=True, bufsize=1, env=env)

    def reply(self, key: str) -> Any:
        """The next JSON line carrying ``key`` (frameworks may print other lines)."""
        for line in self.process.stdout:
            if line.startswith("{"):
                message = json.loads(line)
                if key in message:
                    return message[key]
        self.process.wait()
        self.log.seek(0)
        tail = [line for line in self.log.read().strip().splitlines() if line.strip()][-1:]
        raise TurnError(f"{self.name} process exited with status {self.process.returncode}: {tail}")

    def turn(self, workload: str, seconds: float) -> float:
        """Median per-step ms of one measurement turn."""
        self.process.stdin.write(json.dumps({"workload": workload, "seconds": seconds}) + "\n")
        return statistics.median(self.reply("step_ms"))

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


class XfbenchSide:
    """The xfbench side: xfbench's own worker process (``compare.worker``, started by ``compare.executor``), trained
    and timed through the same commands ``xfbench run`` sends it."""

    def __init__(self, executor: Any, backend: str, threads: int, malloc: str,
                 workloads: tuple[str, ...] = CLASSIC) -> None:
        from xfbench.compare.platforms.job import WorkerSpec

        self.tasks = workload_tasks(workloads)
        self.worker = executor.start(WorkerSpec(backend, "cpu", threads, list(self.tasks.values()), malloc))
        self.block_steps = 1
        self.ask(None, "ready")

    def ask(self, message: dict[str, Any] | None, expect: str) -> dict[str, Any]:
        from xfbench.compare.platforms.base import WorkerError, request

        try:
            reply = request(self.worker, message, expect, 600, expect)
        except WorkerError as error:
            raise TurnError(f"xfbench worker: {error}") from None
        if reply.get("event") != expect or reply.get("status", "ok") != "ok":
            raise TurnError(f"xfbench worker: expected {expect}, got {reply}")
        return reply

    def prepare(self, workload: str, min_block_s: float = 0.05) -> None:
        from xfbench.compare.engine.timing import block_steps_for
        from xfbench.compare.protocol import TimingOptions

        reply = self.ask({"op": "prepare", "task": list(self.tasks).index(workload), "process": 0,
                          "warmup_s": TimingOptions.warmup_s}, "prepared")
        self.block_steps = block_steps_for(reply["seconds_per_step"], min_block_s)

    def turn(self, seconds: float) -> float:
        reply = self.ask({"op": "turn", "block_steps": self.block_steps, "turn_s": seconds, "min_blocks": 3}, "turn")
        return statistics.median(reply["block_ms"])

    def release(self) -> None:
        self.ask({"op": "release"}, "released")


def alternate(sides: dict[str, Callable[[], float]], turns: int) -> dict[str, list[float]]:
    """Each side's turn values, the sides taking turns through xfbench's scheduler (the order flips every round)."""
    out: dict[str, list[float]] = {side: [] for side in sides}
    for turn in run_rounds(sides, turns):
        out[turn.key].append(turn.value)
    if any(len(values) != turns for values in out.values()):
        raise RuntimeError(f"a side dropped out: {', '.join(f'{side} {len(v)} turns' for side, v in out.items())}")
    return out


def take_turns(commands: dict[str, list[str]], env: dict[str, str], turns: int, seconds: float,
               workloads: tuple[str, ...] = CLASSIC) -> dict[str, dict[str, list[float]]]:
    """Start one native serving process per side, then let the sides take ``turns`` alternating turns per workload;
    per workload, each side's turn medians in order."""
    sides = {side: Server(side, command, env) for side, command in commands.items()}
    try:
        for server in sides.values():
            server.reply("ready")
        return {workload: alternate({side: functools.partial(server.turn, workload, seconds)
                                     for side, server in sides.items()}, turns) for workload in workloads}
    finally:
        for server in sides.values():
            server.close()


def measure_pair(backend: str, args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    """One fresh native process and one fresh xfbench worker taking turns. Both get the same environment
    (xfbench's allocator policy included)."""
    from xfbench.compare.platforms.allocator import worker_env
    from xfbench.compare.platforms.local import LocalExecutor

    native = Server("native", native_command(backend, args.threads, args.workloads, serve=True),
                    worker_env(args.malloc, os.environ))
    try:
        with LocalExecutor() as executor:
            ours = XfbenchSide(executor, backend, args.threads, args.malloc, args.workloads)
            native.reply("ready")
            out = {}
            for workload in args.workloads:
                ours.prepare(workload)
                out[workload] = alternate({"native": functools.partial(native.turn, workload, args.seconds),
                                           "xfbench": functools.partial(ours.turn, args.seconds)}, args.turns)
                ours.release()
            return out
    finally:
        native.close()


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

    tasks = workload_tasks(args.workloads)
    started = time.perf_counter()
    # (backend, workload) -> one {"native": [...], "xfbench": [...]} per pair
    pairs: dict[tuple[str, str], list[dict[str, list[float]]]] = {}
    floors: list[float] = []  # the matmul rate, once per round of pairs: the machine's load drifts, its best is the floor
    for pair in range(args.pairs):
        floors.append(matmul_gflops(args.threads))
        print(f"float32 matmul: {floors[-1]:.1f} GFLOP/s ({args.threads} threads, NumPy BLAS 2048x2048)",
              file=sys.stderr)
        for backend in args.backends:
            for workload, turns in measure_pair(backend, args).items():
                pairs.setdefault((backend, workload), []).append(turns)
            print(f"pair {pair + 1}/{args.pairs} {backend}: " + ", ".join(
                f"{w} xfbench/native {statistics.median(turn_ratios(pairs[(backend, w)][-1])):.2f}"
                for w in args.workloads)
                + f" [{time.perf_counter() - started:.0f} s]", file=sys.stderr, flush=True)

    floor = max(floors)
    rows, ratios, records = [], [], []
    for workload in args.workloads:
        flops = flops_per_step(tasks[workload])
        for backend in args.backends:
            measured = pairs[(backend, workload)]
            all_ratios = [ratio for turns in measured for ratio in turn_ratios(turns)]
            ratio = statistics.median(all_ratios)
            ratios.append(ratio)
            native_ms = statistics.median([ms for turns in measured for ms in turns["native"]])
            ours_ms = statistics.median([ms for turns in measured for ms in turns["xfbench"]])
            q1, _, q3 = statistics.quantiles(all_ratios, n=4) if len(all_ratios) > 1 else (ratio, ratio, ratio)
            per_pair = [statistics.median(turn_ratios(turns)) for turns in measured]
            fraction = flops / (ours_ms / 1e3) / (floor * 1e9)
            rows.append([workload, backend, f"{native_ms:.3g}", f"{ours_ms:.3g}", f"{ratio:.2f}", f"{q1:.2f}-{q3:.2f}",
                         " ".join(f"{value:.2f}" for value in per_pair), f"{flops / 1e6:.0f}", f"{fraction:.0%}"])
            records.append({"workload": workload, "backend": backend, "ratio": ratio, "pair_ratios": per_pair,
                            "native_ms": native_ms, "xfbench_ms": ours_ms, "pairs": measured,
                            "flops_per_step": flops, "floor_fraction": fraction})
    print(tabulate(rows, headers=["workload", "backend", "native ms", "xfbench ms", "ratio", "ratio IQR",
                                  "per pair", "MFLOP/step", "of floor"], disable_numparse=True) + "\n")
    for workload in args.workloads:
        best = min((record for record in records if record["workload"] == workload), key=lambda r: r["xfbench_ms"])
        print(f"fastest on {workload}: {best['backend']}, {best['xfbench_ms']:.3g} ms/step = "
              f"{best['floor_fraction']:.0%} of this machine's float32 matmul floor")
    print(f"\n{args.pairs} fresh process pairs per backend x {args.turns} alternating turns of {args.seconds:g} s, "
          f"{args.threads} threads, malloc {args.malloc} on both sides;\nratio = xfbench / native between adjacent "
          f"turns, median over all turns; "
          f"ms = median turn;\nfloor = {floor:.1f} GFLOP/s float32 matmul (NumPy BLAS, best of {len(floors)} "
          f"measurements, {min(floors):.1f}-{floor:.1f}); "
          f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"floor_gflops": floor, "floor_measurements": floors, "threads": args.threads,
                       "malloc": args.malloc, "pairs": args.pairs, "turns": args.turns, "seconds": args.seconds,
                       "rows": records}, handle, indent=2)
    print(f"max ratio: {max(ratios):.2f}")
    return 0


def turn_ratios(turns: dict[str, list[float]]) -> list[float]:
    """xfbench / native for each pair of adjacent turns."""
    return [ours / native for ours, native in zip(turns["xfbench"], turns["native"], strict=True)]


if __name__ == "__main__":
    sys.exit(main())
