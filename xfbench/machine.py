"""Facts about this machine for result provenance: CPU model, cores, OS, Python, commit. Standard library only."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys


@functools.cache
def cpu_name() -> str:
    """The CPU model name (from /proc/cpuinfo on Linux), else platform's best guess."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (respects CPU affinity / container limits)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def git_commit() -> str | None:
    """The commit of the xfbench checkout, if it is one (None for an installed package)."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def machine_info() -> dict[str, object]:
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "hostname": platform.node(),
        "xfbench_commit": git_commit(),
        "executable": sys.executable,
    }
