"""The message queue's store interface: what the send path asks of a store.

Two backends satisfy it: the embedded SQLite `Store` (`store.py`, the default) and the
PostgreSQL `ClusterQueue` (`gateway/cluster/queue_store.py`), shared by several nodes.
The scheduler, the group sender, the receipt sink and the accept use case are typed
against these protocols, so a backend is swapped without touching them; the contract
suite (`tests/pg/test_store_contract.py`) runs the same cases on both.

Messages cross the interface in clear (`NewMessage`, `ClaimedMessage`, `LiveMessage`);
each backend encrypts its personal fields bound to the message id and column, the same
way (`crypto.FieldCipher`), so a ciphertext copied from one to the other still decrypts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Sequence
from typing import Protocol

from gateway.links.placeholders import Minted
from gateway.models import State
from gateway.store.claim_check import Held
from gateway.store.group_sql import SentItem
from gateway.store.idempotency import IdempotentAnswer, StoredIdempotent
from gateway.store.receipt_deadline import Sweep
from gateway.store.records import StoredEvent, StoredMessage
from gateway.store.route_parks import Park
from gateway.store.store import ClaimedMessage, LiveMessage, NewMessage, Sealed
from gateway.store.transitions import Transition
from gateway.store.writer import Statement


class Parks(Protocol):
    """Routes parked for refused credentials (`route_parks.py`)."""

    @property
    def key(self) -> bytes: ...

    async def all(self) -> dict[str, Park]: ...

    async def remember(self, route: str, code: str, credentials_mac: bytes, now: float) -> None: ...

    async def report_health(self, changes: list[tuple[str, str]], now: float) -> None: ...

    async def forget(self, route: str) -> None: ...


class ReceiptStore(Protocol):
    """What the receipt sink records: receipts matched by the carrier's id."""

    async def apply_receipt(
        self,
        route: str,
        carrier_id: str,
        state: str,
        error_code: str | None,
        now: float,
        alternate_ids: Sequence[str] = (),
    ) -> tuple[str, State] | None: ...

    async def apply_receipts(
        self, route: str, receipts: Sequence[tuple[str, str, str | None, Sequence[str]]], now: float
    ) -> list[tuple[str, State] | Exception | None]: ...


class AcceptStore(Protocol):
    """What the accept use case needs: sealing, the insert with its idempotent answer,
    replays, withdrawal, a message's history."""

    def seal(
        self,
        message_id: str,
        to: str,
        body: str,
        reference: str | None,
        callback_url: str | None,
    ) -> Sealed: ...

    def blind_index(self, e164: str) -> bytes: ...

    async def accept(
        self,
        messages: Sequence[NewMessage],
        answer: IdempotentAnswer | None = None,
        links: Sequence[Minted] = (),
        extra: Sequence[Statement] = (),
    ) -> None:
        """The messages, their short links' tokens, the idempotent answer and a front
        end's `extra` rows (in this backend's SQL: `integrations/dlr_wishes.py`) in one
        transaction."""
        ...

    def claim_group_soon(
        self, message_ids: Sequence[str], route: str, now: float
    ) -> asyncio.Future[list[ClaimedMessage | Held | Exception | None]]: ...

    async def find_idempotent(self, token_id: str, key_hash: bytes) -> StoredIdempotent | None: ...

    async def withdraw(
        self, message_id: str, now: float, *, owner: str | None = None
    ) -> tuple[State, bool] | None: ...

    async def events(self, message_id: str) -> list[StoredEvent]: ...

    async def message(self, message_id: str) -> StoredMessage | None: ...


class QueueStore(ReceiptStore, AcceptStore, Protocol):
    """The whole send path: accept, claim in groups, outcomes, recovery, receipts."""

    async def recover_in_flight(self, now: float) -> int: ...

    def live_messages(self, *, numbers: bool = True) -> AsyncIterator[LiveMessage]: ...

    async def claim_group(
        self, message_ids: Sequence[str], route: str, now: float
    ) -> list[ClaimedMessage | Held | Exception | None]: ...

    async def claim_due(self, route: str, want: int, now: float) -> list[ClaimedMessage]:
        """Claim up to `want` due, unexpired queued messages in class, due-time and id
        order (what several nodes share; the scheduler's heaps know only this node's)."""
        ...

    async def record_outcomes(
        self, sent: list[SentItem], changes: list[tuple[Transition, float]]
    ) -> tuple[list[State | Exception], list[bool | Exception]]: ...

    async def give_back(self, claims: Sequence[tuple[str, int]], route: str, now: float) -> int:
        """Return to `queued` those of a group whose claim raised but may have committed
        (the database went away before its answer): rows left `sending` for this node
        that no driver was handed. `claims`: each id with its attempts before the claim.
        Returns how many were given back."""
        ...

    async def transition_many(self, ts: Sequence[Transition], now: float) -> list[bool]: ...

    async def sweep_receipts(
        self, sent_before: float, wanting_receipts: Collection[int], now: float, limit: int
    ) -> Sweep: ...

    def parks(self) -> Parks: ...
