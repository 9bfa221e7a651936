"""Property tests (hypothesis): whatever a user builds or types, xfbench either refuses it in one line before any
work, or runs it to a meaningful status.

- A generated Task (arrays, shapes, labels, layers, losses, hyperparameters, some of them nonsense) either raises
  ``XfbenchError`` when built, or trains on every installed backend (in this process, real frameworks) to ``ok`` or
  ``diverged`` (:class:`DivergedError`): never an exception from inside a framework.
- A generated ``xfbench run`` command line either becomes a plan or is refused with ``XfbenchError`` / exit code 2:
  never a traceback.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import in_process_backends, ready_backend
from xfbench import backends, cli
from xfbench.cli import common
from xfbench.cli import run as run_command
from xfbench.compare.engine.loop import DivergedError, train_cell
from xfbench.errors import XfbenchError
from xfbench.tasks import SGD, Adam, Dataset, Dense, Task

FINITE = st.floats(-1e3, 1e3, allow_nan=False, width=32)
ODD = st.sampled_from([np.nan, np.inf, -np.inf, 1e38])


@st.composite
def tasks(draw) -> Task:
    """A small dense task; about one draw in five holds something invalid (odd values, shapes, hyperparameters)."""
    samples = draw(st.integers(1, 40))
    features = draw(st.integers(0, 5))
    x = np.asarray(draw(st.lists(FINITE, min_size=samples * features, max_size=samples * features)), np.float32)
    x = x.reshape(samples, features)
    if samples * features and draw(st.integers(0, 9)) == 0:
        x.flat[draw(st.integers(0, x.size - 1))] = draw(ODD)
    loss = draw(st.sampled_from(["softmax_cross_entropy", "mse", "sigmoid_binary_cross_entropy"]))
    outputs = draw(st.integers(1, 4))
    if loss == "softmax_cross_entropy":
        y = np.asarray(draw(st.lists(st.integers(-1, outputs), min_size=samples, max_size=samples)), np.int64)
    elif loss == "mse":
        y = np.asarray(draw(st.lists(FINITE, min_size=samples * outputs, max_size=samples * outputs)), np.float32)
        y = y.reshape(samples, outputs)
    else:
        y = np.asarray(draw(st.lists(st.floats(-0.5, 1.5, width=32), min_size=samples * outputs,
                                     max_size=samples * outputs)), np.float32).reshape(samples, outputs)
    hidden = draw(st.lists(st.tuples(st.integers(1, 8), st.sampled_from(["relu", "tanh", "sigmoid", "linear"])),
                           max_size=2))
    rate = draw(st.one_of(st.floats(1e-5, 1e7), st.sampled_from([0.0, -1.0, np.inf, np.nan])))
    optimizer = SGD(rate, draw(st.floats(0, 0.95))) if draw(st.booleans()) else Adam(rate)
    data = Dataset.split(x, y, test_fraction=draw(st.floats(0.1, 0.5)), seed=draw(st.integers(0, 5)))
    return Task(name="generated", data=data, layers=(*[Dense(units, act) for units, act in hidden], Dense(outputs)),
                loss=loss, optimizer=optimizer, batch_size=draw(st.integers(1, 40)), epochs=draw(st.integers(1, 2)),
                metrics=("accuracy",) if loss != "mse" else ("r2", "mse"), seed=draw(st.integers(0, 3)))


# every in-process backend but those whose compile takes seconds per model (torch-compile: 30 generated models
# would take minutes; its conformance tests cover it)
INSTALLED = [name for name in in_process_backends() if backends.get(name).unavailable_reason() is None
             and not backends.get(name).slow_compile]


@pytest.mark.frameworks
@pytest.mark.skipif(not INSTALLED, reason="no framework installed")
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.data())
def test_a_generated_task_is_refused_or_trains_on_every_backend(data):
    try:
        task = data.draw(tasks())
    except XfbenchError as error:
        assert "\n" not in str(error)
        return
    for name in INSTALLED:
        backend = ready_backend(name)
        try:
            _, out = train_cell(backend, task, "cpu")
        except DivergedError:
            continue
        assert set(out["metrics"]) >= {"loss", "train_loss"}, name
        assert len(out["curve"]) == task.epochs, name


FLAG_VALUES = st.one_of(st.sampled_from(["", "0", "-1", "1", "2", "1e9", "nan", "inf", "x", "torch", "jax,torch",
                                         "regression", "mlp,nope", ",", "cpu", "gpu,tpu", "steady", "system",
                                         "rotate", "shuffle", "..", "/", "a" * 300]),
                        st.text(max_size=12))
FLAGS = ["--tasks", "--backends", "--devices", "--threads", "--epochs", "--seeds", "--timeout", "--rounds",
         "--processes", "--turn-seconds", "--order", "--relative-to", "--malloc", "--json", "--format", "--target",
         "--html", "--md", "--csv", "--resume"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(FLAGS), FLAG_VALUES), max_size=4),
       st.lists(st.sampled_from(["--sequential", "--parity", "--quiet"]), max_size=2))
def test_a_generated_command_line_is_a_plan_or_one_line(options, switches):
    """Everything ``xfbench run`` checks before starting work: the arguments, the plan, every output path."""
    argv = ["run", *[part for flag, value in options for part in (flag, value)], *switches]
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            args = cli.build_parser().parse_args(argv)
        except SystemExit as exit_:
            assert exit_.code == 2 and len(stderr.getvalue().splitlines()) == 1, (argv, stderr.getvalue())
            return
    try:
        from xfbench.reports.table import check_format

        check_format(args.format)
        run_command.run_request(args)
        common.report_paths(args)
    except XfbenchError as error:
        assert str(error) and "\n" not in str(error), argv
