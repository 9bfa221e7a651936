"""Nothing measured is lost: the partial file of a run in progress, and reading a result document from disk.

- :class:`Journal` is the partial file of a run, ``TARGET.partial``: JSON lines, a header (config, machine,
  versions) and then one line per finished cell, each appended and fsynced as the cell finishes. A run killed with
  ``kill -9`` keeps every cell it finished; a torn last line (killed mid-write) is ignored on reading. When the run
  ends, the whole result is written to ``TARGET`` (atomically) and the partial file is removed.
- :func:`read_document` reads a result file or, when there is one, the newer partial file beside it, as the JSON
  document (a dict); ``Result.load`` types it.

Everything here handles documents (dicts), never the typed model, so the model builds on this module and not the
reverse.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from xfbench.compare.results.files import PARTIAL_SUFFIX, finite, jsonable, partial_path, write_atomic
from xfbench.errors import XfbenchError


def _line(record: dict[str, Any]) -> str:
    return json.dumps(finite(record), allow_nan=False, default=jsonable)


class Journal:
    """The append-only partial file of a run in progress (see the module docstring)."""

    def __init__(self, target: str | os.PathLike[str], header: dict[str, Any],
                 cells: list[dict[str, Any]] | None = None) -> None:
        """Start ``TARGET.partial`` afresh with ``header`` and the ``cells`` already known (a resumed run's)."""
        self.target = os.fspath(target)
        self.path = partial_path(self.target)
        lines = [_line({"kind": "header", **header})] + [_line({"kind": "cell", "cell": cell}) for cell in cells or []]
        write_atomic(self.path, "".join(line + "\n" for line in lines))
        self._stream = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def append(self, cell: dict[str, Any]) -> None:
        """Add one finished cell (its document); it is on disk when this returns."""
        self._stream.write(_line({"kind": "cell", "cell": cell}) + "\n")
        self._stream.flush()
        os.fsync(self._stream.fileno())

    def close(self) -> None:
        if not self._stream.closed:
            self._stream.close()

    def finish(self, document: str) -> None:
        """Write the whole result (its JSON text) to the target and remove the partial file."""
        self.close()
        write_atomic(self.target, document)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def read_partial(path: str) -> dict[str, Any]:
    """The document of a partial file (``complete`` False): its header and every whole cell line; a torn last line is
    skipped."""
    header: dict[str, Any] | None = None
    cells: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as stream:
        lines = stream.read().split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = parse(line, f"{path!r} line {number}")
        except XfbenchError:
            if number >= len(lines) - 1:  # the last line, cut short by a kill mid-write
                break
            raise
        if not isinstance(record, dict):
            raise XfbenchError(f"{path!r} line {number} is not a JSON object")
        if record.get("kind") == "header":
            header = record
        elif record.get("kind") == "cell" and isinstance(record.get("cell"), dict):
            cells.append(record["cell"])
    if header is None:
        raise XfbenchError(f"{path!r} is not an xfbench partial result (no header line)")
    document = {key: value for key, value in header.items() if key != "kind"}
    document["cells"] = cells
    document["complete"] = False
    return document


def read_document(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON document at ``path`` (a result, or a partial file); when ``PATH.partial`` exists beside a result, the
    partial file is the newer record of an unfinished run and is read instead."""
    path = os.fspath(path)
    try:
        if not path.endswith(PARTIAL_SUFFIX) and os.path.exists(partial_path(path)):
            path = partial_path(path)
        if path.endswith(PARTIAL_SUFFIX):
            return read_partial(path)
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except FileNotFoundError as error:
        raise XfbenchError(f"no result file at {path!r}") from error
    except IsADirectoryError as error:
        raise XfbenchError(f"{path!r} is a folder, not a result file") from error
    except (OSError, UnicodeDecodeError) as error:
        raise XfbenchError(f"cannot read {path!r}: {error}") from error
    return parse(text, repr(path), "is not a JSON result")


def parse(text: str, where: str, not_json: str = "is not JSON") -> Any:
    """JSON ``text`` (from ``where``, e.g. a quoted file name), every failure one line naming it: not JSON
    (``not_json``), nested too deeply for this interpreter, a number too large to read."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise XfbenchError(f"{where} {not_json}: {error}") from None
    except RecursionError:
        raise XfbenchError(f"{where} is nested too deeply to be an xfbench document") from None
    except ValueError as error:  # e.g. an integer of thousands of digits
        raise XfbenchError(f"{where} holds a number too large to read ({' '.join(str(error).split())[:80]})") from None
    return _whole_characters(document) if LONE_SURROGATE.search(text) or "\\ud" in text.lower() else document


LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _whole_characters(value: Any) -> Any:
    """``value`` with every lone surrogate in its strings (JSON can escape one; nothing can print or write it as
    UTF-8) replaced by U+FFFD."""
    if isinstance(value, str):
        return LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_whole_characters(item) for item in value]
    if isinstance(value, dict):
        return {_whole_characters(key): _whole_characters(item) for key, item in value.items()}
    return value
