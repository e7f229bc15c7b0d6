"""API tokens shared by every node: the `api_tokens` table in PostgreSQL.

The same rows as SQLite's (`gateway/store/tokens_sql.py`: id, name, scopes, the
SHA-256 of the secret, created and revoked times), behind the same methods, so a token
created on node A (the panel) verifies on node B, and a revocation on any node refuses
it everywhere (within `http.token_cache_seconds`). Tokens the console writes into a
node's own SQLite store (`smsgw token create`/`revoke`, `smsgw init`) are copied up by
that node at each heartbeat (`copy_local`): a new one is added, a revocation is
carried over, and nothing copied ever un-revokes a token.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence
from typing import Any

from gateway.cluster.lease import Pool
from gateway.store.reads import ReadPool
from gateway.store.tokens_sql import TokenRecord

_COLUMNS = "id, name, scopes, created_at, revoked_at"


def _record(row: Sequence[Any]) -> TokenRecord:
    scopes = frozenset(s for s in str(row[2]).split(",") if s)
    return TokenRecord(row[0], row[1], scopes, row[3], row[4])


class ClusterTokens:
    """`TokenTable`'s methods on the shared table."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._local_seen: tuple[int, int] | None = None  # (tokens, revoked) copied last

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self._pool.connection() as conn:
            return await (await conn.execute(sql.encode(), params)).fetchall()

    async def add(
        self, token_id: str, name: str, secret_hash: bytes, scopes: Iterable[str], now: float
    ) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO api_tokens (id, name, secret_hash, scopes, created_at)"
                " VALUES (%s, %s, %s, %s, %s)",
                (token_id, name, secret_hash, ",".join(sorted(scopes)), now),
            )

    async def by_hash(self, token_id: str, secret_hash: bytes) -> TokenRecord | None:
        rows = await self._all(
            f"SELECT {_COLUMNS}, secret_hash FROM api_tokens WHERE id = %s",  # noqa: S608 - fixed columns
            (token_id,),
        )
        if not rows or not hmac.compare_digest(bytes(rows[0][5]), secret_hash):
            return None
        return _record(rows[0])

    async def get(self, token_id: str) -> TokenRecord | None:
        rows = await self._all(
            f"SELECT {_COLUMNS} FROM api_tokens WHERE id = %s",  # noqa: S608 - fixed columns
            (token_id,),
        )
        return _record(rows[0]) if rows else None

    async def all(self) -> list[TokenRecord]:
        """Every token, revoked ones too, oldest first."""
        rows = await self._all(
            f"SELECT {_COLUMNS} FROM api_tokens ORDER BY created_at, id"  # noqa: S608 - fixed columns
        )
        return [_record(r) for r in rows]

    async def revoke(self, token_id: str, now: float) -> bool:
        """True if this call revoked it (one UPDATE: two nodes cannot both win)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE api_tokens SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL",
                (now, token_id),
            )
            return cur.rowcount == 1

    async def copy_local(self, local: ReadPool) -> int:
        """Add this node's own tokens the shared table lacks, and carry its revocations
        over; how many rows changed."""
        counts = await local.one("SELECT count(*), count(revoked_at) FROM api_tokens")
        seen = (int(counts[0]), int(counts[1])) if counts is not None else (0, 0)
        if seen == self._local_seen:  # tokens are only added and revoked: nothing new
            return 0
        rows = await local.all(
            "SELECT id, name, secret_hash, scopes, created_at, revoked_at FROM api_tokens"
        )
        async with self._pool.connection() as conn, conn.transaction():
            changed = 0
            async with conn.cursor() as cur:
                for r in rows:
                    await cur.execute(
                        "INSERT INTO api_tokens (id, name, secret_hash, scopes, created_at,"
                        " revoked_at) VALUES (%s, %s, %s, %s, %s, %s)"
                        " ON CONFLICT (id) DO UPDATE SET revoked_at = excluded.revoked_at"
                        " WHERE api_tokens.revoked_at IS NULL AND excluded.revoked_at IS NOT NULL",
                        (r[0], r[1], bytes(r[2]), r[3], r[4], r[5]),
                    )
                    changed += cur.rowcount
        self._local_seen = seen
        return changed
