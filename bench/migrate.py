"""SQLite → PostgreSQL migration of 100,000 messages in every state (issue 18, S10).

    .venv/bin/python bench/migrate.py                 # 100,000 messages (make bench-migrate)
    .venv/bin/python bench/migrate.py --messages 20000

1. Build a store through the store's own code (`tests/pg/migrate_source.py`: `smsgw
   init`, `Store.seal`, blind indexes, two field key generations, events, carrier ids,
   consent decisions, audit entries): messages by turn in each of the nine states.
2. Start a throwaway PostgreSQL (`tests/pg_server.py`, Debian's, fsync on) and run the
   real command, `smsgw store migrate --to … --node-id bench`, as a child process:
   wall time, the child's CPU (utime + stime; the server's backends exit with their
   connection, so theirs is not counted), rows copied per second, exit code (0 =
   verified).
3. The peer, in the same run: the same rows of the four big tables `COPY`ed into a fresh
   database by one bare loop (no schema checks, no verification, one transaction per
   table): the copy ceiling. Ratio = migration rows/s ÷ ceiling rows/s.
Ends with one JSON line (also `bench/results/migrate-latest.json`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness

# The repository instead of bench/ first: bench/hl7.py would hide the hl7 package.
sys.path.remove(str(harness.BENCH_DIR))
sys.path.insert(0, str(harness.REPO))
import psycopg

from gateway.cluster.schema import migrate as apply_schema
from tests.pg.migrate_source import fill, init
from tests.pg_server import PgServer, find_bindir

LATEST = harness.BENCH_DIR / "results" / "migrate-latest.json"
TABLES = ("messages", "message_events", "carrier_ids", "audit_log")


def rows(db: Path) -> int:
    src = sqlite3.connect(db)
    try:
        return sum(src.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES)  # noqa: S608
    finally:
        src.close()


async def ceiling(db: Path, dsn: str) -> float:
    """Seconds for a bare COPY of the big tables' rows into the cluster schema."""
    src = sqlite3.connect(db)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await apply_schema(conn)
        await conn.execute("ALTER TABLE messages ALTER COLUMN route_group SET DEFAULT 'g'")
        t0 = time.perf_counter()
        for table in TABLES:
            cols = [r[1] for r in src.execute(f"PRAGMA table_info({table})")]
            extra = ["node_id"] if table == "audit_log" else []
            flags = {"possible_duplicate", "receipt_overdue", "quiet_override", "redacted",
                     "uncounted"}  # fmt: skip
            async with (
                conn.transaction(),
                conn.cursor().copy(f"COPY {table} ({', '.join(cols + extra)}) FROM STDIN") as copy,
            ):
                for row in src.execute(f"SELECT {', '.join(cols)} FROM {table}"):  # noqa: S608
                    values = [bool(v) if c in flags else v for c, v in zip(cols, row, strict=True)]
                    await copy.write_row(values + ["bench"] * len(extra))
        return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=100_000)
    args = ap.parse_args()
    bindir = find_bindir()
    if bindir is None:
        print("PostgreSQL is not installed (make peers installs it)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="smsgw-bench-migrate-"))
    t0 = time.perf_counter()
    source = init(tmp / "data")
    asyncio.run(fill(source, args.messages))
    build_s = time.perf_counter() - t0
    total_rows = rows(source.db_path)
    print(f"built {args.messages} messages ({total_rows} rows) in {build_s:.1f} s", flush=True)
    server = PgServer(bindir)
    server.start()
    try:
        target = server.create_database()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t1 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "store", "migrate", "--config",
             str(source.conf), "--to", target, "--node-id", "bench"],
            capture_output=True, text=True, check=False, cwd=harness.REPO,
        )  # fmt: skip
        wall = time.perf_counter() - t1
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        child_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        print(done.stdout[-1500:], flush=True)
        peer_s = asyncio.run(ceiling(source.db_path, server.create_database()))
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "bench": "migrate",
        "messages": args.messages,
        "rows": total_rows,
        "exit_code": done.returncode,
        "build_s": round(build_s, 1),
        "migrate_s": round(wall, 2),
        "rows_per_s": round(total_rows / wall),
        "migrate_cpu_s": round(child_cpu, 2),
        "ceiling_copy_s": round(peer_s, 2),
        "ceiling_rows_per_s": round(total_rows / peer_s),
        "ratio_to_ceiling": round(peer_s / wall, 3),
        "load_avg_1m": os.getloadavg()[0],
    }
    print(
        f"migration: {total_rows} rows in {wall:.1f} s = {result['rows_per_s']} rows/s"
        f" (command CPU {child_cpu:.1f} s, verification"
        f" included); bare COPY ceiling {peer_s:.1f} s; ratio {result['ratio_to_ceiling']}"
    )
    LATEST.parent.mkdir(exist_ok=True)
    LATEST.write_text(json.dumps(result) + "\n")
    print(json.dumps(result))
    return 0 if done.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
