"""What the carrier sends an SMPP route: receipts and inbound messages (deliver_sm,
data_sm), each answered only once the gateway made it durable.

Each deliver_sm is answered once its receipt or message is committed; they are handled
side by side so that one commit covers many (group commit), and the link stops reading
while `INBOUND_CONCURRENCY` of them wait on the store. (The gateway's store commits a
receipt lazily, with the next commit other work makes: until then its deliver_sm is
simply one of the carrier's unanswered ones.) Receipts read together go, to a
sink that takes groups (`GroupReceiptSink`), as one group: one store call, then each
deliver_sm_resp. A receipt is correlated by the carrier's id in any spelling it may
have been recorded under; an inbound message goes part by part (UDH or sar_* TLVs).
If the sink fails, the answer is ESME_RX_T_APPN and the carrier redelivers. A sink that
wants to know (`AnsweredInboundSink`) is told, for each whole message it stored, whether
its ESME_ROK was written: one stored and not acknowledged is in doubt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from drivers.base import (
    AnsweredInboundSink,
    EventSink,
    GroupReceiptSink,
    InboundPart,
    InboundSms,
    Receipt,
)
from drivers.smpp import dlr
from drivers.smpp.encoding import concat_from_tlvs, decode_inbound
from drivers.smpp.link import Link
from drivers.smpp.pdu import Command, Pdu, Tag
from drivers.smpp.status import Status

log = structlog.get_logger("smsgw.smpp")

ESM_RECEIPT = 0x04
_RECEIPT_TLVS = {
    Tag.RECEIPTED_MESSAGE_ID: "receipted_message_id",
    Tag.MESSAGE_STATE: "message_state",
    Tag.NETWORK_ERROR_CODE: "network_error_code",
    Tag.MESSAGE_PAYLOAD: "message_payload",
}


class Inbound:
    def __init__(self, route: str, sink: EventSink, counters: dict[str, int]) -> None:
        self._route = route
        self._sink = sink
        # Checked once: a runtime protocol check costs more than a receipt's parse.
        self._group_sink = sink if isinstance(sink, GroupReceiptSink) else None
        self._answered_sink = sink if isinstance(sink, AnsweredInboundSink) else None
        self._counters = counters
        self.tasks: set[asyncio.Task[None]] = set()

    async def take(self, link: Link, pdu: Pdu) -> None:
        """A request from the carrier, read on `link`: handled in a task of its own, or
        kept with the receipts of this read for `flush`."""
        if link.receipts and link.inbound_slots.locked():
            self._start_receipts(link)  # they hold the slots this one waits for
        await link.inbound_slots.acquire()
        receipt = self._groupable_receipt(pdu)
        if receipt is not None:
            link.receipts.append((pdu, receipt))
            return
        task = asyncio.create_task(self._on_request(link, pdu))
        self.tasks.add(task)
        task.add_done_callback(self._inbound_done(link))

    def flush(self, link: Link) -> None:
        """After a read's events: its receipts go to the sink as one group."""
        if link.receipts:
            self._start_receipts(link)

    def _inbound_done(self, link: Link) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            self.tasks.discard(task)
            link.inbound_slots.release()

        return done

    def _groupable_receipt(self, pdu: Pdu) -> Receipt | None:
        """The receipt in `pdu` if the sink takes receipts in groups, else None (also for
        one that cannot be parsed here: `_on_request` answers it on its own)."""
        if self._group_sink is None or pdu.command not in (
            Command.DELIVER_SM,
            Command.DATA_SM,
        ):
            return None
        try:
            return self._receipt(pdu)
        except Exception:
            return None

    def _start_receipts(self, link: Link) -> None:
        group, link.receipts = link.receipts, []
        task = asyncio.create_task(self._on_receipts(link, group))
        self.tasks.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self.tasks.discard(task)
            for _ in group:
                link.inbound_slots.release()

        task.add_done_callback(done)

    async def _on_receipts(self, link: Link, group: list[tuple[Pdu, Receipt]]) -> None:
        """A read's receipts made durable in one go; each deliver_sm answered after."""
        session = link.session
        if session is None:
            return
        sink = self._group_sink
        assert sink is not None
        try:
            failed = await sink.receipt_group(self._route, [receipt for _, receipt in group])
        except Exception as e:  # the gateway could not store them: let the carrier retry
            failed = [e] * len(group)
        for (pdu, _), error in zip(group, failed, strict=True):
            if error is None:
                status = Status.ESME_ROK
                self._counters["receipts"] += 1
            else:
                log.error("smpp_inbound_not_stored", route=self._route, error=type(error).__name__)
                status = Status.ESME_RX_T_APPN
            if not session.closed:
                session.respond(pdu, status)
        if link.session is session and not session.closed:
            link.nudge()

    async def _on_request(self, link: Link, pdu: Pdu) -> None:
        session = link.session
        if pdu.command not in (Command.DELIVER_SM, Command.DATA_SM) or session is None:
            return
        answered: Callable[[bool], None] | None = None
        try:
            receipt = self._receipt(pdu)
            if receipt is not None:
                await self._sink.receipt(self._route, receipt)
                self._counters["receipts"] += 1
            else:
                answered = await self._inbound_sms(pdu)
        except Exception as e:  # the gateway could not store it: let the carrier retry
            log.error("smpp_inbound_not_stored", route=self._route, error=type(e).__name__)
            status = Status.ESME_RX_T_APPN
        else:
            status = Status.ESME_ROK
        written = False
        try:
            if not session.closed:
                session.respond(pdu, status)
                written = True
                if link.session is session:
                    link.nudge()
        finally:
            if answered is not None:
                answered(written)

    def _receipt(self, pdu: Pdu) -> Receipt | None:
        esm_class = pdu.param("esm_class", int)
        found = pdu.tlvs
        tlvs = {name: found[tag] for tag, name in _RECEIPT_TLVS.items() if tag in found}
        if not esm_class & ESM_RECEIPT and "receipted_message_id" not in tlvs:
            return None
        text = pdu.params.get("short_message", b"")
        return dlr.receipt(text if isinstance(text, bytes) else None, tlvs)

    async def _inbound_sms(self, pdu: Pdu) -> Callable[[bool], None] | None:
        """Hand the message to the sink; the call to make once its answer is written,
        if the sink wants one."""
        data = pdu.params.get("short_message", b"")
        if not data and Tag.MESSAGE_PAYLOAD in pdu.tlvs:
            data = pdu.tlvs[Tag.MESSAGE_PAYLOAD]
        decoded = decode_inbound(
            data if isinstance(data, bytes) else b"",
            pdu.param("data_coding", int),
            pdu.param("esm_class", int),
        )
        sender = "+" + str(pdu.params.get("source_addr", "")).lstrip("+")
        recipient = str(pdu.params.get("destination_addr", "")) or None
        concat = decoded.concat or concat_from_tlvs(pdu.tlvs)
        part = None
        if concat is not None and concat.total > 1:
            part = InboundPart(concat.reference, concat.ref_bits, concat.total, concat.seq)
        sms = InboundSms(sender, decoded.text, recipient, part=part)
        answered = None
        if self._answered_sink is not None:
            answered = await self._answered_sink.inbound_to_answer(self._route, sms)
        else:
            await self._sink.inbound(self._route, sms)
        self._counters["inbound"] += 1
        return answered
