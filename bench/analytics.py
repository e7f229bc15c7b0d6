"""Analytics over a year: the rollup's rate, then the Analytics page and API over a
year of sums (issue 15, point 10).

    .venv/bin/python bench/analytics.py              # 30 days x 10,000 messages of raw
                                                     # events, sums spread to a year
    .venv/bin/python bench/analytics.py --quick      # 7 days x 2,000; 50 requests each
    .venv/bin/python bench/analytics.py --days 365   # a whole year of raw events
                                                     # (3.65 M messages; long)

1. `smsgw init` makes a store; synthetic raw rows go straight into its tables (the
   bench's own SQL: ciphertext columns hold a placeholder, as the analytics never read
   them): per day `--per-day` messages over 2 routes, 5 purposes, 10 clinics, 3
   campaigns a month with 2 variants each; 90% sent and delivered (latency 2 s to 20
   min), 4% failed, 6% blocked at accept (3 reasons); 3% answered (confirm, cancel,
   other), 0.5% opted out by STOP (2 ledger rows each, as the keywords write them), 2%
   clicked (plus bot hits).
2. The rollup (`gateway.analytics.rollup.catch_up_on`, the same SQL and counting the
   gateway's task runs, here on one connection) folds them all: rows/s.
3. With fewer than 365 days of raw events the sums of those days are copied forward
   day by day (campaign keys renamed per copy, as campaigns come and go) until a year
   is covered: the page reads sums only, so this is the year it would read.
4. `smsgw run` on that store; a viewer signs in; `--requests` GETs of
   `/analytics` over the whole year, and of `/api/v1/analytics/summary`, `/campaigns`
   and `/timeseries`: p50 and p99 ms (target: the page p99 < 1,000 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import harness

sys.path.insert(0, str(harness.REPO))
from gateway.analytics.days import LocalDays
from gateway.analytics.rollup import catch_up_on

LATEST = harness.BENCH_DIR / "results" / "analytics-latest.json"
TARGET_PAGE_P99_MS = 1000.0
VIEWER = ("bench-viewer", "Seven quiet herons over the estuary")
PURPOSES = ("appointment", "informational", "marketing", "results", "medication")
REASONS = ("no_consent", "quiet_hours", "frequency_cap")
CLINICS = tuple(f"clinic-{n:02d}" for n in range(10))
CONTACTS = 5000


def fill(db: Path, days: int, per_day: int, end: float, seed: int = 15) -> int:
    """Raw rows for `days` days before `end`; the messages written."""
    rnd = random.Random(seed)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO contacts (idx, number_ct, created_at, updated_at, clinic)"
        " VALUES (?, x'00', 0, 0, ?)",
        [(f"p{n}".encode(), CLINICS[n % len(CLINICS)]) for n in range(CONTACTS)],
    )
    messages: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    inbound: list[tuple[Any, ...]] = []
    replies: list[tuple[Any, ...]] = []
    ledger: list[tuple[Any, ...]] = []
    clicks: list[tuple[Any, ...]] = []
    start = end - days * 86400
    n = 0
    for day in range(days):
        month = day // 30
        for _ in range(per_day):
            n += 1
            at = start + day * 86400 + rnd.random() * 86000
            person = rnd.randrange(CONTACTS)
            campaign = f"cmp_{month:02d}_{rnd.randrange(3)}" if rnd.random() < 0.4 else None
            variant = rnd.choice("AB") if campaign else None
            purpose = "marketing" if campaign else rnd.choice(PURPOSES)
            route = "smsc" if rnd.random() < 0.7 else "modems"
            mid = f"m{n:08d}"
            fate = rnd.random()
            state = "blocked" if fate < 0.06 else "failed" if fate < 0.10 else "delivered"
            error = rnd.choice(REASONS) if state == "blocked" else None
            messages.append((mid, state, f"p{person}".encode(), rnd.choice((1, 1, 2)),
                             None if state == "blocked" else route, at, at, at + 86400, at,
                             error, purpose, campaign, variant))  # fmt: skip
            if state == "blocked":
                continue
            sent = at + 0.2
            events += [(mid, at + 0.1, "sending", route), (mid, sent, "sent", route)]
            done = sent + rnd.choice((2, 5, 20, 60, 300, 1200))
            events.append((mid, done, state, None))
            if rnd.random() < 0.03:
                iid = f"i{n:08d}"
                reply_at = done + 600
                inbound.append((iid, f"p{person}".encode(), reply_at))
                intent = rnd.choice(("confirm", "cancel", "unclear"))
                replies.append((f"r{n:08d}", iid, f"p{person}".encode(), intent, reply_at))
            elif rnd.random() < 0.005:
                iid = f"i{n:08d}"
                inbound.append((iid, f"p{person}".encode(), done + 60))
                for scope in ("all", "kind:marketing"):
                    ledger.append((f"l{n:08d}{scope}", f"p{person}".encode(), done + 60,
                                   scope, iid, mid))  # fmt: skip
            if rnd.random() < 0.02:
                clicks += [(mid, done + 30, 0, "preview"), (mid, done + 90, 1, "browser")]
    conn.executemany(
        "INSERT INTO messages (id, priority, state, to_ct, to_index, body_ct, encoding,"
        " segments, route, created_at, updated_at, expires_at, due_at, error_code, purpose,"
        " campaign_id, variant) VALUES (?, 3, ?, x'00', ?, x'00', 'gsm7', ?, ?, ?, ?, ?, ?,"
        " ?, ?, ?, ?)",
        [(m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7], m[8], m[9], m[10], m[11], m[12])
         for m in messages],
    )  # fmt: skip
    events.sort(key=lambda e: e[1])  # committed in time order, as a live gateway does
    conn.executemany(
        "INSERT INTO message_events (message_id, at, state, route) VALUES (?, ?, ?, ?)", events
    )
    conn.executemany(
        "INSERT INTO inbound (id, route, sender_ct, sender_index, body_ct, received_at, seq)"
        " VALUES (?, 'smsc', x'00', ?, x'00', ?, NULL)",
        sorted(inbound, key=lambda i: i[2]),
    )
    conn.execute(
        "UPDATE inbound SET seq = r.n FROM (SELECT id, row_number() OVER"
        " (ORDER BY received_at, id) AS n FROM inbound) AS r WHERE inbound.id = r.id"
    )
    conn.executemany(
        "INSERT INTO appointment_replies (id, inbound_id, contact_idx, intent, outcome, state,"
        " created_at) VALUES (?, ?, ?, ?, 'done', 'done', ?)",
        replies,
    )
    conn.executemany(
        "INSERT INTO consent_ledger (id, contact_idx, at, decision, scope, program, source,"
        " inbound_id, message_id) VALUES (?, ?, ?, 'opt_out', ?, 'default', 'keyword', ?, ?)",
        sorted(ledger, key=lambda x: x[2]),
    )
    conn.executemany(
        "INSERT INTO link_clicks (link_id, message_id, at, human, agent_class)"
        " VALUES ('lnk', ?, ?, ?, ?)",
        sorted(clicks, key=lambda c: c[1]),
    )
    conn.execute("COMMIT")
    conn.close()
    return n


def spread_to_a_year(db: Path, days: int, end_day: str) -> int:
    """Copy the sums of the last `days` days backwards until 365 days are covered; the
    rows of sums a year then holds."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN")
    last = datetime.fromisoformat(end_day).date()
    for table in ("analytics_daily", "analytics_blocked"):
        rows = conn.execute(f"SELECT * FROM {table}").fetchall()  # noqa: S608 - fixed names
        marks = ", ".join("?" * len(rows[0])) if rows else ""
        for shift in range(days, 365, days):
            moved = []
            for dim, day, key, *rest in rows:
                when = datetime.fromisoformat(day).date() - timedelta(days=shift)
                if (last - when).days < 365:
                    renamed = f"{key}.{shift // days}" if dim in ("campaign", "template") else key
                    moved.append((dim, when.isoformat(), renamed, *rest))
            conn.executemany(f"INSERT OR IGNORE INTO {table} VALUES ({marks})", moved)  # noqa: S608
    conn.execute("COMMIT")
    total = conn.execute(
        "SELECT (SELECT count(*) FROM analytics_daily) + (SELECT count(*) FROM analytics_blocked)"
    ).fetchone()[0]
    conn.close()
    return int(total)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


async def _timed(session: aiohttp.ClientSession, url: str, n: int, **kw: Any) -> dict[str, float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        async with session.get(url, **kw) as r:
            await r.read()
            assert r.status == 200, (url, r.status)
        times.append((time.perf_counter() - t0) * 1000)
    return {"p50_ms": round(statistics.median(times), 1), "p99_ms": _pct(times, 0.99)}


async def _sign_in(session: aiohttp.ClientSession, url: str) -> None:
    page = await (await session.get(url + "/login")).text()
    token = re.search(r'name="csrf-token" content="([^"]*)"', page)
    assert token is not None
    r = await session.post(
        url + "/login",
        data={"username": VIEWER[0], "password": VIEWER[1], "csrf": token[1]},
        headers={"Origin": url},
        allow_redirects=False,
    )
    assert r.status in (302, 303), r.status


async def main(args: argparse.Namespace, root: Path) -> int:
    home = await harness.init_gateway(root / "gw")
    zone = ZoneInfo("UTC")
    end = time.time()
    print(f"filling {args.days} days x {args.per_day} messages ...", flush=True)
    t0 = time.perf_counter()
    made = fill(home.db_path, args.days, args.per_day, end)
    print(f"filled {made} messages in {time.perf_counter() - t0:.1f} s", flush=True)
    conn = sqlite3.connect(home.db_path, isolation_level=None)
    t0 = time.perf_counter()
    folded = catch_up_on(conn, LocalDays(zone), end + 60)
    rollup_s = time.perf_counter() - t0
    conn.close()
    print(f"rollup: {folded} rows in {rollup_s:.1f} s", flush=True)
    end_day = datetime.fromtimestamp(end, UTC).date().isoformat()
    sums = spread_to_a_year(home.db_path, args.days, end_day)
    first = (datetime.fromisoformat(end_day).date() - timedelta(days=364)).isoformat()
    pinning = harness.setup_pinning()
    server = harness.gateway_server(home, harness.RouteSpec(rate=None), pinning, "analytics")
    secret = root / "viewer.password"
    secret.write_text(VIEWER[1] + "\n")
    await server.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "user", "add", "--role", "viewer",
            "--password-file", str(secret), "--config", str(home.config_path), VIEWER[0],
            cwd=harness.REPO, stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert await proc.wait() == 0
        year = f"?from={first}&to={end_day}"
        auth = {"Authorization": f"Bearer {home.token}"}
        jar = aiohttp.CookieJar(unsafe=True)  # the session cookie of a host given by its IP
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            await _sign_in(session, server.url)
            page = await _timed(session, f"{server.url}/analytics{year}", args.requests)
            api = {
                name: await _timed(
                    session,
                    f"{server.url}/api/v1/analytics/{name}{year}",
                    args.requests,
                    headers=auth,
                )
                for name in ("summary", "campaigns", "timeseries")
            }
    finally:
        await server.stop()
    summary = {
        "bench": "analytics",
        "raw_days": args.days,
        "messages_per_day": args.per_day,
        "messages": made,
        "rollup_rows": folded,
        "rollup_rows_per_s": round(folded / rollup_s),
        "sums_rows_for_a_year": sums,
        "year_from_raw_events": args.days >= 365,
        "page": page,
        "api": api,
        "requests": args.requests,
        "target_page_p99_ms": TARGET_PAGE_P99_MS,
        "page_ok": page["p99_ms"] < TARGET_PAGE_P99_MS,
    }
    harness.publish_summary(summary, LATEST)
    return 0 if summary["page_ok"] else 1


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--per-day", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.days, args.per_day, args.requests = 7, 2000, 50
    root = Path(tempfile.mkdtemp(prefix="smsgw-bench-analytics-"))
    return harness.run_bench(lambda: main(args, root), root, args.keep, 3 * 3600.0)


if __name__ == "__main__":
    sys.exit(cli())
