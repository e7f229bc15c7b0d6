"""Stopping `smsgw run`: every step bounded and never raising, and a deadline for all.

Why `smsgw run` could hang after SIGTERM: the store's read connections run on aiosqlite
threads, which are not daemon threads, and the interpreter waits for every such thread
at exit. `Gateway.stop` ran its steps one after the other, so one step that raised
(reproduced: a log line written to a stderr whose reader had gone, raising
BrokenPipeError inside a driver's close) skipped the rest, the store's close among
them, and the process then waited for those threads for ever.

Now each step runs through `StopSteps`: bounded in time, its failure logged and
remembered, and the next step runs regardless, so the store always closes. Around the
whole stop, `StopDeadline` (armed by the first SIGTERM or SIGINT) ends the process
with `EXIT_STOP_OVERDUE` and one line on stderr saying which step it was at and which
threads were still running, if it has not exited within its limit: loud and well
before systemd's `TimeoutStopSec` would SIGKILL it without a word. Cutting it off is
what a `kill -9` does, which the store is built to survive (a message caught in
`sending` comes back as a possible duplicate).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Awaitable, Callable

import structlog

from gateway import systemd
from gateway.logs import exception_summary

log = structlog.get_logger("smsgw.shutdown")

EXIT_STOP_INCOMPLETE = 1  # stopped, but a step failed or overran (the log names it)
EXIT_STOP_OVERDUE = 70  # EX_SOFTWARE: the stop did not finish in time and was cut off
STEP_LIMIT = 5.0  # seconds for a step without a grace of its own
# What the whole stop may take beyond `http.shutdown_grace` and `outbox.shutdown_grace`:
# the other steps' real work (closing links, the HTTP server, the store's checkpoint).
# With the defaults (10 + 3) the deadline is 25 s, inside the unit's TimeoutStopSec=30.
STOP_MARGIN = 12.0


def stop_limit(shutdown_grace: float, outbox_grace: float) -> float:
    """Seconds from the signal within which `smsgw run` must have exited."""
    return shutdown_grace + outbox_grace + STOP_MARGIN


class StopSteps:
    """Runs the steps of a stop: each bounded, none able to keep the next from running."""

    def __init__(self, on_step: Callable[[str], None] | None = None) -> None:
        self._on_step = on_step
        self.failed: list[str] = []

    async def run(
        self, name: str, action: Callable[[], Awaitable[object]], limit: float = STEP_LIMIT
    ) -> None:
        if self._on_step is not None:
            self._on_step(name)
        try:
            async with asyncio.timeout(limit):
                await action()
        except TimeoutError:
            self.failed.append(name)
            log.error("shutdown_step_overran", step=name, limit=limit)
        except Exception as e:
            self.failed.append(name)
            log.error("shutdown_step_failed", step=name, error=exception_summary(e))


class StopDeadline:
    """Ends the process `limit` seconds after `arm()` unless it has exited by then."""

    def __init__(self, limit: float, exit_code: int = EXIT_STOP_OVERDUE) -> None:
        self.limit = limit
        self.exit_code = exit_code
        self.step = "signal received"
        self._armed = False
        self._cancelled = threading.Event()
        self.thread: threading.Thread | None = None

    @property
    def armed(self) -> bool:
        return self._armed

    def phase(self, step: str) -> None:
        """The step the stop is at, for the line written if it overruns."""
        self.step = step

    def arm(self) -> None:
        if self._armed:
            return
        self._armed = True
        # A daemon thread: it keeps running while the interpreter waits for the others.
        self.thread = threading.Thread(target=self._wait, name="smsgw-stop-deadline", daemon=True)
        self.thread.start()

    def disarm_if_nothing_can_hang(self) -> bool:
        """After the event loop ended: if no thread but this one is left that the
        interpreter would wait for, the deadline is not needed (and, in a process that
        goes on, as a test's, it must not fire)."""
        if blocking_threads():
            return False
        self._cancelled.set()
        return True

    def _wait(self) -> None:
        if not self._cancelled.wait(self.limit):
            self._fire()

    def _fire(self) -> None:
        threads = ", ".join(blocking_threads()) or "none"
        line = (
            f"smsgw: shutdown did not finish within {self.limit:g} s (at: {self.step};"
            f" threads still running: {threads}); exiting with code {self.exit_code}\n"
        )
        with contextlib.suppress(OSError):
            os.write(2, line.encode())
        with contextlib.suppress(Exception):
            systemd.notify(f"STATUS=shutdown overran at: {self.step}")
        os._exit(self.exit_code)


def blocking_threads() -> list[str]:
    """Names of the live threads the interpreter waits for at exit, besides this one."""
    me = threading.current_thread()
    return sorted(
        t.name for t in threading.enumerate() if t is not me and not t.daemon and t.is_alive()
    )
