"""Queue rows for the cluster tests, inserted straight into PostgreSQL."""

from __future__ import annotations

from typing import Any

from gateway.cluster.lease import Pool

NOW = 1_800_000_000.0


async def add_messages(
    pool: Pool,
    count: int,
    *,
    group: str = "g",
    priority: int = 2,
    due_at: float = NOW - 10,
    prefix: str = "m",
) -> list[str]:
    """`count` queued messages (ids prefix-00000…), due at `due_at`."""
    ids = [f"{prefix}-{i:06d}" for i in range(count)]
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO messages (id, priority, state, route_group, to_ct, to_index, body_ct,"
            " encoding, segments, created_at, updated_at, due_at, expires_at)"
            " SELECT i, %s, 'queued', %s, '\\x01', '\\x02', '\\x03', 'gsm7', 1, %s, %s, %s, %s"
            " FROM unnest(%s::text[]) i",
            (priority, group, NOW - 60, NOW - 60, due_at, NOW + 3600, ids),
        )
    return ids


async def rows(pool: Pool, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    async with pool.connection() as conn:
        return await (await conn.execute(sql, params)).fetchall()
