"""What the modem stores or announces: status reports and inbound messages, made
durable through the sink before the modem's copy is deleted.

Theory of operation. `Inbox` reads a message at a storage index (`AT+CMGR`, after
+CMTI/+CDSI), takes a PDU given directly (+CMT/+CDS), or scans the whole storage
(`AT+CMGL=4`, at start and after a failure). One storage read runs at a time, so a scan
and a +CMTI never both take the same message. A status report becomes
`EventSink.receipt` for carrier id `<modem>:<TP-MR>`; a message, or one part of a long
one, becomes `EventSink.inbound` (the gateway holds parts on disk and joins them).
Only after the sink returned (the gateway committed) is the stored copy deleted
(`AT+CMGD`). When the sink fails, the copy stays and `rescan_at` says when to scan
again. A PDU that does not decode is logged (its index only) and deleted, so it cannot
fill the SIM.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

from drivers.base import EventSink, InboundPart, InboundSms, Receipt, ReceiptState
from drivers.clock import Clock
from drivers.modem import commands as cmd
from drivers.modem.atcodec import Response
from drivers.modem.pdu import PduError, SmsDeliver, StatusReport, decode_incoming

log = structlog.get_logger("smsgw.modem")

EXPIRED_STATUS = 0x46  # TP-ST "SM validity period expired" (TS 23.040 §9.2.3.15)


class Commander(Protocol):
    def __call__(self, command: str, *, limit: float | None = None) -> Awaitable[Response]: ...


class Inbox:
    def __init__(
        self,
        route: str,
        modem: str,
        sink: EventSink,
        clock: Clock,
        command: Commander,
        *,
        rescan_interval: float,
        scan_limit: float,
        wake: Callable[[], None],
    ) -> None:
        self.route = route
        self.modem = modem
        self._sink = sink
        self._clock = clock
        self._command = command
        self._rescan_interval = rescan_interval
        self._scan_limit = scan_limit
        self._wake = wake  # the modem's serve loop, to take a new `rescan_at`
        self._lock = asyncio.Lock()
        self.rescan_at: float | None = None
        self.inbound = 0
        self.receipts = 0

    async def read(self, index: int) -> None:
        async with self._lock:
            response = await self._command(f"AT+CMGR={index}")
            pdu = cmd.parse_cmgr(response.lines) if response.final.ok else None
            if pdu is not None:
                await self._ingest(pdu, index)

    async def take(self, pdu: str) -> None:
        async with self._lock:
            await self._ingest(pdu, None)

    async def scan(self) -> None:
        async with self._lock:
            self.rescan_at = None
            response = await self._command("AT+CMGL=4", limit=self._scan_limit)
            for stored in cmd.parse_cmgl(response.lines):
                await self._ingest(stored.pdu, stored.index)

    async def _ingest(self, pdu: str, index: int | None) -> None:
        try:
            message = decode_incoming(pdu)
        except PduError:
            log.error("modem_pdu_undecodable", route=self.route, modem=self.modem, index=index)
            await self._delete(index)
            return
        if isinstance(message, StatusReport):
            await self._status_report(message, index)
        elif isinstance(message, SmsDeliver):
            await self._message(message, index)

    async def _status_report(self, report: StatusReport, index: int | None) -> None:
        outcome = report.outcome
        if outcome != "pending":  # a final report follows a pending one
            if outcome == "delivered":
                state, code = ReceiptState.DELIVERED, None
            elif report.status == EXPIRED_STATUS:
                state, code = ReceiptState.EXPIRED, f"tp-st:{report.status:#04x}"
            else:
                state, code = ReceiptState.FAILED, f"tp-st:{report.status:#04x}"
            receipt = Receipt(f"{self.modem}:{report.message_ref}", state, code)
            if not await self._stored(self._sink.receipt(self.route, receipt)):
                return
            self.receipts += 1
        await self._delete(index)

    async def _message(self, message: SmsDeliver, index: int | None) -> None:
        sender = message.sender
        if message.sender_kind == "international" and not sender.startswith("+"):
            sender = "+" + sender
        part = None
        concat = message.concat
        if concat is not None and concat.total > 1:
            try:
                part = InboundPart(
                    concat.ref, 16 if concat.wide_ref else 8, concat.total, concat.seq
                )
            except ValueError:  # impossible numbers: keep the text as a message of its own
                log.warning("modem_bad_concat", route=self.route, modem=self.modem, index=index)
        sms = InboundSms(sender, message.text, part=part)
        if await self._stored(self._sink.inbound(self.route, sms)):
            self.inbound += 1
            await self._delete(index)

    async def _stored(self, sink_call: Awaitable[None]) -> bool:
        """Await the sink; on failure keep the stored copy and scan again later."""
        try:
            await sink_call
        except Exception as e:
            log.error("modem_inbound_not_stored", route=self.route, modem=self.modem,
                      error=type(e).__name__)  # fmt: skip
            self.rescan_at = self._clock.monotonic() + self._rescan_interval
            self._wake()
            return False
        return True

    async def _delete(self, index: int | None) -> None:
        if index is not None:
            await self._command(f"AT+CMGD={index}")
