"""The results store: every saved run in one SQLite file, with its provenance, for history and CI.

Where: ``--store PATH``, else ``$XFBENCH_STORE``, else ``$XDG_DATA_HOME/xfbench/results.sqlite`` (by default
``~/.local/share/xfbench/results.sqlite``).

Tables (``schema_version`` in ``meta``; :data:`MIGRATIONS` brings an older file up to date when it is opened):
- ``runs``: one row per saved run (``kind`` ``run`` or ``ab``): when, the git commit, branch and dirty flag of the
  working directory it was started from (if it is a checkout), xfbench's version, the machine (CPU model, usable
  cores, hostname), the threads per framework, and the whole result document as JSON;
- ``cells``: one row per cell of a ``run``, for history: task, backend, device, status, task spec hash, step-time
  median, IQR and blocks, samples/s, the quality metric, the framework versions.

Safety: the file is in WAL mode, every save is one transaction (``BEGIN IMMEDIATE``, so two writers queue
instead of failing), and SQLite's journal makes a save all-or-nothing: a writer killed mid-save (``kill -9``) leaves
every earlier run intact and no half run. A writer waits up to 60 s (``$XFBENCH_STORE_WAIT`` seconds) for another
to finish; then it says, in one line, that the store is locked.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from xfbench.compare.results.ab import AB_KIND, AbResult, ab_document
from xfbench.compare.results.cell import Cell, quality_metric
from xfbench.compare.results.journal import parse
from xfbench.compare.results.result import Result, document_result
from xfbench.errors import XfbenchError

STORE_ENV = "XFBENCH_STORE"
WAIT_ENV = "XFBENCH_STORE_WAIT"
SCHEMA_VERSION = 1
WAIT_S = 60.0  # how long a writer waits for another to finish (default)

MIGRATIONS: dict[int, list[str]] = {  # version -> the statements that bring version - 1 to it
    1: [
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, created TEXT NOT NULL, saved TEXT NOT NULL,
            git_commit TEXT, git_branch TEXT, git_dirty INTEGER, cwd TEXT, xfbench TEXT,
            cpu TEXT, cores INTEGER, hostname TEXT, threads INTEGER, label TEXT, document TEXT NOT NULL)""",
        """CREATE TABLE cells (
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, task TEXT NOT NULL, backend TEXT NOT NULL,
            device TEXT NOT NULL, status TEXT NOT NULL, task_hash TEXT, step_ms REAL, step_iqr_ms REAL,
            blocks INTEGER, samples_per_s REAL, metric TEXT, metric_value REAL, versions TEXT,
            PRIMARY KEY (run_id, task, backend, device))""",
        "CREATE INDEX cells_by_cell ON cells (task, backend, device)",
    ],
}


def default_path() -> str:
    """``$XFBENCH_STORE``, else ``$XDG_DATA_HOME/xfbench/results.sqlite`` (``~/.local/share/...``)."""
    if os.environ.get(STORE_ENV):
        return os.environ[STORE_ENV]
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data_home, "xfbench", "results.sqlite")


def wait_seconds() -> float:
    """How long a writer waits for another (``$XFBENCH_STORE_WAIT``, default 60 s), or the one-line error naming the
    variable."""
    text = os.environ.get(WAIT_ENV)
    if text is None or not text.strip():
        return WAIT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 86400:
        raise XfbenchError(f"{WAIT_ENV}={text!r} must be a number of seconds from 0 to 86400")
    return value


def git_provenance(folder: str | None = None) -> dict[str, Any]:
    """The git commit, branch and dirty flag of ``folder`` (default: the working directory), or Nones outside a
    checkout."""
    folder = folder or os.getcwd()

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", folder, *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {"git_commit": None, "git_branch": None, "git_dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "git_dirty": None if status is None else bool(status)}


@dataclass
class RunRow:
    """One saved run, without its document."""

    id: int
    kind: str
    created: str
    git_commit: str | None
    git_branch: str | None
    git_dirty: bool | None
    xfbench: str | None
    cpu: str | None
    cores: int | None
    hostname: str | None
    threads: int | None
    label: str | None

    @property
    def machine(self) -> tuple[Any, ...]:
        """What makes two runs' times comparable: the CPU model, its usable cores and the threads per framework
        (not the hostname: CI runners are fresh machines of one kind)."""
        return (self.cpu, self.cores, self.threads)


@dataclass
class HistoryPoint:
    """One cell in one saved run."""

    run: RunRow
    task: str
    backend: str
    device: str
    status: str
    task_hash: str | None
    step_ms: float | None
    step_iqr_ms: float | None
    samples_per_s: float | None
    metric: str | None
    metric_value: float | None
    versions: dict[str, str]


RUN_COLUMNS = "id, kind, created, git_commit, git_branch, git_dirty, xfbench, cpu, cores, hostname, threads, label"


class Store:
    """A results store file. Use as a context manager, or call :meth:`close`.

    Example:
        >>> import tempfile
        >>> from xfbench.compare.results.cell import Cell, Device
        >>> with Store(os.path.join(tempfile.mkdtemp(), "s.sqlite")) as store:
        ...     run_id = store.save(Result(cells=[Cell("mlp", "torch", Device("cpu"), "ok")]))
        ...     [row.kind for row in store.runs()]
        ['run']
    """

    def __init__(self, path: str | None = None) -> None:
        self.path = os.fspath(path or default_path())
        self.wait_s = wait_seconds()
        if os.path.isdir(self.path):
            raise XfbenchError(f"the store {self.path!r} is a folder; give a file, e.g. {self.path}/results.sqlite")
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(folder, exist_ok=True)
            self.connection = sqlite3.connect(self.path, timeout=self.wait_s, isolation_level=None)
            self.connection.execute(f"PRAGMA busy_timeout = {round(self.wait_s * 1000)}")
            self.connection.execute("PRAGMA journal_mode = WAL")
            self.connection.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.OperationalError as error:
            raise self._locked() if "locked" in str(error) else XfbenchError(
                f"cannot open the store {self.path!r}: {error} (is it an xfbench store?)") from None
        except sqlite3.DatabaseError as error:
            raise XfbenchError(f"cannot open the store {self.path!r}: {error} (is it an xfbench store?)") from None
        except OSError as error:
            raise XfbenchError(f"cannot create the store {self.path!r}: {error.strerror or error}") from None

    def _locked(self) -> XfbenchError:
        return XfbenchError(f"the store {self.path!r} is locked by another process (waited {self.wait_s:g} s)")

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.connection.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self.connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            if "locked" in str(error) or "busy" in str(error):
                raise self._locked() from None
            raise
        try:
            yield self.connection
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")

    def version(self) -> int:
        try:
            row = self.connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.OperationalError:  # no meta table: a new, empty file
            return 0
        return int(row[0]) if row else 0

    def _migrate(self) -> None:
        with self._transaction() as db:
            current = self.version()
            if current > SCHEMA_VERSION:
                raise XfbenchError(f"the store {self.path!r} has schema {current}, newer than this xfbench's "
                                   f"{SCHEMA_VERSION}; upgrade xfbench")
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version]:
                    db.execute(statement)
                db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(version),))

    # ------------------------------------------------------------------------------------------ writing
    def save(self, result: Any, kind: str = "run", label: str | None = None, provenance: dict[str, Any] | None = None
             ) -> int:
        """Append one run (a :class:`~xfbench.compare.results.result.Result`, or an ``ab`` result with
        ``kind="ab"``) in one transaction; returns its id."""
        provenance = git_provenance() if provenance is None else provenance
        document = result.to_dict()
        machine = document.get("machine", {})
        config = document.get("config", {})
        now = datetime.datetime.now(datetime.timezone.utc).isoformat()
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO runs (kind, created, saved, git_commit, git_branch, git_dirty, cwd, xfbench, cpu, cores, "
                "hostname, threads, label, document) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (kind, document.get("created") or now, now, provenance.get("git_commit"), provenance.get("git_branch"),
                 provenance.get("git_dirty"), os.getcwd(), (document.get("versions") or {}).get("xfbench"),
                 machine.get("cpu"), machine.get("usable_cores"), machine.get("hostname"), config.get("threads"),
                 label, json.dumps(document, allow_nan=False)))
            run_id = int(cursor.lastrowid)  # type: ignore[arg-type]
            if kind == "run":
                db.executemany("INSERT INTO cells VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                               [_cell_row(run_id, cell) for cell in result.cells])
        return run_id

    # ------------------------------------------------------------------------------------------ reading
    def runs(self, kind: str | None = None) -> list[RunRow]:
        query = f"SELECT {RUN_COLUMNS} FROM runs" + (" WHERE kind = ?" if kind else "") + " ORDER BY id"
        return [_run_row(row) for row in self.connection.execute(query, (kind,) if kind else ())]

    def document(self, run_id: int) -> Any:
        """The saved run's JSON document; a row that is not JSON is one :class:`XfbenchError`."""
        row = self.connection.execute("SELECT document FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise XfbenchError(f"no run {run_id} in the store {self.path!r}")
        return parse(str(row[0]), self._name(run_id))

    def _name(self, run_id: int) -> str:
        return f"run {run_id} of the store {self.path!r}"

    def load(self, run_id: int) -> Result | AbResult:
        """The saved run as a :class:`~xfbench.compare.results.result.Result` (an ``ab`` run as its ``AbResult``);
        a document that is not one is one :class:`XfbenchError` naming the run."""
        document = self.document(run_id)
        if isinstance(document, dict) and document.get("kind") == AB_KIND:
            return ab_document(self._name(run_id), document)
        return document_result(self._name(run_id), document)

    def history(self, task: str | None = None, backend: str | None = None, device: str | None = None,
                since: str | None = None) -> list[HistoryPoint]:
        """Every saved cell matching the filters, oldest run first."""
        where, values = ["r.kind = 'run'"], []
        for column, value in (("c.task", task), ("c.backend", backend), ("c.device", device)):
            if value is not None:
                where.append(f"{column} = ?")
                values.append(value)
        if since is not None:
            where.append("r.created >= ?")
            values.append(since)
        query = (f"SELECT {', '.join('r.' + name for name in RUN_COLUMNS.split(', '))}, c.task, c.backend, c.device, "
                 "c.status, c.task_hash, c.step_ms, c.step_iqr_ms, c.samples_per_s, c.metric, c.metric_value, "
                 f"c.versions FROM cells c JOIN runs r ON r.id = c.run_id WHERE {' AND '.join(where)} "
                 "ORDER BY r.created, r.id")
        points = []
        for row in self.connection.execute(query, values):
            run = _run_row(row[:12])
            points.append(HistoryPoint(run, *row[12:22], versions=json.loads(row[22] or "{}")))
        return points


def _run_row(row: tuple[Any, ...]) -> RunRow:
    values = list(row)
    values[5] = None if values[5] is None else bool(values[5])
    return RunRow(*values)


def _cell_row(run_id: int, cell: Cell) -> tuple[Any, ...]:
    step = cell.timing.step_ms
    metric = quality_metric(cell)
    value = cell.metrics.get(metric) if metric else None
    return (run_id, cell.task, cell.backend, cell.device.kind, cell.status, cell.task_hash,
            step.median if step else None, step.iqr if step else None, step.n if step else None,
            cell.timing.samples_per_s, metric, value, json.dumps(cell.versions))
