"""The writer's SQLite cost per accepted message row, and what each index adds to it.

    .venv/bin/python bench/insert_cost.py                       # the schema as it is
    .venv/bin/python bench/insert_cost.py --drop messages_to    # without one index
    .venv/bin/python bench/insert_cost.py --checkpoint 0        # no automatic checkpoint
    .venv/bin/python bench/insert_cost.py --short-key           # messages_to on an 8-byte key
    .venv/bin/python bench/insert_cost.py --savepoint           # the rows inside a savepoint
    .venv/bin/python bench/insert_cost.py --no-triggers         # without `messages`' triggers
    .venv/bin/python bench/insert_cost.py --group 8 --rows 20000 --synchronous OFF
                                                    # single accepts' groups, no fsync
    .venv/bin/python bench/insert_cost.py --multi-row           # as the writer inserts a batch

A fresh store (`gateway.store.schema.migrate`, the writer's own `connect`, so its page
size, WAL and `synchronous = FULL`, and the statement journals in memory as `Store.open`
sets them) gets `--rows` message rows in transactions of
`--group` (a batch request's group: 2,000 rows of two 500-message requests is the
writer's cap; 1,000 is what `bench/accept.py`'s batch load forms), each row the
statement `Store.insert_statements` gives, with the ciphertexts prepared once and the
recipient's blind index drawn from the load's 10,000 numbers (as `ceiling_server.py`
does). It prints this thread's CPU per row for the `executemany` (the B-trees: the
table and each index a row enters) and for the `COMMIT` (the WAL frames of every page
the transaction dirtied, their fsync, and the automatic checkpoint when one falls
due). The first fifth of the rows only fills the store and is not counted. Thread
CPU, not wall time: the figure barely moves with the machine's load. `--multi-row`: the
rows through `bulk_insert.insert_rows` (statements of 250 rows), as the writer inserts a
batch request's since session 35. `--savepoint`: each
group's rows inside a savepoint, as the writer ran a transaction's first step until
session 33 (and runs every later one): each insert fires a trigger, so it keeps a
statement journal, and SQLite walks the savepoint's in-memory journal at its end.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import ceiling_server

from gateway.models import new_message_id
from gateway.store.bulk_insert import insert_rows
from gateway.store.schema import migrate
from gateway.store.writer import connect


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=150_000)
    p.add_argument("--group", type=int, default=1_000, help="rows per transaction")
    p.add_argument("--drop", nargs="*", default=[], metavar="INDEX", help="indexes to drop")
    p.add_argument("--checkpoint", type=int, default=None, help="wal_autocheckpoint frames")
    p.add_argument("--savepoint", action="store_true", help="each group inside a savepoint")
    p.add_argument("--multi-row", action="store_true", help="rows in multi-row statements")
    p.add_argument(
        "--no-triggers",
        action="store_true",
        help="drop the triggers that fire on a message's insert (what they cost a row)",
    )
    p.add_argument(
        "--short-key",
        action="store_true",
        help="messages_to keyed by the blind index's first 8 bytes as an integer column",
    )
    p.add_argument(
        "--synchronous",
        choices=("FULL", "NORMAL", "OFF"),
        default="FULL",
        help="the store's (FULL, as the gateway; in WAL mode NORMAL and OFF sync no commit)",
    )
    return p.parse_args(argv)


def measure(args: argparse.Namespace, work: Path) -> dict[str, float]:
    db = work / "insert.db"
    conn = connect(db, args.synchronous)
    migrate(conn)
    conn.execute("PRAGMA temp_store = MEMORY")  # as `Store.open` sets it after migrating
    if args.checkpoint is not None:
        conn.execute(f"PRAGMA wal_autocheckpoint = {args.checkpoint}")
    for index in args.drop:
        conn.execute(f"DROP INDEX {index}")  # names from the command line, a bench only
    if args.no_triggers:
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'messages'"
            " AND sql LIKE '%AFTER INSERT ON messages%'"
        ).fetchall():
            conn.execute(f"DROP TRIGGER {name}")  # names from the schema, a bench only
    if args.short_key:
        # A narrower recipient key (an 8-byte integer, not the 16-byte blob): more keys
        # per page, the same random place per row. Readers would match `to_key` first.
        conn.execute("ALTER TABLE messages ADD COLUMN to_key INTEGER")
        conn.execute("DROP INDEX messages_to")
        conn.execute(
            "CREATE INDEX messages_to ON messages (to_key, purpose, uncounted, created_at, send_at)"
        )
    template = ceiling_server.row_template(db)
    groups = args.rows // args.group
    skip = groups // 5
    insert_s = commit_s = 0.0
    now = time.time()
    for g in range(groups):
        rows = [template.rows(new_message_id(), now + g)[0] for _ in range(args.group)]
        sql = rows[0][0]
        if args.short_key:
            sql = sql.replace(", uncounted)", ", uncounted, to_key)").replace("?)", "?,?)")
            rows = [
                (sql, (*params, int.from_bytes(params[5][:8], "big", signed=True)))
                for _, params in rows
            ]
        started = time.thread_time()
        conn.execute("BEGIN IMMEDIATE")
        if args.savepoint:
            conn.execute("SAVEPOINT grouped")
        if args.multi_row:
            insert_rows(conn, sql, [params for _, params in rows])
        else:
            conn.executemany(sql, [params for _, params in rows])
        if args.savepoint:
            conn.execute("RELEASE grouped")
        inserted = time.thread_time()
        conn.execute("COMMIT")
        committed = time.thread_time()
        if g >= skip:
            insert_s += inserted - started
            commit_s += committed - inserted
    conn.close()
    counted = (groups - skip) * args.group
    return {
        "insert_us": 1e6 * insert_s / counted,
        "commit_us": 1e6 * commit_s / counted,
        "per_commit_us": 1e6 * commit_s / (groups - skip),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="smsgw-insert-cost-"))
    try:
        found = measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    dropped = ", ".join(args.drop) or "none"
    if args.short_key:
        dropped += "; messages_to on an 8-byte key"
    if args.savepoint:
        dropped += "; inside a savepoint"
    if args.no_triggers:
        dropped += "; no insert triggers"
    if args.multi_row:
        dropped += "; multi-row statements"
    checkpoint = "default" if args.checkpoint is None else args.checkpoint
    print(
        f"dropped: {dropped}; checkpoint: {checkpoint}; synchronous {args.synchronous};"
        f" {args.group} rows a transaction; per row:"
        f" insert {found['insert_us']:.1f} us, commit {found['commit_us']:.1f} us,"
        f" together {found['insert_us'] + found['commit_us']:.1f} us;"
        f" per COMMIT {found['per_commit_us']:.1f} us"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
