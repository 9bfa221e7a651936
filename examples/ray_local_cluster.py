"""Try the Ray executor on a local multi-node cluster: ``xfbench run --ray`` against N nodes on this machine.

Starts ``ray.cluster_utils.Cluster`` (a head without CPUs, where the driver runs, and ``--nodes`` nodes of
``--cpus-per-node`` CPUs each, labelled ``node=0``, ``node=1``, ...), runs ``xfbench run --ray ADDRESS`` with the
flags after ``--``, and shuts the cluster down. On one machine the nodes share its cores, so give each node its own
share (the default splits the usable cores). Ray binds to the external interface unless there is none: the script
re-runs itself inside a loopback-only network namespace (``unshare -n``, needs root) unless ``--no-namespace``.

Usage: python examples/ray_local_cluster.py [--nodes 2] [--cpus-per-node 1] -- --tasks mlp,cnn --json out.json
       python examples/ray_local_cluster.py -- --tasks regression --on-each node=1
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

INSIDE = "XFBENCH_RAY_EXAMPLE_INSIDE"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=2, help="worker nodes (default: %(default)s)")
    parser.add_argument("--cpus-per-node", type=int, help="CPUs per node (default: usable cores / nodes, >= 1)")
    parser.add_argument("--no-namespace", action="store_true", help="do not enter a loopback-only namespace")
    parser.add_argument("run", nargs="*", help="flags for xfbench run (after --)")
    args = parser.parse_args()
    if not args.no_namespace and os.environ.get(INSIDE) != "1":
        quoted = " ".join(f"'{arg}'" for arg in [sys.executable, os.path.abspath(__file__), *sys.argv[1:]])
        return subprocess.call(["unshare", "-n", "sh", "-c", f"ip link set lo up && exec {quoted}"],
                               env={**os.environ, INSIDE: "1"})
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from ray.cluster_utils import Cluster

    cpus = args.cpus_per_node or max(1, len(os.sched_getaffinity(0)) // args.nodes)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False,
                                                            "object_store_memory": 100 << 20})
    try:
        for index in range(args.nodes):
            cluster.add_node(num_cpus=cpus, object_store_memory=100 << 20, labels={"node": str(index)})
        print(f"cluster: {args.nodes} nodes of {cpus} CPUs at {cluster.address}", file=sys.stderr, flush=True)
        return subprocess.call([sys.executable, "-m", "xfbench", "run", "--ray", cluster.address, *args.run])
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
