"""Nothing measured is lost: results are written atomically, and cell by cell while a run goes on.

- :func:`write_atomic` writes a file through a temporary file in the same folder, flushed and fsynced, then renamed
  over the target: a reader sees the old file or the new one, never half of one, and a crash or a full disk leaves
  the previous file intact.
- :class:`Journal` is the partial file of a run, ``TARGET.partial``: JSON lines, a header (config, machine,
  versions) and then one line per finished cell, each appended and fsynced as the cell finishes. A run killed with
  ``kill -9`` keeps every cell it finished; a torn last line (killed mid-write) is ignored on reading.
  When the run ends, the whole result is written to ``TARGET`` (atomically) and the partial file is removed.
- :func:`read_result` reads a result file or, when there is one, the newer partial file beside it.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import TYPE_CHECKING, Any

from xfbench.errors import XfbenchError

if TYPE_CHECKING:
    from xfbench.compare.result import Cell, Result

PARTIAL_SUFFIX = ".partial"


def partial_path(target: str | os.PathLike[str]) -> str:
    return os.fspath(target) + PARTIAL_SUFFIX


def check_output(path: str | os.PathLike[str]) -> str:
    """``path`` if a result can be written there (checked before any work starts), else the one-line error.

    Missing parent folders are fine (they are created); a folder, an unwritable or non-folder parent, an empty
    name or one too long for the file system are not.
    """
    text = os.fspath(path)
    if not isinstance(text, str) or not text.strip():
        raise XfbenchError("the output path is empty; give a file name, e.g. --json results/run.json")
    if "\0" in text:
        raise XfbenchError(f"the output path {text!r} holds a NUL character; give a plain file name")
    if os.path.isdir(text):
        raise XfbenchError(f"the output path {text!r} is a folder; give a file name inside it, "
                           f"e.g. {os.path.join(text, 'result.json')!r}")
    name_max = 255
    try:
        name_max = os.pathconf(os.path.dirname(os.path.abspath(text)) or ".", "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        pass
    if len(os.path.basename(partial_path(text)).encode()) > name_max:
        raise XfbenchError(f"the output file name {os.path.basename(text)[:40]!r}... is too long for this file system "
                           f"(at most {name_max - len(PARTIAL_SUFFIX)} bytes)")
    ancestor = os.path.dirname(os.path.abspath(text))
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise XfbenchError(f"cannot write {text!r}: {ancestor!r} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise XfbenchError(f"cannot write {text!r}: the folder {ancestor!r} is not writable")
    return text


def _fsync_folder(folder: str) -> None:
    try:
        handle = os.open(folder or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` so that the file is either its old or its new content,
    never a mix."""
    path = os.fspath(path)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder or ".")
    try:
        os.fchmod(handle, 0o666 & ~_umask())  # mkstemp makes 0600; a result file gets the usual permissions
        with os.fdopen(handle, "wb") as stream:
            stream.write(data.encode("utf-8") if isinstance(data, str) else data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        if isinstance(error, OSError) and error.filename is None:  # say which file could not be written
            raise OSError(error.errno, error.strerror, path) from error
        raise
    _fsync_folder(folder)


class Journal:
    """The append-only partial file of a run in progress (see the module docstring)."""

    def __init__(self, target: str | os.PathLike[str], header: dict[str, Any], cells: list[Cell] | None = None) -> None:
        """Start ``TARGET.partial`` afresh with ``header`` and the ``cells`` already known (a resumed run's)."""
        self.target = os.fspath(target)
        self.path = partial_path(self.target)
        lines = [json.dumps({"kind": "header", **header}, allow_nan=False)]
        lines += [self._line(cell) for cell in cells or []]
        write_atomic(self.path, "".join(line + "\n" for line in lines))
        self._stream = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    @staticmethod
    def _line(cell: Cell) -> str:
        from xfbench.compare.result import _finite

        return json.dumps({"kind": "cell", "cell": _finite(cell.to_dict())}, allow_nan=False)

    def append(self, cell: Cell) -> None:
        """Add one finished cell; it is on disk when this returns."""
        self._stream.write(self._line(cell) + "\n")
        self._stream.flush()
        os.fsync(self._stream.fileno())

    def close(self) -> None:
        if not self._stream.closed:
            self._stream.close()

    def finish(self, result: Result) -> None:
        """Write the whole result to the target and remove the partial file."""
        self.close()
        result.save(self.target)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def read_partial(path: str) -> Result:
    """A result from a partial file (``complete`` is False); a torn last line is skipped."""
    header: dict[str, Any] | None = None
    cells: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as stream:
        lines = stream.read().split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number >= len(lines) - 1:  # the last line, cut short by a kill mid-write
                break
            raise XfbenchError(f"{path!r} line {number} is not JSON: {error}") from error
        if not isinstance(record, dict):
            raise XfbenchError(f"{path!r} line {number} is not a JSON object")
        if record.get("kind") == "header":
            header = record
        elif record.get("kind") == "cell" and isinstance(record.get("cell"), dict):
            cells.append(record["cell"])
    if header is None:
        raise XfbenchError(f"{path!r} is not an xfbench partial result (no header line)")
    data = {key: value for key, value in header.items() if key != "kind"}
    data["cells"] = cells
    result = _from_document(path, data, "partial result")
    result.complete = False
    return result


def _from_document(path: str, data: Any, what: str = "result") -> Result:
    """``Result.from_dict`` with every failure as one line naming the file."""
    from xfbench.compare.result import Result

    try:
        return Result.from_dict(data)
    except XfbenchError as error:
        raise XfbenchError(f"{path!r}: {error}") from None
    except (TypeError, ValueError, KeyError, AttributeError) as error:  # a shape check_document does not cover
        raise XfbenchError(f"{path!r} is not a valid xfbench {what}: {type(error).__name__}: {error}") from None


def read_result(path: str | os.PathLike[str]) -> Result:
    """Read ``path`` (a result JSON, or a partial file); when ``PATH.partial`` exists beside a result, the partial
    file is the newer record of an unfinished run and is read instead."""
    path = os.fspath(path)
    if not path.endswith(PARTIAL_SUFFIX) and os.path.exists(partial_path(path)):
        return read_partial(partial_path(path))
    if path.endswith(PARTIAL_SUFFIX):
        if not os.path.exists(path):
            raise XfbenchError(f"no result file at {path!r}")
        return read_partial(path)
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except FileNotFoundError as error:
        raise XfbenchError(f"no result file at {path!r}") from error
    except IsADirectoryError as error:
        raise XfbenchError(f"{path!r} is a folder, not a result file") from error
    except (OSError, UnicodeDecodeError) as error:
        raise XfbenchError(f"cannot read {path!r}: {error}") from error
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise XfbenchError(f"{path!r} is not a JSON result: {error}") from error
    return _from_document(path, data)
