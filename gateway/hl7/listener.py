"""The MLLP listener: one asyncio `Protocol` per connection over the sans-I/O decoder
(research §H.1-§H.2).

A peer not on the interface's allowlist is cut off at once (logged, never answered).
Each frame starts its pipeline at once (so a pipelining sender's messages share group
commits; they reach the writer in arrival order, since nothing before the writer job
awaits), and one task per connection writes the answers strictly in arrival order,
each only after its message committed. A sender is slowed by pausing reads at
`PAUSE_AT` frames in flight, not by buffering without end. A framing fault (oversize,
strict EB without CR) or the idle timeout closes the connection with a log line;
nothing a peer sends raises out of here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import Callable
from typing import cast

import structlog

from gateway.hl7 import framing
from gateway.hl7.inbound import Answer, Hl7Inbound
from gateway.hl7.settings import Hl7Interface
from gateway.logs import exception_summary

log = structlog.get_logger("smsgw.hl7")

PAUSE_AT = 64  # frames in flight before reads pause
RESUME_AT = 16


def peer_allowed(iface: Hl7Interface, host: str) -> bool:
    if not iface.allowed_peers:
        return True
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in ipaddress.ip_network(p, strict=False) for p in iface.allowed_peers)


class MllpConnection(asyncio.Protocol):
    def __init__(self, inbound: Hl7Inbound, live: set[MllpConnection]) -> None:
        self.inbound = inbound
        self.live = live
        self.iface = inbound.iface
        self.decoder = framing.MllpDecoder(
            max_size=self.iface.max_frame_bytes,
            lenient=self.iface.lenient,
            r2=self.iface.r2_commit,
        )
        self.transport: asyncio.Transport | None = None
        self.frames: asyncio.Queue[asyncio.Task[Answer] | None] = asyncio.Queue()
        self.inflight: set[asyncio.Task[Answer]] = set()
        self.worker: asyncio.Task[None] | None = None
        self.idle: asyncio.TimerHandle | None = None
        self.paused = False
        self.peer = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peername = transport.get_extra_info("peername")
        self.peer = str(peername[0]) if peername else "?"
        if not peer_allowed(self.iface, self.peer):
            log.warning("hl7_peer_refused", interface=self.iface.name, peer=self.peer)
            self.transport.abort()
            return
        log.info("hl7_connected", interface=self.iface.name, peer=self.peer)
        self.live.add(self)
        self.worker = asyncio.get_running_loop().create_task(self._answer())
        self._touch()

    def _touch(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        self.idle = asyncio.get_running_loop().call_later(self.iface.idle_timeout, self._idle)

    def _idle(self) -> None:
        log.info("hl7_idle_closed", interface=self.iface.name, peer=self.peer)
        self._close()

    def _close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.worker is None:
            return
        self._touch()
        self.decoder.receive_data(data)
        self._drain_events()

    def _drain_events(self) -> None:
        for event in self.decoder.events():
            if isinstance(event, framing.Frame):
                task = asyncio.get_running_loop().create_task(self.inbound.receive(event.payload))
                self.inflight.add(task)
                task.add_done_callback(self.inflight.discard)
                self.frames.put_nowait(task)
            elif isinstance(event, framing.Skipped):
                log.warning("hl7_bytes_outside_frame", interface=self.iface.name, count=event.count)
            elif isinstance(event, framing.Fault):
                log.warning("hl7_framing_fault", interface=self.iface.name, reason=event.reason)
                self.frames.put_nowait(None)  # answer what came before, then close
        if self.transport is not None and not self.paused and self.frames.qsize() >= PAUSE_AT:
            self.paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        if (fault := self.decoder.end_of_stream()) is not None:
            log.warning("hl7_framing_fault", interface=self.iface.name, reason=fault.reason)
        self.frames.put_nowait(None)
        return True  # keep writing: frames already read are still answered

    def connection_lost(self, exc: Exception | None) -> None:
        self.live.discard(self)
        # in-flight messages still commit (and a resend is answered from the store)
        if self.idle is not None:
            self.idle.cancel()
        if self.worker is not None:
            self.worker.cancel()
        log.info("hl7_disconnected", interface=self.iface.name, peer=self.peer)

    async def _answer(self) -> None:
        try:
            while (task := await self.frames.get()) is not None:
                if self.paused and self.frames.qsize() <= RESUME_AT and self.transport:
                    self.paused = False
                    self.transport.resume_reading()
                answer = await task
                if self.transport is None or self.transport.is_closing():
                    return
                if self.iface.r2_commit:
                    self.transport.write(framing.commit_block(answer.committed))
                else:
                    for text in answer.acks:
                        data = text.encode(answer.codec, errors="replace")
                        self.transport.write(framing.encode(data))
                self._touch()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a defect here must not take the listener down
            log.error(
                "hl7_connection_failed", interface=self.iface.name, error=exception_summary(e)
            )
        self._close()


class Listener:
    """One interface's server and its open connections (closed on `aclose`)."""

    def __init__(self, inbound: Hl7Inbound) -> None:
        self.inbound = inbound
        self.live: set[MllpConnection] = set()
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int, context: ssl.SSLContext | None = None) -> None:
        factory: Callable[[], MllpConnection] = lambda: MllpConnection(self.inbound, self.live)  # noqa: E731
        self.server = await asyncio.get_running_loop().create_server(
            factory, host, port, ssl=context, backlog=128
        )

    async def aclose(self) -> None:
        if self.server is not None:
            self.server.close()
        inflight: list[asyncio.Task[Answer]] = []
        for conn in list(self.live):
            inflight += conn.inflight
            if conn.worker is not None:
                conn.worker.cancel()
            if conn.transport is not None:
                conn.transport.abort()
        await asyncio.gather(*inflight, return_exceptions=True)  # their commits finish
        if self.server is not None:
            await self.server.wait_closed()


async def serve(
    inbound: Hl7Inbound, host: str, port: int, context: ssl.SSLContext | None = None
) -> Listener:
    listener = Listener(inbound)
    await listener.start(host, port, context)
    return listener
