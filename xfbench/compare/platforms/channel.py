"""The channel between the scheduler and a worker: JSON messages, one per line, on two pipes of their own (never
on stdout/stderr, which carry the frameworks' log output). The messages themselves are listed in
``compare.engine.server``.
"""

from __future__ import annotations

import json
import os
import select
import time
from typing import Any

from xfbench.compare.results.files import jsonable


class ChannelClosedError(Exception):
    """The other end of a channel is gone (the worker exited, or the parent did)."""


class Channel:
    """JSON messages, one per line, read from ``read_fd`` and written to ``write_fd``."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        self._buffer = b""
        self.closed = False

    def send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message, allow_nan=True, default=jsonable) + "\n").encode()
        try:
            while data:
                data = data[os.write(self.write_fd, data):]
        except (BrokenPipeError, OSError) as error:
            raise ChannelClosedError(str(error)) from error

    def receive(self, deadline: float | None = None) -> dict[str, Any] | None:
        """The next message; None when ``deadline`` (a ``time.monotonic()`` value) passes first; raises
        :class:`ChannelClosedError` at end of file."""
        while b"\n" not in self._buffer:
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                return None
            ready, _, _ = select.select([self.read_fd], [], [], None if timeout is None else min(timeout, 1.0))
            if not ready:
                continue
            chunk = os.read(self.read_fd, 1 << 16)
            if not chunk:
                raise ChannelClosedError("end of file")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for fd in {self.read_fd, self.write_fd}:
            try:
                os.close(fd)
            except OSError:
                pass
