"""The read side of the message queue, as the API's lists, `/queue` and the panel use it.

Two backends satisfy `MessageReads`: `LocalReads` over the embedded SQLite store (one
node) and `gateway/cluster/reads.ClusterReads` over the shared PostgreSQL queue, so on
a cluster every node shows the whole queue, not its own nearly empty store. Both give
the same typed records for the same rows (`tests/pg/test_reads_contract.py` runs one
suite on both): messages newest first with every filter of the API, a message's
history, and the counts the queue status shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.store.event_log import LoggedEvent
from gateway.store.records import MessageQuery, StoredEvent, StoredMessage
from gateway.store.store import Store


@dataclass(frozen=True, slots=True)
class Waiting:
    """Messages waiting to be sent (queued or scheduled), per priority (an int): `due`
    may go now, `later` waits for its time (a send time, or a retry's backoff);
    `oldest_due`: the earliest due time among the due ones."""

    due: dict[int, int]
    later: dict[int, int]
    oldest_due: float | None

    @classmethod
    def of(cls, rows: Iterable[Sequence[Any]]) -> Waiting:
        """From rows of (priority, is due, count, earliest due time), as both
        backends' `waiting` reads them."""
        due: dict[int, int] = {}
        later: dict[int, int] = {}
        oldest: float | None = None
        for priority, is_due, count, first in rows:
            (due if is_due else later)[int(priority)] = int(count)
            if is_due and first is not None:
                oldest = float(first) if oldest is None else min(oldest, float(first))
        return cls(due, later, oldest)


class MessageReads(Protocol):
    async def message(self, message_id: str) -> StoredMessage | None: ...

    async def events(self, message_id: str) -> list[StoredEvent]:
        """Every state of a message in order, its creation first."""
        ...

    async def messages(self, q: MessageQuery, limit: int) -> list[StoredMessage]:
        """Newest first, `q`'s filters; `q.before` (a message id) is the cursor."""
        ...

    async def sending_counts(self) -> dict[int, int]:
        """Messages `sending`, by priority."""
        ...

    async def sending_by_route(self) -> dict[str, int]: ...

    async def possible_duplicates(self) -> int:
        """Waiting or sending messages flagged as possibly sent already."""
        ...

    async def waiting(self, now: float) -> Waiting: ...


class ActivityLog(Protocol):
    """`message_events` by position, for the dashboard's tail (`usecases/activity.py`)."""

    async def first_seq_since(self, since: float) -> int: ...

    async def after(self, seq: int, limit: int) -> list[LoggedEvent]: ...


class LocalReads:
    """`MessageReads` on the SQLite store: its read pool, never the writer."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def message(self, message_id: str) -> StoredMessage | None:
        return await self._store.records.message(message_id)

    async def events(self, message_id: str) -> list[StoredEvent]:
        return await self._store.records.events(message_id)

    async def messages(self, q: MessageQuery, limit: int) -> list[StoredMessage]:
        return await self._store.records.messages(q, limit)

    async def sending_counts(self) -> dict[int, int]:
        return await self._store.sending_counts()

    async def sending_by_route(self) -> dict[str, int]:
        return await self._store.sending_by_route()

    async def possible_duplicates(self) -> int:
        return await self._store.possible_duplicates()

    async def waiting(self, now: float) -> Waiting:
        # The scheduler keeps these in memory on one node (`Status` uses it); this
        # reading is the contract's twin of the cluster's, from the rows.
        rows = await self._store.reader.all(
            "SELECT priority, due_at <= ?, count(*), min(due_at) FROM messages"
            " WHERE state IN ('queued', 'scheduled') GROUP BY 1, 2",
            (now,),
        )
        return Waiting.of(rows)
