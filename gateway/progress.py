"""Progress of long console work (backup, restore, rotation, import) on stderr.

On a terminal one line rewrites itself (`\\r`), at most every 0.2 s and at the end; into
a file or a pipe, plain lines, at most one per percent, so logs stay short.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressLine:
    def __init__(self, stream: TextIO | None = None, *, interval: float = 0.2) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty()
        self._interval = interval
        self._last_at: float | None = None  # the first line is always drawn
        self._last_percent = -1
        self._open = False

    def __call__(self, done: int, total: int, what: str) -> None:
        percent = 100 * done // total if total > 0 else 0
        finished = total > 0 and done >= total
        text = f"{what}: {done:,}/{total:,} ({percent}%)" if total > 0 else f"{what}: {done:,}"
        if self._tty:
            now = time.monotonic()
            recent = self._last_at is not None and now - self._last_at < self._interval
            if not finished and recent:
                return
            self._last_at = now
            self._stream.write("\r\x1b[K" + text + ("\n" if finished else ""))
            self._open = not finished
        else:
            if percent == self._last_percent and not finished:
                return
            self._stream.write(text + "\n")
        self._last_percent = percent
        self._stream.flush()

    def close(self) -> None:
        """End a line left open on a terminal (work stopped before its total)."""
        if self._open:
            self._stream.write("\n")
            self._stream.flush()
            self._open = False
