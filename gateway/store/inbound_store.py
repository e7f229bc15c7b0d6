"""Where the sink files inbound messages: the node's SQLite store (`Store`), or on a
cluster the shared PostgreSQL tables (`gateway/cluster/inbound.ClusterInbound`).

Both store a whole message, hold the parts of a concatenated one until their set is
whole (or expired), drop a part the carrier delivers again, and run `then` (the
keyword step) on each message they store (`gateway/store/inbound_parts.py`). The sink
stores a whole message with its mark in doubt (`insert_inbound_once`), so a delivery
left unacknowledged is stored once when the carrier sends it again, on any node
(`gateway/inbound_doubt.py`)."""

from __future__ import annotations

from typing import Protocol

from drivers.base import InboundSms
from gateway.inbound_doubt import Marked, Settle, StoredOnce
from gateway.store.inbound_parts import ExpiredSets, FiledPart, InboundHook


class InboundStore(Protocol):
    async def insert_inbound(
        self,
        inbound_id: str,
        route: str,
        sender: str,
        body: str,
        recipient: str | None,
        carrier_id: str | None,
        now: float,
        *,
        incomplete: bool = False,
        then: InboundHook | None = None,
        again: bool = False,
    ) -> bool:
        """Store one whole message; False if `again` (the id of an earlier delivery
        not acknowledged, `gateway/inbound_doubt.py`) and that one was stored."""
        ...

    def inbound_digest(self, scope: str, sender: str, recipient: str | None, body: str) -> bytes:
        """A delivery's keyed digest (the blind-index key's: the same on every node)."""
        ...

    async def insert_inbound_once(
        self,
        inbound_id: str,
        route: str,
        sender: str,
        body: str,
        recipient: str | None,
        carrier_id: str | None,
        now: float,
        marked: Marked,
        *,
        then: InboundHook | None = None,
    ) -> StoredOnce:
        """Store one whole message and its mark in doubt, in one transaction; under the
        id of the oldest mark of its digest in doubt if any (nothing stored if that id
        is), else under `inbound_id`."""
        ...

    async def settle_inbound_doubt(self, settle: Settle) -> None:
        """Clear, flag and sweep marks in doubt (in a transaction that may be lazy)."""
        ...

    async def file_inbound_part(
        self,
        route: str,
        sms: InboundSms,
        now: float,
        hold_for: float,
        *,
        then: InboundHook | None = None,
    ) -> FiledPart: ...

    async def expire_inbound_parts(
        self, now: float, hold_for: float, *, then: InboundHook | None = None
    ) -> ExpiredSets: ...

    async def held_inbound_parts(self) -> int:
        """Parts waiting for the rest of their set."""
        ...
