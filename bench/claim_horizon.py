"""S9's cause measured without a soak: what the claim's statements read with xmin held.

    .venv/bin/python bench/claim_horizon.py                  # 120,000 sent (S9's 10 minutes)
    .venv/bin/python bench/claim_horizon.py --churn 30000

A throwaway PostgreSQL (`tests/pg_server.py`), the cluster schema, one node, a REPEATABLE
READ transaction holding the horizon; then `--churn` messages each accepted, claimed by
id (`CLAIM_IDS`) and finished `sent` (`outcomes.finish`) in batches, as a node's scheduler
sends them. Then 50 fresh messages, `ANALYZE`, and each statement of the claim's path
(and, for reference, the claim by query, from the start and from a floor, and adoption's
statement) run once under `EXPLAIN
(ANALYZE, BUFFERS)`, rolled back: its time, its shared buffers (those its scans of
`messages` read, and in all: an update's index upkeep too) and the indexes it used,
as written now and with the plain `state = '...'` test `by_key.state_is` replaced (the
code before it). Buffers do not depend on the machine's load; milliseconds do. One JSON
line, also `bench/results/claim-horizon-latest.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.cluster import adoption, claim_floor, claims, nodes, outcomes, queue_sql
from gateway.cluster.by_key import state_is
from gateway.cluster.consent_claim import SUBJECTS_SQL
from gateway.cluster.schema import migrate
from gateway.models import State
from tests.pg_server import PgServer, find_bindir

NOW = 1_800_000_000.0
BATCH = 200
FRESH = 50
LATEST = Path(__file__).parent / "results" / "claim-horizon-latest.json"
_INSERT = (
    "INSERT INTO messages (id, priority, state, route_group, to_ct, to_index, body_ct,"
    " encoding, segments, created_at, updated_at, due_at, expires_at, held_by)"
    " SELECT i, 2, 'queued', 'g', '\\x01', '\\x02', '\\x03', 'gsm7', 1, %s, %s, %s, %s, %s"
    " FROM unnest(%s::text[]) i"
)


def plain(sql: str) -> str:
    for state in State:
        sql = sql.replace(state_is(state), f"state = '{state.value}'")
    return sql


SCANS = {"Index Scan", "Index Only Scan", "Bitmap Heap Scan", "Seq Scan"}


def scanned(plan: dict[str, Any]) -> int:
    """Shared buffers the plan's scans of `messages` touched (not the index upkeep)."""
    own = 0
    if plan.get("Relation Name") == "messages" and plan["Node Type"] in SCANS:
        own = plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]
    return own + sum(scanned(child) for child in plan.get("Plans", []))


def indexes(plan: dict[str, Any]) -> list[str]:
    own = [plan["Index Name"]] if "Index Name" in plan else []
    return own + [i for child in plan.get("Plans", []) for i in indexes(child)]


async def measure(
    conn: psycopg.AsyncConnection[Any], sql: str, params: Any, setup: str | None = None
) -> dict[str, Any]:
    async with conn.transaction(force_rollback=True):
        if setup is not None:
            await conn.execute(setup)
        cur = await conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params)
        row = await cur.fetchone()
    assert row is not None
    plan = row[0][0]
    top = plan["Plan"]
    return {
        "ms": round(plan["Execution Time"], 2),
        "buffers": top["Shared Hit Blocks"] + top["Shared Read Blocks"],
        "scan_buffers": scanned(top),
        "indexes": sorted(set(indexes(top))),
    }


async def churn(conn: psycopg.AsyncConnection[Any], me: nodes.Incarnation, total: int) -> None:
    for b in range(total // BATCH):
        ids = [f"m-{b:06d}-{i:03d}" for i in range(BATCH)]
        now = NOW + b * BATCH / 200  # 200 a second, as S9
        async with conn.transaction():
            await conn.execute(_INSERT, (now, now, now, now + 86400, me.incarnation, ids))
        async with conn.transaction():
            await nodes.lock_live(conn, me)
            claim = {"ids": ids, "route": "r", "now": now, "node": "a", "inc": me.incarnation}
            await conn.execute(queue_sql.CLAIM_IDS, claim)
        sent = [outcomes.Outcome(i, 1, State.SENT, "r", (f"c{i}",)) for i in ids]
        await outcomes.finish(conn, me, sent, now)


async def run(total: int) -> dict[str, Any]:
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("no PostgreSQL (make peers)")
    server = PgServer(bindir)
    server.start()
    try:
        dsn = server.create_database()
        async with (
            await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn,
            await psycopg.AsyncConnection.connect(dsn) as report,
        ):
            await migrate(conn)
            me = await nodes.register(conn, "a", 3600)
            await report.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            await report.execute("SELECT count(*) FROM messages")  # the horizon is held
            started = time.perf_counter()
            await churn(conn, me, total)
            churn_s = time.perf_counter() - started
            now = NOW + total / 200 + 1
            ids = [f"n-{i:03d}" for i in range(FRESH)]
            await conn.execute(_INSERT, (now, now, now, now + 86400, me.incarnation, ids))
            await conn.execute("ANALYZE messages")
            p = {"ids": ids, "route": "r", "now": now, "node": "a", "inc": me.incarnation,
                 "n": FRESH, "group": "g", "stamp": None, "before": now + 1, "gone": [],
                 "any": True, "groups": [], "prios": [], "numbers": False,
                 "drained": []}  # fmt: skip
            statements: dict[str, tuple[str, Any]] = {
                "lock_live": ("SELECT 1 FROM nodes WHERE incarnation = %(inc)s AND node_id ="
                              " %(node)s AND lease_until > clock_timestamp() FOR KEY SHARE", p),
                "opted_out_rows": (queue_sql.OPTED_OUT_ROWS, p),
                "consent_subjects": (SUBJECTS_SQL, (ids,)),
                "claim_ids": (queue_sql.CLAIM_IDS, p),
                "by_query claim_sql": (claims.CLAIM_SQL, p),
                "by_query due_count": (claims.DUE_COUNT_SQL, p),
                "by_query claim_due": (queue_sql.CLAIM_DUE, p),
                "adoption sweep (the poll before)": (adoption._HOLDERS, p),
                "adoption poll": (adoption._DEAD, p),
            }  # fmt: skip
            out: dict[str, Any] = {}
            for name, (sql, params) in statements.items():
                out[name] = {"now": await measure(conn, sql, params)}
                if plain(sql) != sql:
                    out[name]["plain"] = await measure(conn, plain(sql), params)
            # The claim by query of a class from its floor (`claim_floor.py`), as a node
            # keeping floors reads it: from a second before the fresh rows.
            floored = {**p, "prio": 2, "floor": now - claim_floor.SLACK}
            out["by_query from floor"] = {
                "now": await measure(conn, claims.CLAIM_FROM_FLOOR_SQL, floored, claims.SORT_OFF)
            }
            await conn.execute(queue_sql.CLAIM_IDS, p)  # the fresh ones `sending`
            n = FRESH
            done = {**p, "epochs": [1] * n, "states": ["sent"] * n, "routes": ["r"] * n,
                    "codes": [None] * n, "dues": [None] * n, "attempts": [1] * n,
                    "dups": [False] * n, "part_ids": ids, "part_cids": ids,
                    "part_nos": [0] * n, "code": "x"}  # fmt: skip
            for name, sql in (
                ("finish", outcomes.FINISH_SQL),
                ("give_back", queue_sql.GIVE_BACK_SQL),
            ):
                out[name] = {"now": await measure(conn, sql, done),
                             "plain": await measure(conn, plain(sql), done)}  # fmt: skip
    finally:
        server.stop()
    return {"bench": "claim_horizon", "churn": total, "churn_seconds": round(churn_s, 1),
            "fresh": FRESH, "statements": out}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--churn", type=int, default=120_000, help="messages sent while held")
    args = parser.parse_args()
    result = asyncio.run(run(args.churn))
    for name, runs in result["statements"].items():
        line = "  ".join(
            f"{k}: {v['ms']} ms {v['scan_buffers']}/{v['buffers']} buf {v['indexes']}"
            for k, v in runs.items()
        )
        print(f"{name:20} {line}")
    LATEST.parent.mkdir(exist_ok=True)
    LATEST.write_text(json.dumps(result) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
