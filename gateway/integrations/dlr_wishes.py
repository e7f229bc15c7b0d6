"""Where a Kannel sendsms's delivery-report wish is kept: beside its message.

`DlrWishes` is what the listener writes at accept and the dlr-url consumer reads, on
either backend: the embedded store's `kannel_dlr` table (`LocalDlrWishes`, here) or the
cluster's (`gateway/cluster/dlr_wishes.py`). `statement` gives the row in the backend's
own SQL for the accept use case to commit with the messages
(`Messages.accept_together`'s `attached`): the messages go where the backend keeps
them, and so does their wish, in one transaction. The URL (its query may carry PHI)
and the receiver are encrypted bound to the message id and column, alike on both, so a
migrated row still opens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gateway.store.store import Store
from gateway.store.writer import Statement

URL_COLUMN = "kannel_dlr_url"
RECEIVER_COLUMN = "kannel_dlr_receiver"


@dataclass(frozen=True, slots=True)
class DlrWish:
    """What a sendsms asked to hear back, with the receiver and sender as written."""

    url: str
    mask: int
    receiver: str
    sender: str
    username: str


class DlrWishes(Protocol):
    def statement(self, message_id: str, wish: DlrWish, now: float) -> Statement:
        """The wish's row, in this backend's SQL, for the accept's transaction."""
        ...

    async def wish(self, message_id: str) -> DlrWish | None: ...

    async def carrier_id(self, message_id: str, route: str | None) -> str | None:
        """The carrier's id of the message's first part sent on `route` (any route
        when None), from its `sent` event."""
        ...


class LocalDlrWishes:
    """The embedded store's `kannel_dlr` rows (SQLite migration 8)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def statement(self, message_id: str, wish: DlrWish, now: float) -> Statement:
        c = self._store.cipher
        assert c is not None, "store is not open"
        return (
            "INSERT INTO kannel_dlr VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                message_id,
                c.encrypt(wish.url, message_id, URL_COLUMN),
                wish.mask,
                c.encrypt(wish.receiver, message_id, RECEIVER_COLUMN),
                wish.sender,
                wish.username,
                now,
            ),
        )

    async def wish(self, message_id: str) -> DlrWish | None:
        row = await self._store.reader.one(
            "SELECT url_ct, mask, receiver_ct, sender, username FROM kannel_dlr"
            " WHERE message_id = ?",
            (message_id,),
        )
        if row is None:
            return None
        c = self._store.cipher
        assert c is not None, "store is not open"
        return DlrWish(
            c.decrypt(row[0], message_id, URL_COLUMN),
            int(row[1]),
            c.decrypt(row[2], message_id, RECEIVER_COLUMN),
            row[3],
            row[4],
        )

    async def carrier_id(self, message_id: str, route: str | None) -> str | None:
        row = await self._store.reader.one(
            "SELECT e.carrier_id FROM messages m, json_each(m.event_seqs) j"
            " JOIN message_events e ON e.seq = j.value WHERE m.id = ? AND e.state = 'sent'"
            " AND e.carrier_id IS NOT NULL AND (e.route = ? OR ? IS NULL) ORDER BY e.seq LIMIT 1",
            (message_id, route, route),
        )
        return None if row is None else str(row[0]).split(",")[0]
