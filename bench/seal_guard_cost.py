"""What the retired-key guard (`gateway/cluster/seal_guard.py`) costs an accept.

    .venv/bin/python bench/seal_guard_cost.py            # 2,000 accepts each way

A throwaway PostgreSQL (`tests/pg_server.py`) with the cluster schema; then messages with
their four sealed columns inserted one per transaction (as an accept of one message),
alternately with the guard's trigger enabled and disabled, in rounds of 100, so the
machine's load falls on both alike; and once, 10,000 rows in one statement under
`EXPLAIN ANALYZE`, whose trigger line gives the trigger's own time per row. One JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.cluster.schema import migrate
from gateway.store import crypto
from tests.pg_server import PgServer, find_bindir

ROUND = 100
_INSERT = (
    "INSERT INTO messages (id, priority, state, route_group, to_ct, to_index, body_ct,"
    " reference_ct, callback_ct, encoding, segments, created_at, updated_at, due_at,"
    " expires_at) VALUES (%s, 2, 'queued', 'g', %s, %s, %s, %s, %s, 'gsm7', 1, 0, 0, 0, 1)"
)
_TOGGLE = "ALTER TABLE messages {} TRIGGER messages_sealed_generation"


async def accepts(conn: psycopg.AsyncConnection[Any], prefix: str, blobs: list[bytes]) -> float:
    """Seconds for ROUND one-row accepts, each its own transaction."""
    started = time.perf_counter()
    for i in range(ROUND):
        async with conn.transaction():
            await conn.execute(_INSERT, (f"{prefix}-{i}", blobs[0], b"i", *blobs[1:]))
    return time.perf_counter() - started


async def run(total: int) -> dict[str, Any]:
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("no PostgreSQL (make peers)")
    server = PgServer(bindir)
    server.start()
    try:
        dsn = server.create_database()
        cipher = crypto.FieldCipher({1: os.urandom(32)}, os.urandom(32))
        blobs = [cipher.encrypt("x" * 40, "m", c) for c in ("to", "body", "ref", "cb")]
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await migrate(conn)
            # One retired generation in the table, as after a rotation.
            await conn.execute(
                "INSERT INTO retired_field_generations (generation, prefix) VALUES (9, %s)",
                (crypto.generation_prefix(9),),
            )
            times: dict[str, list[float]] = {"guarded": [], "unguarded": []}
            for r in range(total // ROUND):
                for name, toggle in (("guarded", "ENABLE"), ("unguarded", "DISABLE")):
                    await conn.execute(_TOGGLE.format(toggle).encode())
                    times[name].append(await accepts(conn, f"{name}-{r}", blobs))
            await conn.execute(_TOGGLE.format("ENABLE").encode())
            cur = await conn.execute(
                "EXPLAIN (ANALYZE, FORMAT JSON) INSERT INTO messages (id, priority, state,"
                " route_group, to_ct, to_index, body_ct, reference_ct, callback_ct, encoding,"
                " segments, created_at, updated_at, due_at, expires_at)"
                " SELECT 'bulk-' || i, 2, 'queued', 'g', %s, 'i', %s, %s, %s, 'gsm7', 1,"
                " 0, 0, 0, 1 FROM generate_series(1, 10000) i",
                tuple(blobs),
            )
            row = await cur.fetchone()
            assert row is not None
            trigger = row[0][0]["Triggers"][0]
    finally:
        server.stop()
    per = {k: [t / ROUND * 1000 for t in v] for k, v in times.items()}
    return {
        "bench": "seal_guard_cost",
        "accepts_each": total,
        "accept_ms_median": {k: round(statistics.median(v), 3) for k, v in per.items()},
        "trigger": trigger["Trigger Name"],
        "trigger_us_per_row": round(trigger["Time"] / trigger["Calls"] * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accepts", type=int, default=2000, help="accepts each way")
    print(json.dumps(asyncio.run(run(parser.parse_args().accepts))))


if __name__ == "__main__":
    main()
