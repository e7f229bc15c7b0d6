"""What the modem stores or announces: status reports and inbound messages, made
durable through the sink before the modem's copy is deleted.

Theory of operation. `Inbox` reads a message at a storage index (`AT+CMGR`, after
+CMTI/+CDSI), takes a PDU given directly (+CMT/+CDS), or scans the whole storage
(`AT+CMGL=4`, at start and after a failure). One storage read runs at a time, so a scan
and a +CMTI never both take the same message. A status report becomes
`EventSink.receipt` for carrier id `<modem>:<TP-MR>`; a message becomes
`EventSink.inbound`. Only after the sink returned (the gateway committed) is the
stored copy deleted (`AT+CMGD`); the parts of a long message only once the whole
message is stored. When the sink fails, the copy stays and `rescan_at` says when to
scan again. A PDU that does not decode is logged (its index only) and deleted, so it
cannot fill the SIM.

`PartStore` joins the parts. Unlike `drivers.smpp.concat.Reassembler`, it does not
remember a completed set: a message whose commit failed stays on the SIM, is read again
later, and must complete again.
A part read twice (same storage index, or a rescan) counts once. A set older than
`timeout` is given up and returned as an incomplete text, with a marker per missing
part, so it can be stored rather than lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from drivers.base import EventSink, InboundSms, Receipt, ReceiptState
from drivers.clock import Clock
from drivers.modem import commands as cmd
from drivers.modem.atcodec import Response
from drivers.modem.pdu import PduError, SmsDeliver, StatusReport, decode_incoming
from drivers.smpp.concat import missing_marker

log = structlog.get_logger("smsgw.modem")

EXPIRED_STATUS = 0x46  # TP-ST "SM validity period expired" (TS 23.040 §9.2.3.15)

_Key = tuple[str, int, bool, int]  # sender, reference, 16-bit reference, total


@dataclass(frozen=True, slots=True)
class Whole:
    """A message ready to store: its text and the storage indices of its parts."""

    key: _Key = field(repr=False)
    text: str = field(repr=False)
    indices: tuple[int, ...]
    complete: bool = True


@dataclass(slots=True)
class _Set:
    first_seen: float
    parts: dict[int, tuple[str, int | None]] = field(default_factory=dict)


class PartStore:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._sets: dict[_Key, _Set] = {}

    def __len__(self) -> int:
        return len(self._sets)

    def add(
        self,
        sender: str,
        reference: int,
        wide: bool,
        total: int,
        seq: int,
        text: str,
        index: int | None,
        now: float,
    ) -> Whole | None:
        """File a part; the whole message once every part is in."""
        key: _Key = (sender, reference, wide, total)
        entry = self._sets.setdefault(key, _Set(now))
        entry.parts.setdefault(seq, (text, index))
        if len(entry.parts) < total or not all(s in entry.parts for s in range(1, total + 1)):
            return None
        return self._whole(key, entry, complete=True)

    def stored(self, whole: Whole) -> None:
        """The message is durable: forget its set."""
        self._sets.pop(whole.key, None)

    def expired(self, now: float) -> list[Whole]:
        due = [k for k, s in self._sets.items() if s.first_seen + self.timeout <= now]
        return [self._whole(k, self._sets[k], complete=False) for k in due]

    @staticmethod
    def _whole(key: _Key, entry: _Set, *, complete: bool) -> Whole:
        total = key[3]
        text = "".join(
            entry.parts[seq][0] if seq in entry.parts else missing_marker(seq, total)
            for seq in range(1, total + 1)
        )
        indices = tuple(i for _, i in entry.parts.values() if i is not None)
        return Whole(key, text, indices, complete)


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
        reassembly_timeout: float,
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
        self._parts = PartStore(reassembly_timeout)
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
            for whole in self._parts.expired(self._clock.monotonic()):
                await self._deliver(whole, sender=whole.key[0])

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
        concat = message.concat
        if concat is None or concat.total <= 1:
            whole = Whole(("", 0, False, 1), message.text, () if index is None else (index,))
            await self._deliver(whole, sender=sender)
            return
        done = self._parts.add(
            sender, concat.ref, concat.wide_ref, concat.total, concat.seq, message.text, index,
            self._clock.monotonic(),
        )  # fmt: skip
        if done is not None:
            await self._deliver(done, sender=sender)

    async def _deliver(self, whole: Whole, *, sender: str) -> None:
        if not await self._stored(self._sink.inbound(self.route, InboundSms(sender, whole.text))):
            return
        self._parts.stored(whole)
        self.inbound += 1
        for index in whole.indices:
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
