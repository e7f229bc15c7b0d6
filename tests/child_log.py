"""A child process's stderr read on a thread: its lines so far, and waits for a JSON log
event (the daemons the tests start log one JSON object per line)."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import IO, Any


class ChildLog:
    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.lines: list[str] = []
        self._seen = 0
        self._grew = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for raw in self._stream:
            with self._grew:
                self.lines.append(raw.decode(errors="replace"))
                self._grew.notify_all()
        with self._grew:
            self._grew.notify_all()

    def wait(self, predicate: Callable[[dict[str, Any]], bool], limit: float) -> None:
        """Until a log event (after those already matched) satisfies `predicate`."""

        def found() -> bool:
            while self._seen < len(self.lines):
                line = self.lines[self._seen]
                self._seen += 1
                with contextlib.suppress(json.JSONDecodeError):
                    event = json.loads(line)
                    if isinstance(event, dict) and predicate(event):
                        return True
            if not self._reader.is_alive():
                raise AssertionError("daemon exited:\n" + "".join(self.lines))
            return False

        with self._grew:
            assert self._grew.wait_for(found, limit), "no such log event"

    def text(self) -> str:
        with self._grew:
            return "".join(self.lines)

    def close(self) -> None:
        """After the process ended: the rest of its output read, the pipe closed."""
        self._reader.join(10)
        self._stream.close()


def terminate(proc: subprocess.Popen[bytes], limit: float) -> None:
    """SIGTERM, then SIGKILL if the process has not ended within `limit` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(limit)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
