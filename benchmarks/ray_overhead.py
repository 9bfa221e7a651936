"""What does the Ray executor cost? The same task x backends through the local executor and through Ray, alternating.

Runs ``xfbench run`` ``--pairs`` times each way, alternating (local, ray), (ray, local), ... so both meet the same
machine: ``--ray`` starts a one-node Ray cluster of this machine for its run and shuts it down at the end, so the
local runs have no Ray process around. It prints, per backend, the step-time ratio Ray / local of each pair (the
cells' median step times) with the median and range over pairs; the fixed cost of the Ray path (cluster start,
reserving the node, starting the node agent) and the wall time of both kinds of run; and Ray's own idle CPU and
memory on the node (every process of an idle one-node cluster, sampled from /proc for ``--idle-seconds``).

Ray binds to the machine's external interface unless it has none: the script re-runs itself inside a loopback-only
network namespace (``unshare -n``, then ``ip link set lo up``; needs root), so nothing leaves the machine.

Usage: python benchmarks/ray_overhead.py [--pairs 3] [--tasks mlp] [--backends tf-graph,tf-eager,torch,jax]
                                         [--idle-seconds 10] [--json PATH] [-- more xfbench run flags]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
INSIDE = "XFBENCH_RAY_OVERHEAD_INSIDE"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3, help="local/Ray run pairs (default: %(default)s)")
    parser.add_argument("--tasks", default="mlp", help="xfbench run --tasks (default: %(default)s)")
    parser.add_argument("--backends", default="tf-graph,tf-eager,torch,jax",
                        help="xfbench run --backends (default: %(default)s)")
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="how long to sample an idle cluster "
                                                                         "(default: %(default)s)")
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    parser.add_argument("extra", nargs="*", help="more flags for xfbench run (after --)")
    args = parser.parse_args()
    if args.pairs < 1:
        parser.error(f"--pairs must be at least 1, got {args.pairs}")
    return args


def reexec_in_namespace() -> None:
    """Run this script again inside a loopback-only network namespace, and exit with its code."""
    quoted = " ".join(f"'{arg}'" for arg in [sys.executable, os.path.abspath(__file__), *sys.argv[1:]])
    env = {**os.environ, INSIDE: "1"}
    try:
        code = subprocess.call(["unshare", "-n", "sh", "-c", f"ip link set lo up && exec {quoted}"], env=env)
    except FileNotFoundError:
        raise SystemExit("ray_overhead.py needs unshare (util-linux) and root, to keep Ray on loopback") from None
    raise SystemExit(code)


def one_run(args: argparse.Namespace, ray: bool, path: str) -> tuple[float, dict]:
    command = [sys.executable, "-m", "xfbench", "run", "--tasks", args.tasks, "--backends", args.backends,
               "--json", path, "--quiet", *(["--ray"] if ray else []), *args.extra]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600, cwd=REPO,
                          env={**os.environ, "XFBENCH_RAY_ADDRESS": ""})
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"xfbench run{' --ray' if ray else ''} failed ({done.returncode}): {done.stderr[-2000:]}")
    with open(path, encoding="utf-8") as handle:
        return wall, json.load(handle)


def _proc_tree(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", encoding="utf-8") as handle:
                    parents.setdefault(int(handle.read().rsplit(")", 1)[1].split()[1]), []).append(int(name))
            except (OSError, ValueError, IndexError):
                continue
    out, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _cpu_and_rss(pids: list[int]) -> tuple[float, float]:
    """Summed user+system CPU seconds and resident MB of ``pids``."""
    ticks, pages = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    cpu = rss = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / ticks
            rss += int(fields[21]) * pages / 2**20
        except (OSError, ValueError, IndexError):
            continue
    return cpu, rss


def idle_cost(seconds: float) -> dict:
    """Ray's own CPU and memory with a one-node cluster up and nothing to do (this driver's processes excluded)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from xfbench.compare.platforms.ray import QUIET_NODE
    from xfbench.machine import usable_cores

    ray.init(num_cpus=usable_cores(), include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             _system_config=dict(QUIET_NODE))  # as xfbench starts its own cluster
    try:
        time.sleep(3.0)  # past start-up
        pids = _proc_tree(os.getpid())
        cpu_before, _ = _cpu_and_rss(pids)
        time.sleep(seconds)
        cpu_after, rss = _cpu_and_rss(pids)
    finally:
        ray.shutdown()
    return {"processes": len(pids), "cpu_percent_of_one_core": round(100 * (cpu_after - cpu_before) / seconds, 2),
            "rss_mb": round(rss, 1), "seconds": seconds}


def main() -> None:
    args = parse_args()
    if os.environ.get(INSIDE) != "1":
        reexec_in_namespace()
    from xfbench.machine import cpu_name, usable_cores

    print(f"machine: {cpu_name()}, {usable_cores()} usable cores; tasks {args.tasks}, backends {args.backends}, "
          f"{args.pairs} pairs", flush=True)
    ratios: dict[tuple[str, str], list[float]] = {}
    walls: dict[str, list[float]] = {"local": [], "ray": []}
    costs: list[dict] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for pair in range(args.pairs):
            order = (False, True) if pair % 2 == 0 else (True, False)
            steps: dict[bool, dict[tuple[str, str], float]] = {}
            for ray in order:
                wall, document = one_run(args, ray, os.path.join(folder, f"{pair}-{int(ray)}.json"))
                walls["ray" if ray else "local"].append(wall)
                steps[ray] = {(cell["task"], cell["backend"]): cell["timing"]["step_ms"]["median"]
                              for cell in document["cells"] if cell["status"] == "ok"}
                if ray:
                    executor = document["config"]["executor"]
                    costs.append({"cluster_start_s": executor.get("cluster_start_s"),
                                  "reserve_s": sum(unit["reserve_s"] for unit in executor["units"]),
                                  "agent_start_s": sum(unit["agent_start_s"] or 0 for unit in executor["units"])})
                print(f"pair {pair + 1}: {'ray  ' if ray else 'local'} run {wall:.1f} s", flush=True)
            for key in steps[False].keys() & steps[True].keys():
                ratios.setdefault(key, []).append(steps[True][key] / steps[False][key])
    print(f"\nstep time, Ray / local (median of {args.pairs} pairs [min - max]):")
    rows = []
    for (task, backend), values in sorted(ratios.items()):
        rows.append({"task": task, "backend": backend, "median": statistics.median(values), "min": min(values),
                     "max": max(values), "pairs": values})
        print(f"  {task:10s} {backend:14s} {statistics.median(values):.3f}  [{min(values):.3f} - {max(values):.3f}]")
    all_ratios = [value for values in ratios.values() for value in values]
    print(f"  all cells: median {statistics.median(all_ratios):.3f}, range {min(all_ratios):.3f} - "
          f"{max(all_ratios):.3f}")
    reference = args.backends.split(",")[0]
    print(f"\nwhat the comparison reports, Ray / local: each backend's step time relative to {reference} in the "
          f"same run (drift within a run cancels; median of pairs [min - max]):")
    relative = []
    for (task, backend), values in sorted(ratios.items()):
        base = ratios.get((task, reference))
        if backend == reference or base is None or len(base) != len(values):
            continue
        shifted = [value / ref for value, ref in zip(values, base, strict=True)]
        relative.append({"task": task, "backend": backend, "median": statistics.median(shifted),
                         "min": min(shifted), "max": max(shifted), "pairs": shifted})
        print(f"  {task:10s} {backend:14s} {statistics.median(shifted):.3f}  [{min(shifted):.3f} - "
              f"{max(shifted):.3f}]")
    fixed = {name: statistics.median(cost[name] for cost in costs if cost[name] is not None)
             for name in ("cluster_start_s", "reserve_s", "agent_start_s")}
    print(f"\nfixed cost of the Ray path (median of {len(costs)} runs): "
          f"cluster start {fixed['cluster_start_s']:.2f} s, reserving the node {fixed['reserve_s']:.3f} s, "
          f"starting the node agent {fixed['agent_start_s']:.2f} s")
    print(f"wall time per run (median): local {statistics.median(walls['local']):.1f} s, "
          f"ray {statistics.median(walls['ray']):.1f} s")
    idle = idle_cost(args.idle_seconds)
    print(f"\nRay idle on the node: {idle['processes']} processes, {idle['cpu_percent_of_one_core']:.2f}% of one core, "
          f"{idle['rss_mb']:.0f} MB resident (sampled {idle['seconds']:g} s)")
    print(f"\nbenchmark wall time: {time.perf_counter() - started:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"machine": cpu_name(), "tasks": args.tasks, "backends": args.backends, "ratios": rows,
                       "relative": relative, "fixed_cost": fixed, "costs": costs, "walls": walls, "idle": idle}, handle, indent=1)


if __name__ == "__main__":
    main()
