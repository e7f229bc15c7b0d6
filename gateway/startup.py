"""Before `smsgw run` serves: one gateway per data directory, and a fault during
start-up told in one line with an exit code, never a traceback and a process that hangs.

Why a failed start used to hang: the store's writer thread (and the embedded default's
simulated peers) were left running when start-up raised, and the interpreter waits for
that thread at exit. `Startup` collects what must be closed as each part starts and
closes it, within a bound, when a later part fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import socket
import sqlite3
import ssl
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType

from drivers.credentials import SecretError
from gateway.config import Config, ConfigError
from gateway.logs import exception_summary
from gateway.store.crypto import MasterKeyError

LOCK_FILE = "smsgw.lock"
UNWIND_SECONDS = 1.5  # what closing the parts started so far may take after a fault


class StartupFault(Exception):
    """Start-up cannot go on; the message is the one line the operator reads."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class DataDirLock:
    """An exclusive `flock` on `<data_dir>/smsgw.lock`, holding the owner's pid.

    The kernel drops the lock when the process dies (even by SIGKILL), so a stale file
    never blocks a restart. Two gateways on one data directory would bind the same
    carrier account and fight over a modem's tty.
    """

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.path = Path(data_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise StartupFault(
                f"data directory {self.path.parent}: cannot write there ({e.strerror})", 2
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            who = f"pid {pid}" if pid else "another process"
            raise StartupFault(
                f"data directory {self.path.parent} is in use by another smsgw ({who}, lock"
                f" {self.path}); stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock; the file stays for the next one
            self._fd = None

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def lock_holder(data_dir: str | os.PathLike[str]) -> int | None:
    """The pid of a running gateway on `data_dir` (0 if its pid is unreadable), else None."""
    path = Path(data_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(fd) or 0
    finally:
        os.close(fd)
    return None


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None


class Startup:
    """What has started so far, to close again if a later part fails."""

    def __init__(self) -> None:
        self._stack = contextlib.AsyncExitStack()
        self.finished = False

    def on_fault(self, close: Callable[[], Awaitable[object]]) -> None:
        self._stack.push_async_callback(close)

    def done(self) -> None:
        """Start-up is over: from now on the normal shutdown closes everything."""
        self.finished = True
        self._stack.pop_all()

    async def unwind(self) -> bool:
        """Close what started, newest first; False if that took longer than the bound."""
        try:
            async with asyncio.timeout(UNWIND_SECONDS):
                await self._stack.aclose()
        except TimeoutError:
            return False
        except Exception:  # noqa: S110 - the fault being reported matters, not this one
            pass
        return True


async def serve_or_explain(config: Config, serve: Callable[[Startup], Awaitable[int]]) -> int:
    """Run `serve`; a fault before it calls `startup.done()` closes what had started and
    is raised as a `StartupFault`."""
    startup = Startup()
    try:
        return await serve(startup)
    except Exception as e:
        if startup.finished:
            raise
        fault = describe(e, config)
        if not await startup.unwind():
            # A part would not close in time: say why and leave anyway (the store is
            # crash-safe and nothing has been sent yet).
            print(f"smsgw: {fault}", file=sys.stderr, flush=True)
            os._exit(fault.exit_code)
        raise fault from None
    except BaseException:  # Ctrl-C or a cancel during start-up: close, then go
        if not startup.finished:
            await startup.unwind()
        raise


def describe(error: BaseException, config: Config) -> StartupFault:
    """The one line (and exit code) that says why start-up stopped."""
    if isinstance(error, StartupFault):
        return error
    if isinstance(error, ConfigError):
        return StartupFault(f"configuration error: {error}", 2)
    if isinstance(error, MasterKeyError | SecretError):
        return StartupFault(str(error), 2)
    if isinstance(error, ssl.SSLError):
        return StartupFault(
            "http.tls_cert_file / http.tls_key_file: cannot load the certificate and key"
            f" ({error.reason or error.strerror or 'not a PEM certificate and matching key'})",
            2,
        )
    if isinstance(error, sqlite3.DatabaseError):
        return StartupFault(f"store: cannot open {config.db_path}: {error}", 2)
    if isinstance(error, OSError):
        if error.filename is not None:
            return StartupFault(f"{error.filename}: {error.strerror or error}", 2)
        listen = config.http.listen
        if isinstance(error, socket.gaierror):
            return StartupFault(
                f"http.listen: cannot resolve the host of {listen} ({error.strerror})", 2
            )
        if error.errno == errno.EADDRINUSE:
            return StartupFault(
                f"http.listen: cannot listen on {listen}: the address is already in use (by"
                " another program, or another smsgw)"
            )
        if error.errno == errno.EACCES:
            return StartupFault(
                f"http.listen: cannot listen on {listen}: permission denied (ports below 1024"
                " need CAP_NET_BIND_SERVICE)"
            )
        if error.errno == errno.EADDRNOTAVAIL:
            return StartupFault(
                f"http.listen: cannot listen on {listen}: this host has no such address"
            )
        return StartupFault(f"start-up failed: {error.strerror or error}")
    return StartupFault(f"start-up failed: {exception_summary(error)}")
