"""Files that are never half written, and the JSON rules every document of xfbench follows.

- :func:`write_atomic` writes a file through a temporary file in the same folder, flushed and fsynced, then renamed
  over the target: a reader sees the old file or the new one, never half of one, and a crash or a full disk leaves
  the previous file intact.
- :func:`check_output` says, before any work starts, whether a result can be written at a path.
- Documents are standard JSON: NaN and infinity become null (:func:`finite`), NumPy values become numbers or lists
  (:func:`jsonable`).

No module of xfbench's own is imported here: every other part of ``results`` builds on this one.
"""

from __future__ import annotations

import math
import os
import tempfile
from typing import Any

from xfbench.errors import XfbenchError

PARTIAL_SUFFIX = ".partial"


def partial_path(target: str | os.PathLike[str]) -> str:
    """The partial file of a run writing to ``target`` (``TARGET.partial``).

    Example:
        >>> partial_path("results/run.json")
        'results/run.json.partial'
    """
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
    if len(os.fsencode(os.path.basename(partial_path(text)))) > name_max:
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
    never a mix. Parent folders are created."""
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
        if isinstance(error, OSError):  # name the file that could not be written, not its temporary sibling
            raise OSError(error.errno, error.strerror, path) from error
        raise
    _fsync_folder(folder)


def finite(value: Any) -> Any:
    """``value`` with NaN and infinity (a diverged loss, say) replaced by None, so the JSON stays standard.

    Example:
        >>> finite({"loss": float("nan"), "curve": [1.0, float("inf")]})
        {'loss': None, 'curve': [1.0, None]}
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def jsonable(value: Any) -> Any:
    """The ``default`` of ``json.dumps`` for NumPy scalars and arrays (anything with ``tolist``).

    Example:
        >>> import json, numpy as np
        >>> json.dumps({"x": np.float32(0.5), "y": np.arange(2)}, default=jsonable)
        '{"x": 0.5, "y": [0, 1]}'
    """
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def is_number(value: Any) -> bool:
    """A finite JSON number: an int or a float, not a bool, not NaN or infinity, not an integer beyond a float's range
    (every reader computes with floats).

    Example:
        >>> is_number(3), is_number(2.5), is_number(True), is_number("1"), is_number(float("inf")), is_number(10**400)
        (True, True, False, False, False, False)
    """
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False
