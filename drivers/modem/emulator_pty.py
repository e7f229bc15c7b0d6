"""The emulator's pseudo-terminal: a pty pair in raw mode whose master end is the modem.

What the host typed arrives through `on_data`; `write` queues octets and writes them
as the master becomes writable, so the event loop never blocks on a slow reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import tty
from collections.abc import Callable

__all__ = ["Pty"]


class Pty:
    """One pty pair; the master's octets in and out, without blocking the loop."""

    def __init__(self, on_data: Callable[[bytes], None]) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave, termios.TCSANOW)
        os.set_blocking(self.master, False)
        self.name = os.ttyname(self.slave)
        self._out = bytearray()
        self._loop = asyncio.get_running_loop()
        self._on_data = on_data
        self._loop.add_reader(self.master, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._loop.remove_reader(self.master)
            return
        if data:
            self._on_data(data)

    def write(self, data: bytes) -> None:
        if not self._out:
            self._loop.add_writer(self.master, self._writable)
        self._out += data

    def _writable(self) -> None:
        try:
            written = os.write(self.master, self._out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            written = len(self._out)  # nobody can read it any more
        del self._out[:written]
        if not self._out:
            self._loop.remove_writer(self.master)

    def close(self) -> None:
        if self._out:  # what the modem said before the plug was pulled still goes out
            with contextlib.suppress(OSError):
                os.write(self.master, self._out)
        self._loop.remove_reader(self.master)
        self._loop.remove_writer(self.master)
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)
