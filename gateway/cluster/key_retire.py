"""Retiring older field key generations of the shared keyring, after a rotation.

Theory of operation. A rotation (`keyring.rotate`) adds generation N+1 and re-encrypts
every `SEALED` column under it, but a node that had not taken N+1 up yet may have
sealed a row under N meanwhile. So the retirement trusts no pass: it counts, in the
database, the ciphertexts of every older generation (the generation is in each
ciphertext's first three bytes, `crypto.generation_prefix`), and it asks every live
incarnation which generation it seals under (`nodes.key_generation`, which
`shared_keys.KeyringWatch` reports a heartbeat after taking a generation up, so a value
sealed just before has reached the database by then). Only when no ciphertext of an
older generation is left and every live incarnation seals under the current one
are the older wrapped keys deleted, with an audit entry each, in one transaction that
first holds every `SEALED` table in SHARE mode and counts again: a row written between
the first count and the deletion is seen, and the retirement refuses rather than leave
it unreadable. Writers wait for the length of that count (one scan of the encrypted
columns). Every node's keyring watcher then forgets the retired generations.

A node cut off from the database for the whole rotation and retirement (its lease
lapsed, so it was not waited for) still seals under the retired generation until its
first heartbeat back takes the keyring up. The same transaction that deletes the keys
records their generations in `retired_field_generations`, and every encrypted table's
trigger refuses a value sealed under one (`seal_guard.py`, which says why no write can
slip between the two): that node's accept fails, it takes the keyring up at once, and
the client's retry is sealed under the current generation.

It holds the rotation lock (`keyring.rotation_lock`): never during a rotation's pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from gateway.cluster import audit
from gateway.cluster.keyring import SEALED, rotation_lock
from gateway.store import crypto

RETIRED = "key_generation_retired"  # the audit action, as SQLite's `rekey.retire`


@dataclass(frozen=True, slots=True)
class Retirement:
    """What a retirement did, or why it refused."""

    retired: tuple[int, ...] = ()
    left: dict[int, int] = field(default_factory=dict)  # older generation: ciphertexts
    behind: tuple[str, ...] = ()  # "node-id/incarnation" not sealing under the current one
    contended: bool = False  # the tables' locks could not be had: try again

    @property
    def refused(self) -> bool:
        return bool(self.left or self.behind or self.contended)


def _counts_sql() -> str:
    head = (
        "SELECT substring({c} FROM 1 FOR 3) AS h, count(*) AS n FROM {t}"
        " WHERE {c} IS NOT NULL GROUP BY h"
    )
    parts = [head.format(c=c, t=s.table) for s in SEALED for c, _ in s.columns]
    return f"SELECT h, sum(n) FROM ({' UNION ALL '.join(parts)}) AS c GROUP BY h"  # noqa: S608 - fixed names


COUNTS_SQL = _counts_sql()
LOCK_SQL = f"LOCK TABLE {', '.join(dict.fromkeys(s.table for s in SEALED))} IN SHARE MODE"
LOCK_TIMEOUT = "SET LOCAL lock_timeout = '5s'"  # a long writer: give up, not stall accepts


async def generation_counts(conn: AsyncConnection[TupleRow]) -> dict[int, int]:
    """Ciphertexts per field key generation over every `SEALED` column (a full scan)."""
    counts: dict[int, int] = {}
    for head, n in await (await conn.execute(COUNTS_SQL.encode())).fetchall():
        gen = crypto.header_generation(bytes(head) + bytes(crypto.NONCE_BYTES + 16))
        if gen is not None:
            counts[gen] = counts.get(gen, 0) + int(n)
    return counts


async def field_generations(conn: AsyncConnection[TupleRow]) -> list[tuple[int, float]]:
    """(generation, created_at) of every field key, oldest first."""
    cur = await conn.execute(
        "SELECT generation, created_at FROM keyring WHERE purpose = 'field' ORDER BY 1"
    )
    return [(int(g), float(t)) for g, t in await cur.fetchall()]


async def nodes_behind(conn: AsyncConnection[TupleRow], current: int) -> tuple[str, ...]:
    """The live incarnations (lease running) that have not said they seal under
    `current`. A lapsed one is not waited for: it may be gone for good (or be `store
    migrate`'s, which never ran)."""
    cur = await conn.execute(
        "SELECT node_id || '/' || incarnation FROM nodes WHERE recovered_at IS NULL"
        " AND lease_until > clock_timestamp()"
        " AND (key_generation IS NULL OR key_generation < %s) ORDER BY incarnation",
        (current,),
    )
    return tuple(str(r[0]) for r in await cur.fetchall())


async def _refusal(conn: AsyncConnection[TupleRow], current: int) -> Retirement | None:
    behind = await nodes_behind(conn, current)
    counts = await generation_counts(conn)
    left = {g: n for g, n in counts.items() if g < current and n}
    return Retirement(left=left, behind=behind) if left or behind else None


async def retire(
    conn: AsyncConnection[TupleRow], audit_key: bytes, node_id: str, actor: str, now: float
) -> Retirement:
    """Delete every field key generation older than the current one if no ciphertext is
    left under it and every incarnation seals under the current one; each retirement is
    audited in `node_id`'s chain. `keyring.RotationBusy` while a rotation runs."""
    async with rotation_lock(conn):
        generations = [g for g, _ in await field_generations(conn)]
        current = max(generations, default=0)
        older = [g for g in generations if g < current]
        if not older:
            return Retirement()
        refused = await _refusal(conn, current)  # without locks: writers go on
        if refused is not None:
            return refused
        try:
            async with conn.transaction():
                await conn.execute(LOCK_TIMEOUT)
                await conn.execute(LOCK_SQL.encode())
                refused = await _refusal(conn, current)  # what was written meanwhile
                if refused is not None:
                    return refused
                await conn.execute(
                    "DELETE FROM keyring WHERE purpose = 'field' AND generation = ANY(%s)",
                    (older,),
                )
                async with conn.cursor() as cur:  # what the writers' guard refuses from now
                    await cur.executemany(
                        "INSERT INTO retired_field_generations (generation, prefix) VALUES (%s, %s)"
                        " ON CONFLICT DO NOTHING",
                        [(g, crypto.generation_prefix(g)) for g in older],
                    )
                for g in older:
                    await audit.append(
                        conn, audit_key, node_id, now, actor, RETIRED, "key", f"field:{g}",
                        generation=g, current=current,
                    )  # fmt: skip
        except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected):
            return Retirement(contended=True)
        return Retirement(retired=tuple(older))
