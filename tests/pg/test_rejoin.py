"""A node that rejoins after a lost lease (issue 18): its scheduler keeps only the
waiting rows (queued and scheduled) no peer adopted meanwhile, taken back under its new
incarnation, and the peer's holds the rows it adopted; every waiting row is held by one
live incarnation, in that node's scheduler only."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drivers.clock import FakeClock
from gateway.app import Gateway
from gateway.cluster.adoption import ClusterAdoption
from gateway.config import from_mapping
from gateway.models import Priority
from gateway.store.store import LiveMessage
from tests.conftest import LOOPBACK_TEST
from tests.pg.two_nodes import in_process_nodes
from tests.test_consent_policy import caller, send

MESSAGES = 8
ADOPTED = 3  # of them, by the peer while the first node's lease has lapsed
WAIT = 10.0
HEARTBEAT = 2.0


def config(data: Path, name: str, dsn: str) -> Any:
    data.mkdir(exist_ok=True)
    return from_mapping(
        {
            "data_dir": str(data),
            "routes": [{"name": "main", "type": "loopback", **LOOPBACK_TEST}],
            "source": str(data / "smsgw.toml"),
            # The fake clock moves only when told: a beat is one `advance(HEARTBEAT)`.
            "cluster": {
                "enabled": True,
                "node_id": name,
                "conninfo": dsn,
                "lease_seconds": 600,
                "heartbeat_seconds": HEARTBEAT,
            },
        }
    )


class OnePage:
    """The peer adopts one short page of what the lapsed node held, not all of it."""

    def __init__(self, source: ClusterAdoption, size: int) -> None:
        self._source = source
        self._size = size

    async def page(
        self,
        due_before: float,
        limit: int,
        servable: Sequence[tuple[str, Priority]] | None,
        numbers: bool,
    ) -> list[LiveMessage]:
        return await self._source.page(due_before, self._size, servable, numbers)

    async def release(self, message_ids: Sequence[str]) -> None:
        await self._source.release(message_ids)

    async def take_back(self, message_ids: Sequence[str]) -> list[str]:
        return await self._source.take_back(message_ids)


async def holders(gw: Gateway) -> dict[str, int]:
    """Each waiting row's holder."""
    assert gw.cluster is not None
    async with gw.cluster.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id, held_by FROM messages WHERE state IN ('queued', 'scheduled')"
        )
        return {str(i): int(h) for i, h in await cur.fetchall()}


async def test_a_rejoining_node_keeps_what_no_peer_adopted_and_drops_the_rest(
    tmp_path: Path, clock: FakeClock, pg_dsn: str
) -> None:
    async with in_process_nodes(tmp_path, clock, lambda d, n: config(d, n, pg_dsn)) as (a, b):
        assert a.cluster is not None and b.cluster is not None
        who = await caller(a, "send", purpose="appointment")
        ids = {(await send(a, who, body=f"m{n}")).id for n in range(MESSAGES)}
        later = datetime.fromtimestamp(clock.time() + 3600, UTC)
        # Two scheduled: the high one goes first to the peer's page, the other stays.
        scheduled = {
            (await send(a, who, body=f"s{p}", priority=p, send_at=later)).id: p
            for p in ("high", "normal")
        }
        ids |= scheduled.keys()
        old = a.cluster.membership.me
        assert set(a.scheduler.held()) == ids and await holders(a) == dict.fromkeys(
            ids, old.incarnation
        )
        # A's lease lapses in the database (as when its renewals stop reaching it).
        async with a.cluster.pool.connection() as conn:
            await conn.execute(
                "UPDATE nodes SET lease_until = clock_timestamp() WHERE incarnation = %s",
                (old.incarnation,),
            )
        assert await b.scheduler.adopt(OnePage(b.cluster.adoption, ADOPTED), math.inf) == ADOPTED
        adopted = set(b.scheduler.held())
        assert len(adopted) == ADOPTED and adopted < ids
        # A's next beat is refused: it registers anew and takes its rows back.
        await clock.wait_sleeping(2)
        clock.advance(HEARTBEAT)
        await asyncio.wait_for(
            a.cluster.membership.wait_until(lambda: a.cluster.rejoins == 1),  # type: ignore[union-attr]
            WAIT,
        )
        new = a.cluster.membership.me
        assert new.incarnation != old.incarnation and not a.cluster.fenced
        held = await holders(a)
        assert held == {
            **dict.fromkeys(ids - adopted, new.incarnation),
            **dict.fromkeys(adopted, b.cluster.membership.me.incarnation),
        }
        assert set(a.scheduler.held()) == ids - adopted
        assert set(b.scheduler.held()) == adopted
        assert [scheduled[i] for i in adopted if i in scheduled] == ["high"]
        # Nothing left for anyone to adopt: A's old incarnation holds no waiting row.
        assert await b.scheduler.adopt(b.cluster.adoption, math.inf) == 0
        assert await a.scheduler.adopt(a.cluster.adoption, math.inf) == 0
