"""The panel's audit page on a cluster node (`AuditSource` of
`gateway/usecases/audit_log.py`): every node's chain in the shared store, newest first
across nodes, and the check of every chain and anchor (`cluster/audit.py` `verify`).

A node's entries reach the shared store at its heartbeat; this node copies its own
first (`AuditShipper.ship`, safe beside the heartbeat's: both hold the chain's lock),
so the page shows what was just done here. A chain that diverged is left alone, as
the heartbeat leaves it: the page shows the shared store as it is.
"""

from __future__ import annotations

import contextlib

from gateway.cluster import audit
from gateway.cluster.audit_ship import AuditShipper, ChainDiverged
from gateway.cluster.lease import Pool
from gateway.store.audit_log import GENESIS, AuditEntry
from gateway.usecases.audit_log import ChainState, TrailCheck, TrailEntry

_COLUMNS = "node_id, seq, at, actor, action, target_kind, target_id, detail, prev_hash, hash"


def _cursor(at: float, node: str, seq: int) -> str:
    return f"{at!r}:{seq}:{node}"


def _parse(cursor: str | None) -> tuple[float, str, int] | None:
    if not cursor:
        return None
    at, _, rest = cursor.partition(":")
    seq, _, node = rest.partition(":")
    try:
        return float(at), node, int(seq)
    except ValueError:
        return None  # not one of ours: the newest page


class ClusterAuditReads:
    def __init__(self, pool: Pool, shipper: AuditShipper) -> None:
        self._pool = pool
        self._shipper = shipper

    async def _ship(self) -> None:
        with contextlib.suppress(ChainDiverged):  # the heartbeat logs it, stops copying
            await self._shipper.ship()

    async def entries(self, *, before: str | None, limit: int) -> list[TrailEntry]:
        await self._ship()
        after = _parse(before)
        sql = f"SELECT {_COLUMNS} FROM audit_log"  # noqa: S608 - fixed columns
        params: tuple[object, ...] = ()
        if after is not None:
            sql += " WHERE (at, node_id, seq) < (%s, %s, %s)"
            params = after
        sql += " ORDER BY at DESC, node_id DESC, seq DESC LIMIT %s"
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(sql.encode(), (*params, limit))).fetchall()
        return [
            TrailEntry(AuditEntry(*r[1:]), str(r[0]), _cursor(float(r[2]), str(r[0]), int(r[1])))
            for r in rows
        ]

    async def verify(self) -> TrailCheck:
        await self._ship()
        async with self._pool.connection() as conn:
            found = await audit.verify(conn, self._shipper.key)
        chains = tuple(ChainState(h.node_id, h.entries, h.seq, h.hash) for h in found.heads)
        mine = [c for c in chains if c.node == self._shipper.node_id]
        return TrailCheck(
            found.ok,
            sum(c.entries for c in chains),
            reason="; ".join(found.problems) or None,
            head_seq=mine[0].head_seq if mine else 0,
            head_hash=mine[0].head_hash if mine else GENESIS,
            chains=chains,
            anchors=found.anchors,
        )
