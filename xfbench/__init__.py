"""xfbench: the same machine-learning task on TensorFlow (graph and eager), PyTorch and JAX, compared fairly.

Importing xfbench imports no framework: each backend runs in its own worker process.

Example:
    >>> import xfbench
    >>> result = xfbench.run(tasks="mlp", backends="torch", epochs=1)  # doctest: +SKIP
    >>> result.cell("mlp", "torch").metrics["accuracy"]  # doctest: +SKIP
    0.9...
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from xfbench._version import __version__
from xfbench.compare.results import views
from xfbench.errors import XfbenchError

if TYPE_CHECKING:
    from xfbench.compare.protocol import TimingOptions
    from xfbench.compare.results.ab import AbResult, Verdict
    from xfbench.compare.results.result import Result
    from xfbench.tasks import Task


def run(tasks: str | Sequence[str | Task] | None = None, backends: str | Sequence[str] | None = None,
        devices: str | Sequence[str] | None = None, threads: int | None = None, epochs: int | None = None,
        timeout: float = 600.0, seeds: int = 1, parity: bool = False, timing: TimingOptions | None = None,
        progress: Callable[[str], None] | None = None, malloc: str = "steady", rounds: int | None = None,
        processes: int | None = None, sequential: bool = False, relative_to: str | None = None,
        output: str | None = None, resume: bool = False, target: float | None = None,
        executor: str | None = None, ray_address: str | None = None, on_each: str | None = None) -> Result:
    """Train every task on every backend and device, time them side by side; return accuracy, speed and provenance.

    Args:
        tasks: built-in task names (``"regression,mlp,cnn"``, the default) and/or :class:`xfbench.tasks.Task` objects.
        backends: any registered backend: ``tf-graph``, ``tf-eager``, ``torch``, ``jax`` (the default four),
            ``tf-xla``, ``torch-compile``, ``keras-jax``, ``keras-tensorflow``, ``keras-torch``, or ``"all"``.
        devices: ``cpu`` (default) and/or ``gpu``.
        threads: threads (and cores) per framework, the same for all; default: all usable cores.
        epochs: override every task's epoch count.
        timeout: seconds allowed per worker command (training one task, one timing turn) before the worker is killed
            and its cell marked ``error``.
        seeds: train each cell with this many seeds (the same for every backend); accuracy becomes mean ± std.
        parity: also check each backend against the float64 NumPy reference (see ``xfbench parity``).
        timing: steady-state timing settings (``TimingOptions``); ``rounds``, ``processes`` and ``sequential``
            override its fields.
        progress: called with one line of text per step of progress (the CLI prints them).
        malloc: the C allocator policy of the worker processes, the same for every backend: ``steady`` (default;
            glibc keeps freed memory, so steps don't page-fault it back in) or ``system`` (glibc's defaults, what a
            framework gets out of the box). See ``xfbench.compare.platforms.allocator``.
        rounds: timing rounds per task (each live worker takes one turn per round).
        processes: fresh worker processes per backend (the process, not the turn, is the unit of replication).
        sequential: time one backend after another instead of interleaving (less memory; drift not cancelled).
        relative_to: the backend step-time ratios are relative to (default: the fastest of each task).
        output: write the result here (JSON); finished cells go to ``OUTPUT.partial`` as they finish. An
            interrupted run's partial file there is refused (resume it, or remove it).
        resume: keep the cells already saved at ``output`` (the result or its partial file; the same plan) and run
            only the missing ones; the whole result is written to ``output``.
        target: the time-to-accuracy target of every task (default: each task's own ``Task.target``).
        executor: where the cells run: ``"local"`` (this machine, the default) or ``"ray"`` (a Ray cluster,
            ``pip install 'xfbench[ray]'``: each task reserves a whole node and runs there with xfbench's own
            workers; see :mod:`xfbench.compare.platforms.ray`). ``ray_address`` or ``on_each`` imply ``"ray"``.
        ray_address: the cluster: ``"auto"``, ``"HOST:PORT"``, ``"ray://HOST:PORT"``; None: ``$XFBENCH_RAY_ADDRESS``,
            else a one-node cluster of this machine started for the run (a Ray already initialized in this process
            is used as it is).
        on_each: ``"LABEL=VALUE"``: run the whole matrix on every Ray node carrying that label, to compare machines.
            On Ray, ``threads`` is checked against each node's cores (None: each node uses all of its own).

    Returns:
        A :class:`xfbench.compare.results.result.Result`; ``result.save(path)`` writes the JSON.

    Example:
        >>> result = xfbench.run(tasks="regression", backends=["torch", "jax"])  # doctest: +SKIP
        >>> print(xfbench.table(result))  # doctest: +SKIP
    """
    from xfbench.compare.executors import plan_executor
    from xfbench.compare.plan import make_plan
    from xfbench.compare.protocol import TimingOptions
    from xfbench.compare.session import execute
    from xfbench.compare.stats.parity import ParityOptions

    options = timing or TimingOptions()
    if isinstance(options, TimingOptions):  # anything else is refused by make_plan, in one line
        options = options.changed(rounds=rounds, processes=processes, schedule="sequential" if sequential else None)
    placed = plan_executor(executor, ray_address, on_each, threads)
    plan = make_plan(tasks, backends, devices, None if placed is not None else threads, epochs, timeout, seeds,
                     timing=options, malloc=malloc, relative_to=relative_to, target=target)
    if output is not None:
        from xfbench.compare.results.files import check_output

        check_output(output)
    return execute(plan, progress, output=output, resume=resume, executor=placed,
                   parity=ParityOptions() if parity else None)


def ab(base_python: str, head_python: str, tasks: str | Sequence[str | Task] | None = None,
       backends: str | Sequence[str] | None = None, threads: int | None = None, epochs: int | None = None,
       pairs: int | None = None, rounds: int | None = None, turn_s: float | None = None, min_effect: float = 0.05,
       alpha: float = 0.05, timeout: float = 600.0, output: str | None = None, inject_slowdown: str | None = None,
       progress: Callable[[str], None] | None = None, allow_missing: bool = False) -> AbResult:
    """Time the same matrix in two Python environments together and decide, per cell, whether the head regressed.

    Base and head workers of each cell are alive together and take alternating turns, over ``pairs`` fresh process
    pairs (default 6, taken pair-major: pair 1 of every cell, then pair 2, ...); see ``xfbench ab --help`` and
    :mod:`xfbench.compare.stats.gate` for the statistics.
    ``inject_slowdown`` is for testing the gate only (``"0.2"`` or ``"torch=0.2"``: the head's timed blocks made
    that much longer with real busy work). ``result.exit_code`` is 1 when a cell regressed, or was missing or failed
    in the head (unless ``allow_missing``).

    Example:
        >>> outcome = xfbench.ab("base/bin/python", "head/bin/python", tasks="mlp")  # doctest: +SKIP
        >>> [(v.backend, v.verdict) for v in outcome.verdicts]  # doctest: +SKIP
        [('tf-graph', 'no change'), ('tf-eager', 'no change'), ('torch', 'regression'), ('jax', 'no change')]
    """
    from xfbench.compare.ab import run_ab
    from xfbench.compare.arms import ab_request

    if output is not None:
        from xfbench.compare.results.files import check_output

        check_output(output)
    plan, base, head, pairs = ab_request(base_python, head_python, tasks, backends, threads, epochs, pairs, rounds,
                                         turn_s, min_effect, alpha, timeout, inject_slowdown)
    return run_ab(plan, base, head, pairs, min_effect, alpha, progress, output, allow_missing)


def check(result: Result | str, baseline: Result | str, min_effect: float = 0.05, alpha: float = 0.05
          ) -> list[Verdict]:
    """Every cell of ``result`` against the same cell of ``baseline`` (results or paths), from their saved turns, and
    every baseline cell the result lacks (``missing``): weaker evidence than :func:`ab` (the runs were timed apart).
    A result with no cells is an error. See :mod:`xfbench.compare.stats.gate`."""
    from xfbench.compare.stats.gate import check_verdicts

    loaded = [load(item) if isinstance(item, str) else item for item in (result, baseline)]
    return check_verdicts(loaded[1], loaded[0], min_effect, alpha,
                          name=repr(result) if isinstance(result, str) else "the result")


def table(result: Result, fmt: str = "simple", target: float | None = None) -> str:
    """The result as text tables, one per task and device (``fmt`` is a tabulate format, e.g. ``github``; an unknown
    one is refused with the choices). For Markdown, HTML or CSV see :mod:`xfbench.reports`."""
    from xfbench.reports.table import render

    return render(result, fmt, target)


def load(path: str) -> Result:
    """Read a result JSON written by ``Result.save`` or ``xfbench run --json``."""
    from xfbench.compare.results.result import Result

    return Result.load(path)


# --------------------------------------------------------------------- what a Result shows but does not compute
def _compare(result: Result, relative_to: str | None = None) -> None:
    from xfbench.compare.stats.ratios import compare_result

    compare_result(result, relative_to)


def _html(result: Result) -> str:
    from xfbench.reports.html import tables

    return tables(result)


def _plot(result: Result, kinds: str | list[str] | None = None, task: str | None = None,
          target: float | None = None) -> list[object]:
    from xfbench.reports.plots import result_figures

    return result_figures(result, kinds, task, target)


views.register(compare=_compare, html=_html, plot=_plot)

_LAZY = {"reports": "xfbench.reports", "Store": "xfbench.compare.results.store:Store",
         "TimingOptions": "xfbench.compare.protocol:TimingOptions", "Result": "xfbench.compare.results.result:Result"}


def __getattr__(name: str) -> object:
    """``xfbench.reports``, ``xfbench.Store``, ``xfbench.TimingOptions``, ``xfbench.Result`` without an explicit
    import (loaded on first use: ``import xfbench`` stays light)."""
    if name in _LAZY:
        import importlib

        module, _, attribute = _LAZY[name].partition(":")
        loaded = importlib.import_module(module)
        return getattr(loaded, attribute) if attribute else loaded
    raise AttributeError(f"module 'xfbench' has no attribute {name!r}")


__all__ = ["Result", "Store", "TimingOptions", "XfbenchError", "__version__", "ab", "check", "load", "reports", "run",
           "table"]
