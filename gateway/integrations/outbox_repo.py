"""What the outbox dispatcher (`gateway/integrations/outbox.py`) needs of a store.

Two backends: the node's SQLite store (`gateway/store/outbox_sql.OutboxStore`) and the
cluster's PostgreSQL (`gateway/cluster/outbox_store.ClusterOutbox`). The dispatcher
knows only this protocol. Lane leadership (`lead`) is how several nodes share a
consumer: only the node leading a consumer's lane delivers its events (one node alone
always leads).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

from gateway.store.outbox_sql import Attempt, OutboxRow


class OutboxRepo(Protocol):
    @property
    def poll(self) -> float | None:
        """Seconds between a lane's looks when other nodes' commits wake nothing here
        (None: every commit wakes the lanes, the config's safety poll is enough)."""
        ...

    def watch(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call `wake` after commits that may have written events; returns the undo."""
        ...

    async def lead(self, consumer: str) -> bool:
        """Whether this node delivers `consumer`'s events now (taking the lane if it is
        free); asked before every round."""
        ...

    async def close(self) -> None:
        """Give up every lane (at stop)."""
        ...

    async def keep_only(
        self, types: Collection[str], states: Collection[str] | None = None
    ) -> None: ...

    async def join(self, names: Sequence[str]) -> dict[str, int]: ...

    async def position(self, consumer: str) -> int:
        """The consumer's stored position (a new lane leader resumes from it)."""
        ...

    async def after_with_attempts(
        self, consumer: str, position: int, limit: int
    ) -> tuple[list[OutboxRow], dict[int, Attempt]]: ...

    async def row(self, seq: int) -> OutboxRow | None: ...

    async def last_seq(self) -> int: ...

    async def attempt(self, consumer: str, seq: int) -> Attempt | None: ...

    async def record_delivered(self, done: Sequence[Attempt], position: int) -> None: ...

    async def record(self, attempt: Attempt, *, advance: bool) -> None: ...

    async def set_position(self, consumer: str, seq: int) -> None: ...

    async def due_redeliveries(self, consumer: str, now: float) -> list[int]: ...

    async def redeliver(self, consumer: str, seq: int) -> bool: ...

    async def prune(self, before: float) -> int: ...

    async def recent(self, limit: int, *, state: str | None = None) -> list[Attempt]: ...

    async def phi(self, row: OutboxRow) -> dict[str, Any] | None: ...

    async def phi_many(self, rows: Sequence[OutboxRow]) -> dict[int, dict[str, Any]]: ...

    async def callback_urls(self, message_ids: Collection[str]) -> dict[str, str]: ...
