"""The review queue of free-text revocations (MSG-4) behind one interface.

`ReviewQueue` is what the review use cases (`GET /consents/reviews`, resolving one,
the panel's review page) need: the open reviews, their numbers and texts for the
reviewer, and resolving one once, with the opt-ins a correction records in the same
transaction. `SqliteReviews` runs it on one node's store (`consent_review`);
`gateway/cluster/consent_reviews.py` on the PostgreSQL every node of a cluster shares
(`consent_reviews`), so a review opened on one node is resolved from any.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Protocol

from gateway.consent import ledger
from gateway.consent.ledger import Entry
from gateway.store import consent_sql
from gateway.store.consent_sql import Review
from gateway.store.store import Store

CORRECTED = "corrected"  # the text was no revocation: its opt-outs are lifted


class ReviewQueue(Protocol):
    async def open(self, limit: int) -> list[Review]:
        """Open reviews, oldest first."""
        ...

    async def numbers(self, idxs: Sequence[bytes]) -> dict[bytes, str]:
        """The reviewed contacts' numbers, decrypted (shown masked)."""
        ...

    async def texts(self, inbound_ids: Sequence[str]) -> dict[str, str]:
        """The reviewed messages' texts by inbound id, decrypted (PHI: audited by the
        caller first)."""
        ...

    async def resolve(
        self, review_id: str, resolution: str, actor: str, now: float
    ) -> tuple[str, ...] | None:
        """Resolve an open review; when `CORRECTED`, lift every opt-out its message
        caused by an opt-in with `actor`, in the same transaction. The opt-ins' ledger
        ids; None if no review with this id is open (resolved once only)."""
        ...


class SqliteReviews:
    """`ReviewQueue` on one node's SQLite store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def open(self, limit: int) -> list[Review]:
        return await consent_sql.open_reviews(self._store, limit)

    async def numbers(self, idxs: Sequence[bytes]) -> dict[bytes, str]:
        return await consent_sql.contact_numbers(self._store, idxs)

    async def texts(self, inbound_ids: Sequence[str]) -> dict[str, str]:
        return await consent_sql.inbound_texts(self._store, inbound_ids)

    async def resolve(
        self, review_id: str, resolution: str, actor: str, now: float
    ) -> tuple[str, ...] | None:
        cipher = consent_sql.cipher_of(self._store)

        def job(conn: sqlite3.Connection) -> tuple[str, ...] | None:
            review = consent_sql.resolve_review(conn, review_id, resolution, actor, now)
            if review is None:
                return None
            if resolution != CORRECTED:
                return ()
            idx = bytes(review.contact_idx)
            number = consent_sql.number_of(conn, cipher, idx)
            if number is None:
                return ()
            caused = conn.execute(
                "SELECT scope, program FROM consent_ledger WHERE inbound_id = ?"
                " AND decision = 'opt_out' ORDER BY seq",
                (review.inbound_id,),
            ).fetchall()
            return tuple(
                ledger.append(conn, cipher, lifting(review, number, scope, program, actor, now))[0]
                for scope, program in caused
            )

        return await self._store.writer.run(job)


def lifting(review: Review, number: str, scope: str, program: str, actor: str, now: float) -> Entry:
    """The opt-in that lifts one opt-out a corrected review's message caused."""
    return Entry(
        bytes(review.contact_idx),
        number,
        "opt_in",
        scope,
        program,
        "review",
        now,
        actor=actor,
        inbound_id=review.inbound_id,
    )
