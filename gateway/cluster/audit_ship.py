"""A running node's audit trail in the shared store: its chain copied, and anchors.

Every audited action of a node (PHI reads, admin actions, sign-ins, ...) is first
appended to its own SQLite trail (`gateway/store/audit_log.py`), in the transaction of
the change it records where there is one, and is durable there before the action
answers. `AuditShipper.ship()` then copies the entries PostgreSQL does not hold yet into
this node's chain there (`cluster/audit.py`), row for row: same seq, time, detail,
previous hash and hash, so the copy is the local chain itself and verifies under the
same key (the shared keyring's root, which `shared_keys.check_same` made sure is this
node's). A copy only ever extends: if the shared chain's head is not the entry the next
local one follows (another process wrote under this node id, or the data directory was
replaced), nothing is copied and `ChainDiverged` says so; both chains stay as they are
for an operator. `anchor()` records every node's head (`audit.anchor`, only when one
moved), so `smsgw audit verify --postgresql` checks the set across nodes.

The copy lags the local commit by at most a heartbeat (and the shutdown ships the rest);
a node killed in between leaves the tail in its SQLite trail, copied at its next start.
"""

from __future__ import annotations

from gateway.cluster import audit
from gateway.cluster.lease import Pool
from gateway.store.audit_log import GENESIS
from gateway.store.reads import ReadPool

BATCH = 500


class ChainDiverged(Exception):
    """The shared chain of this node id does not continue into the local trail."""


class AuditShipper:
    def __init__(self, pool: Pool, local: ReadPool, node_id: str, key: bytes) -> None:
        self._pool = pool
        self._local = local
        self.node_id = node_id
        self.key = key  # the chains' HMAC key (the shared keyring's root's)
        self.shipped = 0  # entries copied since start (a metric)

    async def ship(self) -> int:
        """Copy every local entry the shared chain lacks; how many were copied."""
        total = 0
        while (n := await self._ship_batch()) > 0:
            total += n
            if n < BATCH:
                break
        self.shipped += total
        return total

    async def _ship_batch(self) -> int:
        async with self._pool.connection() as conn, conn.transaction():
            await audit.lock_chain(conn, self.node_id)
            cur = await conn.execute(
                "SELECT seq, hash FROM audit_log WHERE node_id = %s ORDER BY seq DESC LIMIT 1",
                (self.node_id,),
            )
            head = await cur.fetchone()
            seq, last = (int(head[0]), str(head[1])) if head else (0, GENESIS)
            # From the shared head itself: it must be the local entry of that seq.
            rows = await self._local.all(
                "SELECT seq, at, actor, action, target_kind, target_id, detail, prev_hash, hash"
                " FROM audit_log WHERE seq >= ? ORDER BY seq LIMIT ?",
                (max(seq, 1), BATCH + 1),
            )
            if seq > 0:
                if not rows or int(rows[0][0]) != seq or str(rows[0][8]) != last:
                    raise ChainDiverged(
                        f"the shared audit chain of node {self.node_id} ends at entry {seq},"
                        " which is not in the local trail"
                    )
                rows = rows[1:]
            if not rows:
                return 0
            async with conn.cursor() as c:
                await c.executemany(
                    "INSERT INTO audit_log (node_id, seq, at, actor, action, target_kind,"
                    " target_id, detail, prev_hash, hash) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                    [(self.node_id, *tuple(r)) for r in rows],
                )
            return len(rows)

    async def anchor(self, now: float) -> int | None:
        """An anchor of every chain's head, if some head moved since the last one."""
        async with self._pool.connection() as conn:
            return await audit.anchor(conn, self.key, self.node_id, now, only_if_moved=True)
