"""The `api_tokens` table: a token's id, name, scopes and the SHA-256 of its secret.

Writes go through the store's writer, reads through its read pool (`Store.api_tokens`).
Who may list, create or revoke tokens, and the audit of it, is `gateway/usecases/tokens.py`.
"""

from __future__ import annotations

import hmac
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.store.reads import ReadPool
from gateway.store.writer import GroupCommitWriter


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: str
    name: str
    scopes: frozenset[str]
    created_at: float
    revoked_at: float | None


class TokenStore(Protocol):
    """What tokens are kept in: this table, or on a cluster the shared one
    (`gateway/cluster/tokens.py`)."""

    async def add(
        self, token_id: str, name: str, secret_hash: bytes, scopes: Iterable[str], now: float
    ) -> None: ...

    async def by_hash(self, token_id: str, secret_hash: bytes) -> TokenRecord | None: ...

    async def get(self, token_id: str) -> TokenRecord | None: ...

    async def all(self) -> list[TokenRecord]: ...

    async def revoke(self, token_id: str, now: float) -> bool: ...


class TokenTable:
    def __init__(self, reader: ReadPool, writer: GroupCommitWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def add(
        self, token_id: str, name: str, secret_hash: bytes, scopes: Iterable[str], now: float
    ) -> None:
        await self._writer.run(
            lambda conn: conn.execute(
                "INSERT INTO api_tokens VALUES (?,?,?,?,?,NULL)",
                (token_id, name, secret_hash, ",".join(sorted(scopes)), now),
            )
        )

    async def by_hash(self, token_id: str, secret_hash: bytes) -> TokenRecord | None:
        """The token `token_id` if its secret hashes to `secret_hash` (revoked or not)."""
        cur = await self._reader.execute(
            "SELECT id, name, scopes, created_at, revoked_at, secret_hash FROM api_tokens"
            " WHERE id = ?",
            (token_id,),
        )
        row = await cur.fetchone()
        if row is None or not hmac.compare_digest(row[5], secret_hash):
            return None
        return _record(row)

    async def get(self, token_id: str) -> TokenRecord | None:
        cur = await self._reader.execute(
            "SELECT id, name, scopes, created_at, revoked_at FROM api_tokens WHERE id = ?",
            (token_id,),
        )
        row = await cur.fetchone()
        return None if row is None else _record(row)

    async def all(self) -> list[TokenRecord]:
        """Every token, revoked ones too, oldest first."""
        cur = await self._reader.execute(
            "SELECT id, name, scopes, created_at, revoked_at FROM api_tokens ORDER BY created_at"
        )
        return [_record(r) for r in await cur.fetchall()]

    async def revoke(self, token_id: str, now: float) -> bool:
        """True if this call revoked it (one UPDATE: two revocations cannot both win)."""

        def job(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (now, token_id),
            )
            return cur.rowcount == 1

        return await self._writer.run(job)


def _record(row: Sequence[Any]) -> TokenRecord:
    scopes = frozenset(s for s in row[2].split(",") if s)
    return TokenRecord(row[0], row[1], scopes, row[3], row[4])
