"""Inbound messages (replies from handsets): get, list, poll, reveal.

Paging. Each inbound message has a cursor: its place in commit order (`inbound.seq`,
given inside the writer's transaction). Newest-first pages go backwards from a cursor;
`after` (the API's `order=oldest`) goes forwards, oldest first, and always answers the
cursor to resume from, so a client polling in a loop never misses or re-reads a
message, including ones committed while it pages: a new message's cursor is above
every one already visible.
"""

from __future__ import annotations

from gateway.errors import ApiError
from gateway.store.inbound_reads import InboundReads
from gateway.store.records import StoredInbound
from gateway.usecases.audit import AuditSink
from gateway.usecases.caller import Caller
from gateway.usecases.messages import forbidden
from gateway.usecases.records import InboundPage, InboundRecord, Revealed

MAX_CURSOR_DIGITS = 18  # below 2**63: SQLite's integers


def parse_cursor(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > MAX_CURSOR_DIGITS:
        raise ApiError(400, "invalid_query", "cursor: not a cursor from this API", field="cursor")
    return int(text)


def not_found() -> ApiError:
    return ApiError(404, "not_found", "no inbound message with this id")


class Inbound:
    def __init__(self, *, reads: InboundReads, audit: AuditSink) -> None:
        self._reads = reads  # this node's store, or on a cluster the shared table
        self._audit = audit

    async def get(self, caller: Caller, inbound_id: str, *, phi: bool = False) -> InboundRecord:
        """One inbound message; `phi`: with its sender and text (PHI rights, audited)."""
        self._check_phi(caller, phi)
        stored = await self._reads.inbound(inbound_id)
        if stored is None:
            raise not_found()
        if phi:
            await self._audit.record(caller.actor, "phi_read", "inbound", inbound_id)
        return _record(caller, stored, phi)

    async def newest(
        self, caller: Caller, cursor: str | None, limit: int, *, phi: bool = False
    ) -> InboundPage:
        """Newest first; `cursor` (a page's `next_cursor`) continues with older ones."""
        self._check_phi(caller, phi)
        before = None if cursor is None else parse_cursor(cursor)
        stored = await self._reads.inbound_newest(before, limit + 1)
        more = len(stored) > limit
        stored = stored[:limit]
        records = await self._records(caller, stored, phi)
        return InboundPage(records, records[-1].cursor if more and records else None)

    async def after(
        self, caller: Caller, cursor: str | None, limit: int, *, phi: bool = False
    ) -> InboundPage:
        """Oldest first, stored after `cursor` (None: from the first). `next_cursor` is
        always set: the cursor to poll with next (the same one if nothing came)."""
        self._check_phi(caller, phi)
        start = 0 if cursor is None else parse_cursor(cursor)
        stored = await self._reads.inbound_after(start, limit)
        records = await self._records(caller, stored, phi)
        return InboundPage(records, records[-1].cursor if records else str(start))

    async def reveal(self, caller: Caller, inbound_id: str) -> Revealed:
        """Sender and text whole; audited before they are returned."""
        if not caller.may_read_phi:
            raise forbidden("id", "revealing a message")
        stored = await self._reads.inbound(inbound_id)
        if stored is None:
            raise not_found()
        await self._audit.record(caller.actor, "reveal", "inbound", inbound_id)
        return Revealed(inbound_id, stored.sender.open(), stored.body.open(), None)

    async def _records(
        self, caller: Caller, stored: list[StoredInbound], phi: bool
    ) -> tuple[InboundRecord, ...]:
        if phi and stored:
            await self._audit.record_each(
                caller.actor, "phi_read", "inbound", [s.id for s in stored]
            )
        return tuple(_record(caller, s, phi) for s in stored)

    @staticmethod
    def _check_phi(caller: Caller, phi: bool) -> None:
        if phi and not caller.may_read_phi:
            raise forbidden("include", "reading senders and texts")


def _record(caller: Caller, s: StoredInbound, phi: bool) -> InboundRecord:
    sender = s.sender.open() if caller.sees_masked or phi else None
    return InboundRecord(
        id=s.id,
        cursor=str(s.seq),
        route=s.route,
        received_at=s.received_at,
        incomplete=s.incomplete,
        sender_masked=caller.mask(sender) if sender is not None and caller.sees_masked else None,
        sender=sender if phi else None,
        text=s.body.open() if phi else None,
    )
