"""What a worker is asked to be (:class:`WorkerSpec`), and the file it reads that from: the job format.

``xfbench ab`` starts workers in *other* environments, whose xfbench may be older or newer than the one driving the
run, so the job file must not depend on where classes live in either. Two formats, by version:

- **2** (this xfbench writes it for every worker that reads it): ``JOB.json``, a versioned plain document
  (``{"format": "xfbench-worker-job", "version": 2, "backend", "device", "threads", "malloc", "tasks": [...],
  "arrays": "JOB.npz"}``) with each task as ``tasks.serialize`` writes it, and the tasks' data arrays in an ``.npz``
  file beside it (read with ``allow_pickle=False``). Its tasks may use every layer, optimizer and option of the
  spec.
- **1**: the same document, written for an xfbench whose worker reads no newer one; its tasks are limited to what
  that xfbench knew (the first task API: ``tasks.serialize.first_newer_feature`` says what is not), because such a
  reader ignores a field it does not know.
- **0** (xfbench before the job format had a version): a pickle of ``xfbench.compare.executor.WorkerSpec`` holding
  ``xfbench.tasks.spec.Task`` objects. This xfbench writes it for an environment whose worker reads nothing else
  (naming every class by its path in *that* xfbench, without importing it here), with the same limits as version 1,
  and reads it from a driver that writes nothing else (rebuilding each spec value from its fields).

A driver learns which versions another environment's worker reads from ``xfbench.compare.worker.JOB_VERSIONS``
(absent: version 0), probed before any work starts (``compare.arms.probe_arm``).
"""

from __future__ import annotations

import copyreg
import dataclasses
import importlib
import json
import os
import pickle
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xfbench.compare.platforms.allocator import DEFAULT_POLICY
from xfbench.errors import XfbenchError
from xfbench.tasks.serialize import (
    ARRAYS,
    SPEC_TYPES,
    TASK_FIELDS,
    first_newer_feature,
    task_document,
    task_from_document,
)
from xfbench.tasks.spec import Dataset, Task

JOB_FORMAT = "xfbench-worker-job"
JOB_VERSION = 2
JOB_VERSIONS = (0, 1, 2)  # the job versions this xfbench's worker reads
LEGACY_SPEC = ("xfbench.compare.executor", "WorkerSpec")  # where version 0's WorkerSpec lived


@dataclass
class WorkerSpec:
    """One worker: a backend on a device with ``threads`` threads, able to prepare any of ``tasks`` (by index).

    ``python``: the interpreter to run it with (another virtual environment, for ``xfbench ab``); that environment's
    own installed xfbench serves the worker. None: this interpreter and this xfbench. ``env``: extra environment
    variables for the worker. ``job_version``: the job format that worker reads (:data:`JOB_VERSIONS` of its xfbench).
    """

    backend: str
    device: str
    threads: int
    tasks: list[Task] = field(default_factory=list)
    malloc: str = DEFAULT_POLICY
    python: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    job_version: int = JOB_VERSION


def common_version(theirs: Any) -> int | None:
    """The newest job version both this xfbench and a worker reading ``theirs`` know (None: none).

    Example:
        >>> common_version([0]), common_version([0, 1]), common_version([0, 1, 2, 3]), common_version("nonsense")
        (0, 1, 2, None)
    """
    try:
        shared = set(JOB_VERSIONS) & {int(version) for version in theirs}
    except (TypeError, ValueError):
        return None
    return max(shared) if shared else None


# ------------------------------------------------------------------------------------------------ writing
def job_problem(task: Task, version: int) -> str | None:
    """Why a worker reading job ``version`` cannot be given ``task`` (it would refuse it or build another model),
    or None."""
    if version >= 2:
        return None
    feature = first_newer_feature(task)
    if feature is None:
        return None
    return (f"task {task.name!r} uses {feature}, which an xfbench whose worker reads job versions up to {version} "
            f"does not know; compare that version on tasks of the first task API (dense, conv, pool layers; SGD, "
            f"Adam), or install a newer xfbench in that environment")


def write_job(spec: WorkerSpec, stem: str) -> str:
    """Write the job of ``spec`` next to ``stem`` (a path without extension) in the format its worker reads; returns
    the path to pass to the worker."""
    for task in spec.tasks:
        problem = job_problem(task, spec.job_version)
        if problem:
            raise XfbenchError(problem)
    if spec.job_version == 0:
        path = stem + ".pkl"
        with open(path, "wb") as handle:  # written and read by xfbench itself: internal transport only
            _LegacyPickler(handle, protocol=4).dump(_LegacySpec(spec))
        return path
    arrays: dict[str, np.ndarray] = {}
    tasks = []
    for index, task in enumerate(spec.tasks):
        document, data = task_document(task)
        tasks.append(document)
        arrays.update({f"{index}.{name}": value for name, value in data.items()})
    np.savez(stem + ".npz", **arrays)
    path = stem + ".json"
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"format": JOB_FORMAT, "version": min(spec.job_version, JOB_VERSION), "backend": spec.backend,
                   "device": spec.device,
                   "threads": spec.threads, "malloc": spec.malloc, "tasks": tasks,
                   "arrays": os.path.basename(stem + ".npz")}, handle)
    return path


class _Module:
    """Pickles as ``importlib.import_module(name)``: a module of the environment that unpickles it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __reduce__(self) -> tuple[Any, ...]:
        return importlib.import_module, (self.name,)


class _Class:
    """Pickles as ``getattr(module, name)``: a class of the environment that unpickles it, by its path there."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *args: Any) -> Any:  # pickle requires the constructor of a reduction to be callable
        raise TypeError(f"{self.module}.{self.name} exists only in the environment that reads the job")

    def __reduce__(self) -> tuple[Any, ...]:
        return getattr, (_Module(self.module), self.name)


class _LegacySpec:
    """Pickles as the version-0 ``WorkerSpec(backend, device, threads, tasks, malloc, python, env)``."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec

    def __reduce__(self) -> tuple[Any, ...]:
        spec = self.spec
        return _Class(*LEGACY_SPEC), (spec.backend, spec.device, spec.threads, list(spec.tasks), spec.malloc,
                                      spec.python, dict(spec.env))


# the instance attributes of version 0's spec objects: the dataclass fields (and Task's derived ones), nothing cached
LEGACY_PATH = "xfbench.tasks.spec"  # where version 0's Task, Dataset, layers and optimizers live
_LEGACY_KEEP = {"Task": (*TASK_FIELDS, "data", "input_shape", "shapes"), "Dataset": ARRAYS}


class _LegacyPickler(pickle.Pickler):
    """Pickles spec objects as version 0 holds them: the class by its path there, the fields of the first task API
    (a field added since is at its default here: ``job_problem`` ran), no cached values."""

    def reducer_override(self, obj: Any) -> Any:
        name = type(obj).__name__
        if not (isinstance(obj, (Task, Dataset)) or SPEC_TYPES.get(name) is type(obj)):
            return NotImplemented
        added = getattr(type(obj), "ADDED", {})
        keep = _LEGACY_KEEP.get(name)
        state = {key: value for key, value in vars(obj).items()
                 if (key in keep if keep else key not in added)}
        return copyreg._reconstructor, (_Class(LEGACY_PATH, name), object, None), state


# ------------------------------------------------------------------------------------------------ reading
class _LegacyFields:
    """What a version-0 job's objects unpickle into here: their class's name and their attributes, nothing else."""

    kind = ""


class _LegacyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == LEGACY_SPEC:
            return _LegacyFields
        if module == LEGACY_PATH and (name in SPEC_TYPES or name in ("Task", "Dataset")):
            return type(name, (_LegacyFields,), {"kind": name})
        return super().find_class(module, name)


def _rebuilt(value: Any) -> Any:
    """A spec value unpickled from an older xfbench, built again through its constructor from the fields it had
    (checked; fields added since take their defaults)."""
    if isinstance(value, (list, tuple)):
        return type(value)(_rebuilt(item) for item in value)
    if not isinstance(value, _LegacyFields):
        return value
    fields = vars(value)
    if value.kind == "Dataset":
        return Dataset(*(fields[name] for name in ARRAYS))
    if value.kind == "Task":
        return Task(data=_rebuilt(fields["data"]),
                    **{name: _rebuilt(fields[name]) for name in TASK_FIELDS if name in fields})
    cls = SPEC_TYPES[value.kind]
    names = {item.name for item in dataclasses.fields(cls) if item.init}
    return cls(**{key: _rebuilt(item) for key, item in fields.items() if key in names})


def read_job(path: str) -> WorkerSpec:
    """The :class:`WorkerSpec` of a job file of any version this xfbench reads."""
    with open(path, "rb") as handle:
        head = handle.read(1)
        handle.seek(0)
        if head == b"\x80":  # a pickle: version 0
            legacy = _LegacyUnpickler(handle).load()
            return WorkerSpec(legacy.backend, legacy.device, legacy.threads, [_rebuilt(task) for task in legacy.tasks],
                              getattr(legacy, "malloc", DEFAULT_POLICY), job_version=0)
        document = json.load(handle)
    if not isinstance(document, dict) or document.get("format") != JOB_FORMAT:
        raise XfbenchError(f"{path!r} is not an xfbench worker job")
    if document.get("version") not in JOB_VERSIONS:
        raise XfbenchError(f"{path!r} is a worker job of version {document.get('version')!r}; this xfbench reads "
                           f"versions {', '.join(map(str, JOB_VERSIONS))}")
    with np.load(os.path.join(os.path.dirname(path), document["arrays"]), allow_pickle=False) as stored:
        tasks = [task_from_document(task, {name: stored[f"{index}.{name}"] for name in ARRAYS})
                 for index, task in enumerate(document["tasks"])]
    return WorkerSpec(document["backend"], document["device"], int(document["threads"]), tasks, document["malloc"],
                      job_version=int(document["version"]))
