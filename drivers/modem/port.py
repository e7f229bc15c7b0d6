"""One modem's serial port and its AT conversation: bytes in and out of the AT engine.

Theory of operation. An `AtPort` opens the tty (pyserial-asyncio-fast), feeds what
arrives to a fresh `AtEngine` and writes whatever the engine wants written (a command,
the PDU after a prompt, an ESC). `command()` runs one command at a time (a lock) and
waits for its answer or its deadline on the injected clock, firing the engine's timer
at the deadline; it returns the `Response` or raises `CommandTimeout` or `PortLost`,
each saying whether a PDU had been written (then a message may have gone out).
Unsolicited result codes go to `on_urc` as they arrive; a port that goes away (EIO,
EOF: the USB modem was pulled) ends the command in flight and calls `on_lost`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import serial_asyncio_fast
import structlog

from drivers.clock import Clock
from drivers.modem.atcodec import (
    Abandoned,
    AtEngine,
    Event,
    Garbled,
    Response,
    Stray,
    Timeout,
    Unsolicited,
)

log = structlog.get_logger("smsgw.modem")


class PortLost(Exception):
    def __init__(self, pdu_written: bool = False) -> None:
        super().__init__("port lost")
        self.pdu_written = pdu_written


class CommandTimeout(Exception):
    """No final result in time; `lines` are the answer lines that did come."""

    def __init__(self, name: str, pdu_written: bool, lines: tuple[str, ...] = ()) -> None:
        super().__init__("no answer")
        self.name = name
        self.pdu_written = pdu_written
        self.lines = lines


class _Protocol(asyncio.Protocol):
    def __init__(self, port: AtPort) -> None:
        self._port = port

    def data_received(self, data: bytes) -> None:
        self._port._received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._port._lost()


class AtPort:
    def __init__(
        self,
        path: str,
        baud: int,
        clock: Clock,
        *,
        on_urc: Callable[[Unsolicited], None],
        on_lost: Callable[[], None],
        log_keys: dict[str, str],
    ) -> None:
        self.path = path
        self.baud = baud
        self._clock = clock
        self._on_urc = on_urc
        self._on_lost = on_lost
        self._log_keys = log_keys
        self._engine = AtEngine()
        self._transport: asyncio.Transport | None = None
        self._lock = asyncio.Lock()
        self.garbled = 0

    @property
    def is_open(self) -> bool:
        return self._transport is not None

    async def open(self) -> None:
        """Open the tty; OSError or serial.SerialException when it is not there."""
        self._engine = AtEngine()
        transport, _ = await serial_asyncio_fast.create_serial_connection(
            asyncio.get_running_loop(), lambda: _Protocol(self), url=self.path, baudrate=self.baud
        )
        self._transport = transport

    def close(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
        self._dispatch_all(self._engine.abandon())

    async def command(self, command: str, *, limit: float, pdu: str | None = None) -> Response:
        async with self._lock:
            if self._transport is None:
                raise PortLost()
            answer: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
            self._engine.send(
                command, now=self._clock.monotonic(), timeout=limit, pdu=pdu, token=answer
            )
            self._flush()
            try:
                await self._wait(answer)
            finally:
                if not answer.done():  # cancelled: nothing may wait for this answer now
                    self._dispatch_all(self._engine.abandon())
            event = answer.result()
        if isinstance(event, Response):
            return event
        if isinstance(event, Timeout):
            raise CommandTimeout(event.name, event.pdu_written, event.lines)
        assert isinstance(event, Abandoned)
        raise PortLost(event.pdu_written)

    async def _wait(self, answer: asyncio.Future[Event]) -> None:
        while not answer.done():
            deadline = self._engine.next_deadline()
            if deadline is None:
                return
            sleeper = asyncio.ensure_future(
                self._clock.sleep(max(0.0, deadline - self._clock.monotonic()))
            )
            try:
                waiting: set[asyncio.Future[Any]] = {answer, sleeper}
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
            if not answer.done():
                self._dispatch_all(self._engine.on_timer(self._clock.monotonic()))
                self._flush()

    def _flush(self) -> None:
        data = self._engine.data_to_send()
        if data and self._transport is not None:
            self._transport.write(data)

    def _received(self, data: bytes) -> None:
        self._dispatch_all(self._engine.receive_data(data, self._clock.monotonic()))
        self._flush()

    def _lost(self) -> None:
        if self._transport is None:
            return  # we closed it
        self._transport = None
        log.warning("modem_port_lost", **self._log_keys)
        self._dispatch_all(self._engine.abandon())
        self._on_lost()

    def _dispatch_all(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, Response | Timeout | Abandoned):
                token = event.token
                if isinstance(token, asyncio.Future) and not token.done():
                    token.set_result(event)
            elif isinstance(event, Unsolicited):
                self._on_urc(event)
            elif isinstance(event, Garbled):
                self.garbled += 1
                log.warning(
                    "modem_garbled", reason=event.reason, size=len(event.data), **self._log_keys
                )
            elif isinstance(event, Stray):
                log.info("modem_stray_line", **self._log_keys)
