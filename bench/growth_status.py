"""CPU of the message list's `status` filter with a time range on a built growth store.

    .venv/bin/python bench/growth_status.py /dev/shm/smsgw-growth-5m --order id    # main's SQL
    .venv/bin/python bench/growth_status.py /dev/shm/smsgw-growth-5m --order time  # this one

DIR is the `--dir` of `bench/growth.py` (its `growth.json` gives the build's clock).
`--order id` is the SQL of a checkout whose index by state is `(state, id)`; `--order
time` that of migration 36's `(state, created_at)`: run each on the store with its own
index. Thread CPU per query (read-only connection, no decryption), the rows and the plan.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time
from pathlib import Path

COLUMNS = (
    "id, token_id, state, priority, to_ct, body_ct, reference_ct, encoding, segments,"
    " route_hint, route, category, created_at, updated_at, send_at, expires_at, attempts,"
    " possible_duplicate, error_code, receipt_overdue, purpose"
)
DAY = 86400.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--order", choices=("id", "time"), required=True)
    args = parser.parse_args()
    now = json.loads((args.dir / "growth.json").read_text())["now"]
    conn = sqlite3.connect(f"file:{args.dir / 'gw' / 'smsgw.db'}?mode=ro", uri=True)
    old = (now - 183 * DAY, now - 182 * DAY)  # one day six months ago
    cases: dict[str, tuple[str, float | None, float | None]] = {
        "delivered, a day 6 months ago": ("delivered", *old),
        "failed, a day 6 months ago": ("failed", *old),
        "expired, a day 6 months ago": ("expired", *old),
        "delivered, since a week ago": ("delivered", now - 7 * DAY, None),
        "failed, no range": ("failed", None, None),
    }
    by = " ORDER BY id DESC" if args.order == "id" else " ORDER BY created_at DESC, id DESC"
    result = {}
    for name, (state, since, until) in cases.items():
        where = ["state = ?"]
        values: list[object] = [state]
        if since is not None:
            where.append("created_at >= ?")
            values.append(since)
        if until is not None:
            where.append("created_at < ?")
            values.append(until)
        sql = f"SELECT {COLUMNS} FROM messages WHERE {' AND '.join(where)}{by} LIMIT 51"  # noqa: S608 - fixed text
        plan = " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, values))
        conn.execute(sql, values).fetchall()  # warm the cache
        calls, t0 = 0, time.thread_time()
        while calls < 3 or (time.thread_time() - t0 < 1.0 and calls < 50):
            rows = conn.execute(sql, values).fetchall()
            calls += 1
        ms = (time.thread_time() - t0) / calls * 1000
        result[name] = round(ms, 2)
        print(f"{name:32} {ms:9.2f} ms CPU  {len(rows)} rows  [{plan}]", flush=True)
    print(json.dumps({"bench": "growth_status", "order": args.order, "cpu_ms": result}))


if __name__ == "__main__":
    main()
