"""The request of an ``xfbench ab`` comparison, checked before any work starts: its two arms (each an interpreter
whose xfbench is probed for what its workers read), the test-only slowdown, and the plan timed in both.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Any

from xfbench.compare.engine.timing import SLOWDOWN_ENV, injected_slowdown
from xfbench.compare.plan import Plan, make_plan
from xfbench.compare.platforms.job import common_version, job_problem
from xfbench.compare.protocol import TimingOptions
from xfbench.compare.stats.gate import ALPHA, MIN_EFFECT, check_settings
from xfbench.errors import XfbenchError

DEFAULT_PAIRS = 6  # even: each arm starts first, and times first, in half of the pairs
# Turns of one cell's two workers are 10 to 35% apart on this shared machine (2 cores, measured Dec 2026), so a
# pair needs many rounds for its ratio to settle; 30 rounds of 0.1 s keep one task x four backends within minutes.
DEFAULT_TIMING = TimingOptions(rounds=30, turn_s=0.1, min_blocks=2, untimed_s=None,
                               imports="each pair's base and head workers together")
# Runs in the other environment: works with every xfbench version (the job versions its worker reads: version 0
# where xfbench.compare.worker has no JOB_VERSIONS)
PROBE = ("import json, platform, sys\n"
         "import xfbench\n"
         "import xfbench.compare.worker as worker\n"
         "from xfbench.machine import git_commit\n"
         "print(json.dumps({'xfbench': xfbench.__version__, 'location': xfbench.__file__, 'commit': git_commit(),\n"
         "                  'python_version': platform.python_version(), 'executable': sys.executable,\n"
         "                  'job_versions': list(getattr(worker, 'JOB_VERSIONS', [0]))}))\n")


@dataclass
class Arm:
    """One side of the comparison: an interpreter (its environment's xfbench and frameworks) and extra variables."""

    name: str
    python: str
    env: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"python": self.python, "env": self.env, **self.info}

    @property
    def job_version(self) -> int:
        """The job format this arm's worker reads (found by :func:`probe_arm`)."""
        return int(self.info.get("job_version", 0))


def probe_arm(name: str, python: str, env: dict[str, str] | None = None, timeout: float = 120.0) -> Arm:
    """Check that ``python`` runs and imports xfbench (before any work starts); the arm with what it found."""
    flag = f"--{name}-python"
    if not python or not isinstance(python, str):
        raise XfbenchError(f"{flag} is empty; give the interpreter of a virtual environment, e.g. base-env/bin/python")
    if not os.path.isfile(python) or not os.access(python, os.X_OK):
        raise XfbenchError(f"{flag} {python!r} is not an executable file; give e.g. base-env/bin/python")
    python = os.path.abspath(python)  # the probe and the workers run elsewhere; a symlink stays one (a venv's python)
    try:
        out = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
                             cwd=tempfile.gettempdir())  # not this folder: ``-c`` puts it first on sys.path
    except (OSError, subprocess.SubprocessError) as error:
        raise XfbenchError(f"{flag} {python!r} does not run: {error}") from None
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise XfbenchError(f"{flag} {python!r} cannot import xfbench ({last}); install it into that environment: "
                           f"{python} -m pip install 'xfbench[all]'")
    info = json.loads(lines[-1])
    version = common_version(info.get("job_versions", [0]))
    if version is None:
        raise XfbenchError(f"{flag} {python!r} runs xfbench {info.get('xfbench')}, whose worker reads job versions "
                           f"{info.get('job_versions')}, none of which this xfbench writes; install one xfbench in both")
    return Arm(name, python, dict(env or {}), {**info, "job_version": version})


def check_slowdown(value: str | None) -> str | None:
    """The ``--inject-slowdown`` value (``0.2`` or ``torch=0.2,jax=0.1``), or the one-line error."""
    if value is None:
        return None
    try:
        names = [item.partition("=")[0].strip() for item in value.split(",")] if "=" in value else []
        fractions = [injected_slowdown(name, value) for name in names] if names else [injected_slowdown("", value)]
    except ValueError:
        raise XfbenchError(f"--inject-slowdown {value!r}: give a fraction such as 0.2, or BACKEND=FRACTION,...") from None
    if any(not 0 <= fraction <= 10 for fraction in fractions):
        raise XfbenchError(f"--inject-slowdown {value!r}: each fraction must be between 0 and 10")
    return value


def ab_request(base_python: str, head_python: str, tasks: Any = None, backends: Any = None,
               threads: int | None = None, epochs: int | None = None, pairs: int | None = None,
               rounds: int | None = None, turn_s: float | None = None, min_effect: float = MIN_EFFECT,
               alpha: float = ALPHA, timeout: float = 600.0, inject_slowdown: str | None = None
               ) -> tuple[Plan, Arm, Arm, int]:
    """Validate an ``ab`` request (CLI and Python API alike) and probe both interpreters, before any work starts;
    returns the plan, the two arms and the number of pairs."""
    pairs = DEFAULT_PAIRS if pairs is None else pairs
    if isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 2:
        raise XfbenchError(f"--pairs must be at least 2 (the process pair is the unit of replication), got {pairs!r}")
    check_settings(min_effect, alpha)
    slowdown = check_slowdown(inject_slowdown)
    plan = make_plan(tasks, backends, "cpu", threads, epochs, timeout,
                     timing=DEFAULT_TIMING.changed(rounds=rounds, turn_s=turn_s, processes=pairs))
    base = probe_arm("base", base_python)
    head = probe_arm("head", head_python, {SLOWDOWN_ENV: slowdown} if slowdown else None)
    for arm in (base, head):
        for task in plan.tasks:
            problem = job_problem(task, arm.job_version)
            if problem:
                raise XfbenchError(f"--{arm.name}-python runs xfbench {arm.info.get('xfbench')}: {problem}")
    return plan, base, head, pairs
