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
again.

What is not ours is left alone: an SMS-SUBMIT saved on the SIM (stat 2 "stored unsent"
or 3 "stored sent", or any record whose TP-MTI says SUBMIT) is skipped, never deleted,
and so is a stat 2/3 record that does not decode (an emptied slot of FF). A received
record that does not decode is never simply deleted: the raw record goes to the sink's
quarantine (`drivers.base.QuarantineSink`, encrypted there for an operator), an error
is logged with its index only, and the SIM copy is deleted only after that commit. A
sink without a quarantine leaves it on the SIM.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

from drivers.base import (
    EventSink,
    InboundPart,
    InboundSms,
    QuarantineSink,
    Receipt,
    ReceiptState,
)
from drivers.clock import Clock
from drivers.modem import commands as cmd
from drivers.modem.atcodec import Response
from drivers.modem.pdu import (
    MTI_SUBMIT,
    PduError,
    SmsDeliver,
    StatusReport,
    decode_incoming,
    message_type,
)

log = structlog.get_logger("smsgw.modem")

EXPIRED_STATUS = 0x46  # TP-ST "SM validity period expired" (TS 23.040 §9.2.3.15)
STORED_OUTGOING = frozenset({2, 3})  # <stat> "STO UNSENT", "STO SENT" (TS 27.005 3.1)


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
        self.quarantined = 0

    async def read(self, index: int) -> None:
        async with self._lock:
            response = await self._command(f"AT+CMGR={index}")
            record = cmd.parse_cmgr(response.lines) if response.final.ok else None
            if record is not None:
                await self._ingest(record.pdu, index, record.stat)

    async def take(self, pdu: str) -> None:
        async with self._lock:
            await self._ingest(pdu, None, None)

    async def scan(self) -> None:
        async with self._lock:
            self.rescan_at = None
            response = await self._command("AT+CMGL=4", limit=self._scan_limit)
            for stored in cmd.parse_cmgl(response.lines):
                await self._ingest(stored.pdu, stored.index, stored.stat)

    async def _ingest(self, pdu: str, index: int | None, stat: int | None) -> None:
        if message_type(pdu) == MTI_SUBMIT:
            log.debug("modem_stored_submit_skipped", route=self.route, modem=self.modem,
                      index=index)  # fmt: skip
            return
        try:
            message = decode_incoming(pdu)
        except PduError:
            if stat in STORED_OUTGOING:
                log.info("modem_stored_record_skipped", route=self.route, modem=self.modem,
                         index=index)  # fmt: skip
                return
            await self._quarantine(pdu, index)
            return
        if isinstance(message, StatusReport):
            await self._status_report(message, index)
        elif isinstance(message, SmsDeliver):
            await self._message(message, index)

    async def _quarantine(self, pdu: str, index: int | None) -> None:
        """Hold an undecodable record for an operator; delete the SIM's copy after that."""
        log.error("modem_pdu_undecodable", route=self.route, modem=self.modem, index=index,
                  octets=len(pdu) // 2)  # fmt: skip
        sink = self._sink
        if not isinstance(sink, QuarantineSink):
            return  # nowhere to keep it: it stays on the SIM
        if await self._stored(sink.quarantine(self.route, self.modem, pdu)):
            self.quarantined += 1
            await self._delete(index)

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
