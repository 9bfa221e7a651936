"""The worker allocator policy (``--malloc``): what the workers are started with, that it is recorded, and that
``steady`` really stops the per-step page faults it exists to stop."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys

import pytest

import xfbench
from tests.conftest import small
from xfbench.compare.plan import make_plan
from xfbench.compare.platforms.allocator import STEADY_TUNABLES, describe, worker_env
from xfbench.compare.protocol import TimingOptions
from xfbench.errors import XfbenchError

GLIBC = platform.libc_ver()[0] == "glibc"


def test_worker_env_per_policy():
    assert worker_env("steady", {"PATH": "/bin"}) == {"PATH": "/bin", "GLIBC_TUNABLES": STEADY_TUNABLES}
    assert worker_env("system", {"PATH": "/bin"}) == {"PATH": "/bin"}
    own = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=1"}
    assert worker_env("steady", own) == own, "a user's own GLIBC_TUNABLES must win"
    assert describe("steady", own)["policy"] == "user"
    assert describe("system", {})["policy"] == "system" and describe("system", {})["glibc_tunables"] is None


def test_unknown_policy_is_rejected_with_the_choices():
    with pytest.raises(XfbenchError, match=r"^unknown malloc policy 'jemalloc'; choose one of: steady, system$"):
        make_plan("regression", "torch", malloc="jemalloc")


@pytest.mark.parametrize("policy", ["steady", "system"])
def test_workers_run_under_the_policy_and_the_result_records_it(fakes, policy, monkeypatch):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    result = xfbench.run(tasks=[small("a")], backends="fake-ref", threads=1, timing=TimingOptions.quick(),
                         malloc=policy)
    cell = result.cell("a", "fake-ref")
    assert cell.ok, cell.error
    expected = STEADY_TUNABLES if policy == "steady" else None
    assert cell.fingerprint["glibc_tunables"] == expected
    assert result.config["malloc"]["policy"] == policy
    assert result.config["malloc"]["glibc_tunables"] == expected


@pytest.mark.skipif(not GLIBC, reason="GLIBC_TUNABLES is a glibc feature")
def test_a_run_reports_the_page_faults_the_policy_prevents(fakes, monkeypatch):
    """End to end: a backend whose step frees and retakes 48 MiB faults it back in every step under glibc's
    defaults, and the cell's ``page_faults_per_step`` shows it; under ``steady`` it does not."""
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    faults = {}
    for policy in ("system", "steady"):
        result = xfbench.run(tasks=[small("a")], backends="fake-scratch", threads=1, timing=TimingOptions.quick(),
                             malloc=policy)
        cell = result.cell("a", "fake-scratch")
        assert cell.ok, cell.error
        faults[policy] = (cell.timing.page_faults_per_step, xfbench.table(result))
    pages = (48 << 20) // 4096
    assert faults["system"][0] > pages / 2, faults
    assert faults["steady"][0] < pages / 100, faults
    assert re.search(r"ok \([\d,]+ page faults/step\)", faults["system"][1]), "the table should flag the faults"
    assert "page faults" not in faults["steady"][1]


# 40 rounds of malloc(48 MiB), write every page, free: glibc's default serves a block this large with mmap and
# unmaps it on free, so every round faults all 12,288 pages in again.
FAULTS = """
import ctypes, resource
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size, rounds = 48 << 20, 40
def once():
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
once()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(rounds):
    once()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / rounds)
"""


@pytest.mark.processes
@pytest.mark.skipif(not GLIBC, reason="GLIBC_TUNABLES is a glibc feature")
def test_steady_policy_stops_refaulting_freed_memory(monkeypatch):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)

    def faults_per_round(policy: str) -> float:
        done = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True, check=True,
                              env=worker_env(policy, os.environ))
        return float(done.stdout)

    pages = (48 << 20) // 4096
    system, steady = faults_per_round("system"), faults_per_round("steady")
    assert system > pages / 2, f"glibc's default should refault the block every round: {system:.0f} faults/round"
    assert steady < pages / 100, f"steady should keep the block mapped: {steady:.0f} faults/round"
