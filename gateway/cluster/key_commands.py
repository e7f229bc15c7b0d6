"""`smsgw keys status|retire --postgresql`, and the retirement that ends `keys rotate
--postgresql`: what SQLite's `keys.*` ops say and do, on the shared keyring.

After a rotation's pass the older generations are retired (`key_retire.py`) once every
running node seals under the new one: each takes it up at a heartbeat and says so at
the next, so the console waits for them, up to `wait` seconds. Rows a node sealed under
an older generation meanwhile are re-encrypted by another pass, then it tries again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from gateway.cluster import key_retire, keyring
from gateway.cluster.key_retire import Retirement

RETIRE_WAIT = 60.0  # seconds the console waits for the nodes to take a rotation up
POLL = 0.5  # seconds between two tries meanwhile
PASSES = 3  # re-encryption passes at most, for rows sealed under an older key meanwhile

Out = Callable[[str], None]


async def retire_older(
    conn: AsyncConnection[TupleRow],
    master: bytes,
    audit_key: bytes,
    node_id: str,
    actor: str,
    now: Callable[[], float],
    out: Out,
    wait: float = RETIRE_WAIT,
) -> int:
    """Retire every older field generation; exit code 0 done (or none to retire), 1 some
    left (said why: nodes behind, or ciphertexts the passes did not take)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    passes = 0
    while True:
        done = await key_retire.retire(conn, audit_key, node_id, actor, now())
        if not done.refused:
            if done.retired:
                out(f"older field key generations retired: {_gens(done.retired)}")
            return 0
        if done.left and not done.behind and passes < PASSES:
            passes += 1
            again = await keyring.reencrypt(conn, master)
            out(f"{again} rows written under an older key meanwhile, re-encrypted")
            continue
        if loop.time() >= deadline or (done.left and not done.behind):
            _say_refused(done, out)
            return 1
        await asyncio.sleep(POLL)


def _say_refused(done: Retirement, out: Out) -> None:
    if done.behind:
        out(
            "older generations kept: not every node seals under the current key yet"
            f" ({', '.join(done.behind)}); run `smsgw keys retire --postgresql` again later"
        )
    if done.left:
        out(f"older generations kept: ciphertexts left under them ({_per_gen(done.left)})")
    if done.contended:
        out("older generations kept: writers held the tables; run `smsgw keys retire` again")


async def status(conn: AsyncConnection[TupleRow], out: Out) -> int:
    """The shared keyring's generations with their ciphertexts, and what each node seals
    under (SQLite's `keys status`)."""
    generations = await key_retire.field_generations(conn)
    if not generations:
        out("the shared keyring is empty: no node has started and no store was migrated")
        return 1
    counts = await key_retire.generation_counts(conn)
    current = max(g for g, _ in generations)
    out(f"{'GENERATION':<11} {'CREATED (UTC)':<20} {'STATE':<8} CIPHERTEXTS")
    for generation, created in generations:
        stamp = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%d %H:%M:%S")
        state = "current" if generation == current else "older"
        out(f"{generation:<11} {stamp:<20} {state:<8} {counts.get(generation, 0)}")
    cur = await conn.execute(
        "SELECT node_id, incarnation, key_generation FROM nodes"
        " WHERE recovered_at IS NULL ORDER BY node_id, incarnation"
    )
    for node_id, incarnation, generation in await cur.fetchall():
        said = "not reported yet" if generation is None else f"generation {generation}"
        out(f"node {node_id} (incarnation {incarnation}): seals under {said}")
    gone = sorted(g for g in counts if g not in {g for g, _ in generations})
    if gone:
        out(f"UNREADABLE: ciphertexts under retired generations {_gens(gone)}")
        return 1
    out("blind index key: generation 1 (not rotated: see docs/ops/keys.md)")
    return 0


def _gens(generations: tuple[int, ...] | list[int]) -> str:
    return ", ".join(str(g) for g in generations)


def _per_gen(counts: dict[int, int]) -> str:
    return ", ".join(f"generation {g}: {n}" for g, n in sorted(counts.items()))
