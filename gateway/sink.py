"""What drivers report, made durable: receipts, inbound messages, health changes, and
inbound records no codec could read (held encrypted for an operator, with an alert).

An inbound message's keywords (STOP, START, HELP, revocation phrases) are decided in
the transaction that stores it (`consent/inbound.py`); a reply it earned is handed to
the scheduler after that commit. On a cluster inbound messages are filed in the shared
PostgreSQL tables (`cluster/inbound.py`), the keyword step right after their commit.
A whole message is stored with a durable mark, cleared once its acknowledgement is
written: one whose delivery was not acknowledged (the store failed, or failed to say;
the node died before answering) is stored under the same id when the carrier delivers
it again, to this node or another, after a restart too: it is stored once
(`inbound_doubt.py`)."""

from __future__ import annotations

import functools
import inspect
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from drivers.base import InboundSms, Receipt, RouteHealth
from drivers.clock import Clock
from gateway.inbound_doubt import KEEP_SECONDS, InDoubt, Marked
from gateway.metrics import Metrics
from gateway.models import State, new_message_id
from gateway.store.inbound_parts import Filed, InboundHook, StoredInbound
from gateway.store.inbound_store import InboundStore
from gateway.store.quarantine import HeldUndecodable, Quarantine
from gateway.store.queue_store import ReceiptStore
from gateway.store.store import Store

if TYPE_CHECKING:
    from gateway.consent.inbound import InboundConsent
    from gateway.replies.inbound import InboundReplies
    from gateway.surveys.inbound import SurveyStep

log = structlog.get_logger("smsgw.sink")

DEFAULT_REASSEMBLY_TIMEOUT = 300.0


class GatewaySink:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        metrics: Metrics,
        reassembly_timeout: float = DEFAULT_REASSEMBLY_TIMEOUT,
        receipts: ReceiptStore | None = None,
        inbound: InboundStore | None = None,
        *,
        in_doubt_seconds: float = KEEP_SECONDS,
        accounts: Mapping[str, str] | None = None,
    ) -> None:
        self._store = store
        # Where receipts are matched: the message queue's store (shared on a cluster).
        self._receipts: ReceiptStore = store if receipts is None else receipts
        # Where inbound messages and their parts are filed (shared on a cluster).
        self._inbound: InboundStore = store if inbound is None else inbound
        self._clock = clock
        self._metrics = metrics
        self.reassembly_timeout = reassembly_timeout
        self._wakers: list[Callable[[], None]] = []
        self._quarantine = Quarantine(store)
        # Marks of inbound deliveries to clear once acknowledged, or to flag failed
        # (`gateway/inbound_doubt.py`); a route's redelivery may come on another route
        # of its carrier account, so the digest names the account where there is one.
        self._in_doubt = InDoubt(self._inbound.settle_inbound_doubt, clock.time, in_doubt_seconds)
        self._scopes = {r: f"account:{a}" for r, a in (accounts or {}).items()}
        self._consent: InboundConsent | None = None
        self._replies: InboundReplies | None = None
        self._surveys: SurveyStep | None = None

    def answer_keywords(self, consent: InboundConsent) -> None:
        """Decide keywords in each inbound's transaction (the gateway wires this in)."""
        self._consent = consent

    def answer_replies(self, replies: InboundReplies) -> None:
        """Match replies to appointments in the same transaction, around the keywords."""
        self._replies = replies

    def answer_surveys(self, surveys: SurveyStep) -> None:
        """Take survey answers after the keywords, before the appointment replies."""
        self._surveys = surveys

    def _keyword_step(self) -> tuple[InboundHook | None, list[Callable[[], object]]]:
        """The hook deciding keywords and replies in the inbound's transaction, and the
        list it fills with what to do after the commit."""
        later: list[Callable[[], object]] = []
        consent, replies, surveys = self._consent, self._replies, self._surveys
        if consent is None and replies is None and surveys is None:
            return None, later

        def hook(conn: sqlite3.Connection, stored: StoredInbound) -> None:
            scoped = None if replies is None else replies.before_keywords(conn, stored)
            if replies is not None and scoped is not None:  # `STOP 1234`, a known code
                later.append(functools.partial(replies.after, scoped))
                return
            outcome = None if consent is None else consent.decide(conn, stored)
            if consent is not None and outcome is not None:
                later.append(functools.partial(consent.after, outcome))
            survey = None if surveys is None else surveys.decide(conn, stored, outcome)
            if surveys is not None and survey is not None:
                later.append(functools.partial(surveys.after, survey))
                if survey.took:  # an answer (or the STOP that ended it): not a reply
                    return
            reply = None if replies is None else replies.decide(conn, stored, outcome)
            if replies is not None and reply is not None:
                later.append(functools.partial(replies.after, reply))

        return hook, later

    async def _after_commit(self, later: list[Callable[[], object]]) -> None:
        for step in later:
            done = step()
            if inspect.isawaitable(done):  # a cluster node's keyword decision (PostgreSQL)
                await done

    def wake_on_health(self, callback: Callable[[], None]) -> None:
        self._wakers.append(callback)

    async def receipt(self, route: str, receipt: Receipt) -> None:
        applied = await self._receipts.apply_receipt(
            route,
            receipt.carrier_id,
            receipt.state.value,
            receipt.error_code,
            self._clock.time(),
            receipt.alternate_ids,
        )
        self._applied(route, receipt, applied)

    async def receipt_group(
        self, route: str, receipts: Sequence[Receipt]
    ) -> list[Exception | None]:
        """`drivers.base.GroupReceiptSink`: a group of receipts in one writer job."""
        outcomes = await self._receipts.apply_receipts(
            route,
            [(r.carrier_id, r.state.value, r.error_code, r.alternate_ids) for r in receipts],
            self._clock.time(),
        )
        failed: list[Exception | None] = []
        finals: dict[State, int] = {}
        debug = log.debug  # looked up once: the logger is a lazy proxy
        for receipt, applied in zip(receipts, outcomes, strict=True):
            if isinstance(applied, Exception):
                failed.append(applied)
            else:
                failed.append(None)
                if applied is not None:
                    finals[applied[1]] = finals.get(applied[1], 0) + 1
                    self._log_final(route, receipt, applied, debug)
        for state, count in finals.items():  # one count per state, not per receipt
            self._metrics.final.labels(state.value).inc(count)
        return failed

    def _applied(self, route: str, receipt: Receipt, applied: tuple[str, State] | None) -> None:
        if applied is not None:
            self._metrics.final.labels(applied[1].value).inc()
            self._log_final(route, receipt, applied, log.debug)

    @staticmethod
    def _log_final(
        route: str, receipt: Receipt, applied: tuple[str, State], debug: Callable[..., Any]
    ) -> None:
        message_id, state = applied
        # Deliveries are the common case and are in `message_events`: debug level.
        (debug if state is State.DELIVERED else log.info)(
            "message_final",
            message_id=message_id,
            route=route,
            state=state.value,
            code=receipt.error_code,
        )

    async def inbound(self, route: str, sms: InboundSms) -> None:
        """Store `sms`; its acknowledgement taken as written once this returns."""
        answered = await self.inbound_to_answer(route, sms)
        answered(True)

    async def inbound_to_answer(self, route: str, sms: InboundSms) -> Callable[[bool], None]:
        """`drivers.base.AnsweredInboundSink`: store `sms` with its mark in doubt; the
        call that clears it (acknowledged) or flags it failed."""
        if sms.part is not None and sms.part.total > 1:
            await self._inbound_part(route, sms)
            return _no_mark
        now = self._clock.time()
        scope = self._scopes.get(route) or f"route:{route}"
        digest = self._inbound.inbound_digest(scope, sms.sender, sms.recipient, sms.body)
        riding = self._in_doubt.riding(now)
        hook, handled = self._keyword_step()
        try:
            once = await self._inbound.insert_inbound_once(
                new_message_id(),
                route,
                sms.sender,
                sms.body,
                sms.recipient,
                sms.carrier_id,
                now,
                Marked(digest, self._in_doubt.keep, riding),
                then=hook,
            )
            if once.stored:
                self._metrics.inbound.labels(route).inc()
                log.info("inbound_stored", route=route, inbound_id=once.inbound_id)
            else:  # the delivery not acknowledged was stored after all
                log.info("inbound_stored_before", route=route, inbound_id=once.inbound_id)
            await self._after_commit(handled)
        except BaseException:  # not acknowledged: the carrier delivers it again
            self._in_doubt.unsettled(riding)  # again: its commit may not have happened
            self._in_doubt.not_answered(digest)
            raise
        return functools.partial(self._in_doubt.answered, digest, once.inbound_id)

    async def aclose(self) -> None:
        """Clear the marks of deliveries acknowledged (a clean stop)."""
        await self._in_doubt.aclose()

    async def _inbound_part(self, route: str, sms: InboundSms) -> None:
        assert sms.part is not None
        hook, handled = self._keyword_step()
        filed = await self._inbound.file_inbound_part(
            route, sms, self._clock.time(), self.reassembly_timeout, then=hook
        )
        if filed.outcome is Filed.COMPLETED:
            self._metrics.inbound.labels(route).inc()
        log.info(
            "inbound_part",
            route=route,
            seq=sms.part.seq,
            total=sms.part.total,
            outcome=filed.outcome.value,
            inbound_id=filed.inbound_id,
        )
        await self._after_commit(handled)

    async def quarantine(self, route: str, source: str, record: str) -> None:
        """`drivers.base.QuarantineSink`: hold an undecodable record, then alert."""
        held_id = await self._quarantine.hold(route, source, record, self._clock.time())
        if held_id is None:
            log.warning("inbound_undecodable_again", route=route, source=source)
            return
        self._metrics.inbound_undecodable.labels(route).inc()
        log.error("inbound_undecodable_held", route=route, source=source, held_id=held_id)

    async def undecodable_summary(self) -> HeldUndecodable:
        return await self._quarantine.summary()

    async def expire_inbound(self) -> float | None:
        """Store the sets held too long as incomplete messages; when the next is due."""
        hook, handled = self._keyword_step()
        expired = await self._inbound.expire_inbound_parts(
            self._clock.time(), self.reassembly_timeout, then=hook
        )
        for inbound_id in expired.inbound_ids:
            log.warning("inbound_incomplete_stored", inbound_id=inbound_id)
        await self._after_commit(handled)
        return expired.next_due

    def health_changed(self, route: str, health: RouteHealth) -> None:
        log.info("route_health", route=route, state=health.state.value, detail=health.detail)
        for callback in self._wakers:
            callback()


def _no_mark(acknowledged: bool) -> None:
    """A part leaves no mark in doubt: a part delivered again is recognised by its set."""
