"""The C allocator policy of worker processes: the same, steady malloc behaviour for every backend.

glibc's malloc serves large blocks with mmap and hands freed memory back to the OS (trimming, heap deletion),
with thresholds that adapt to each process's allocation history. A training step that frees and reallocates
tens of megabytes then page-faults that memory again every step, and how often depends on the process
(``python benchmarks/process_noise.py --backend torch|jax --workload cnn --malloc system`` vs ``--malloc steady``):
- torch, 28x28 CNN: identical fresh processes had 0 to 7,966 minor page faults per step; two identical
  processes taking turns measured 0.60-1.26x each other under glibc's defaults, 0.91-1.02x under ``steady``;
- jax, 28x28 CNN: XLA allocates two temporaries of 46 and 51 MB per step (above glibc's 32 MB mmap ceiling), so
  every step mmaps and unmaps them: 11,243-11,419 page faults and 54.8 ms per step, against 12-1,024 faults
  and 39.6 ms under ``steady``.

``steady`` (the default) starts each worker with GLIBC_TUNABLES that keep freed memory in the process (no mmap for
allocations, no trimming, heaps kept): the page-fault cost, and with it most of the process-to-process
variation, disappears for every framework alike. The price is memory that stays with the process (jax on the
28x28 CNN task: 1,138 MB peak RSS against 898 MB).
``system`` leaves glibc's defaults, i.e. what a framework gets out of the box. A GLIBC_TUNABLES the user already
set is respected and recorded. On systems without glibc the variable has no effect and is recorded as such.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from typing import Any

POLICIES = ("steady", "system")
DEFAULT_POLICY = "steady"
STEADY_TUNABLES = ":".join([
    "glibc.malloc.mmap_max=0",                  # no mmap-per-allocation: large blocks come from the heap
    "glibc.malloc.trim_threshold=17179869184",  # never give the top of the heap back to the OS (16 GiB)
    "glibc.malloc.top_pad=268435456",           # grow by 256 MiB and keep per-thread heaps once made
])


def worker_env(policy: str, env: Mapping[str, str]) -> dict[str, str]:
    """``env`` for a worker process under ``policy`` (the user's own GLIBC_TUNABLES wins).

    Example:
        >>> worker_env("steady", {"HOME": "/root"})["GLIBC_TUNABLES"].split(":")[0]
        'glibc.malloc.mmap_max=0'
        >>> worker_env("system", {"HOME": "/root"})
        {'HOME': '/root'}
    """
    out = dict(env)
    if policy == "steady" and "GLIBC_TUNABLES" not in env:
        out["GLIBC_TUNABLES"] = STEADY_TUNABLES
    return out


def describe(policy: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What the workers run with, for the result's ``config.malloc``."""
    env = os.environ if env is None else env
    user = env.get("GLIBC_TUNABLES")
    return {
        "policy": "user" if user is not None else policy,
        "glibc_tunables": worker_env(policy, env).get("GLIBC_TUNABLES"),
        "libc": " ".join(filter(None, platform.libc_ver())) or "unknown (GLIBC_TUNABLES has no effect)",
    }
