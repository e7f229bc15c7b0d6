"""Several `smsgw run` nodes on one PostgreSQL queue (issue 18, point 9; S3, S6, S9 soak).

    .venv/bin/python bench/cluster.py                  # make bench-cluster
    .venv/bin/python bench/cluster.py --messages 2000 --queued 20000   # quicker
    .venv/bin/python bench/cluster.py --soak 600       # plus S9: 10 minutes with xmin held
    .venv/bin/python bench/cluster.py --only-recovery  # S3's recovery alone (~40 s)
    .venv/bin/python bench/cluster.py --only-priority  # S6 priority alone (~1 min)
    .venv/bin/python bench/cluster.py --only-account   # S6 on a shared account (~1 min)
    .venv/bin/python bench/cluster.py --only-hl7       # HL7 over MLLP into nodes (~1 min)

1. throughput: N messages posted in batches of 100, spread over 1, 2 and 3 nodes on one
   throwaway PostgreSQL (`tests/pg_server.py`, Debian's, fsync on), all sending to one
   SMSC simulator in this process; then the same on one node with its SQLite store.
   msg/s = N / (first post -> N-th submit at the simulator). The scaling ratios are the
   2- and 3-node rates over the 1-node one, the cluster's over SQLite's.
2. failover: two nodes (lease 4 s, margin 1 s); node 2 holds a backlog (its route at
   50/s) and is killed (SIGKILL); node 1 has nothing of its own. takeover = the kill ->
   the first of node 2's messages submitted a second or more after it (by node 1),
   drained = -> the last of them.
3. claim latency at 100,000 queued: `claims.claim` (lease check, SKIP LOCKED claim,
   events; one transaction) of 10 and of 1 message, 300 times each, p50/p99.
4. S3 recovery: three nodes on one carrier account (`[[cluster.accounts]]`) whose
   contract (`--cap`, 150/s) is far below what they send together; a backlog on each;
   node 3 killed (SIGKILL) mid-run. The cap is the account's rate; `--burst` (15) more
   may go in one second. From the simulator's submit log: the carrier's submits per
   second (1 s bins from the kill, and per node), recovery = the kill -> the end of the
   first whole second after it with >= 90 % of the cap, whether every second after that
   held it, and the most in any 1 s window over the run (at most cap + burst).
5. S6 priority across nodes: two nodes, a bulk backlog on node 1 (routes at 100/s), 50
   critical messages posted to node 2 20 ms apart; accept -> `sending` from the events
   (p50/p99; target p99 < 50 ms); then bulk on both nodes, then bulk on both sending
   on one carrier account (`--account`, 100,2) instead of 100/s each: the critical's
   POST must not wait behind the nodes' bulk claims on the account's bucket row
   (`--only-account`: the two bulk-on-both rows alone). The peer: one SQLite node, both
   on it.
6. --soak S: S9, a REPEATABLE READ transaction held open (xmin pinned) while two nodes
   take a steady load for S seconds; the nodes' healthz `xmin_age_seconds`, accept ->
   `sending` at the start and the end, and S9's own figure, the claims' p99 in the first
   and the last minute (the nodes' `smsgw_cluster_claim_seconds` histograms; at most the
   bucket bound given). `--only-soak` runs it alone (`cluster-soak-latest.json`).
7. --only-hl7: HL7 SIU bookings over MLLP into one SQLite node, one cluster node, two
   with the feed on one and two with it split (`bench/cluster_hl7.py`; `--hl7 N`
   messages, `--hl7-window` outstanding per connection).
Every figure is measured on whatever else runs on the machine: compare the ratios from
one run. Ends with one JSON line (also `bench/results/cluster-latest.json`;
`cluster-recovery-latest.json` with --only-recovery).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import importlib.util
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import harness
from client import parse_iso

sys.path.remove(str(harness.BENCH_DIR))
sys.path.insert(0, str(harness.REPO))
import aiohttp
import psycopg
from psycopg_pool import AsyncConnectionPool

from drivers.smpp.simulator import SimulatorConfig, SmscSimulator, SubmitRecord
from drivers.smpp.status import Status
from gateway.cluster import claims, nodes
from gateway.cluster.schema import migrate as apply_schema
from tests.pg.carrier_windows import max_in_window
from tests.pg.node_proc import Node, init_data, node_config
from tests.pg.queue_rows import NOW, add_messages
from tests.pg_server import PgServer, find_bindir

LATEST = harness.BENCH_DIR / "results" / "cluster-latest.json"
RECOVERY_LATEST = harness.BENCH_DIR / "results" / "cluster-recovery-latest.json"
HL7_LATEST = harness.BENCH_DIR / "results" / "cluster-hl7-latest.json"
PRIORITY_LATEST = harness.BENCH_DIR / "results" / "cluster-priority-latest.json"
SOAK_LATEST = harness.BENCH_DIR / "results" / "cluster-soak-latest.json"
BATCH = 100
SMSC_PW = "pw"  # the simulator's, on loopback


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Site:
    """Nodes (on one PostgreSQL database, or one node on its SQLite store), one SMSC."""

    def __init__(
        self, smsc: SmscSimulator, nodes_: list[Node], token: str, http: aiohttp.ClientSession
    ) -> None:
        self.smsc, self.nodes, self.token, self.http = smsc, nodes_, token, http


@contextlib.asynccontextmanager
async def _site(count: int, dsn: str | None, **options: Any) -> AsyncIterator[Site]:
    smsc = SmscSimulator(SimulatorConfig(system_id="smsgw", password=SMSC_PW, receipt_delay=0.2))
    await smsc.start()
    names = [f"gw{i + 1}" for i in range(count)]
    started: list[Node] = []
    try:
        with tempfile.TemporaryDirectory(prefix="smsgw-bench-cluster-") as tmp:
            root = Path(tmp)
            token = await init_data(root, names)
            confs = [
                node_config(root / n, n, dsn, ("127.0.0.1", smsc.port), **options) for n in names
            ]
            started += await asyncio.gather(
                *(Node.start(n, conf, url) for n, (conf, url) in zip(names, confs, strict=True))
            )
            async with aiohttp.ClientSession() as http:
                yield Site(smsc, started, token, http)
            for node in started:
                if node.proc.returncode is None:
                    node.proc.terminate()
            for node in started:
                with contextlib.suppress(Exception):
                    await node.stop()
    finally:
        for node in started:
            if node.proc.returncode is None:
                node.proc.kill()
        await smsc.aclose()


async def _post(site: Site, nodes_: list[Node], bodies: list[str], prio: str) -> list[str]:
    """Post `bodies` in batches, round robin over `nodes_`, 4 requests at a time."""
    auth = {"Authorization": f"Bearer {site.token}"}
    http = site.http
    chunks = [bodies[i : i + BATCH] for i in range(0, len(bodies), BATCH)]
    ids: list[str] = []
    gate = asyncio.Semaphore(4)

    async def one(i: int, chunk: list[str]) -> None:
        node = nodes_[i % len(nodes_)]
        # A critical message must say why (purpose `emergency`), as in bench/scenarios.py.
        extra = {"purpose": "emergency"} if prio == "critical" else {}
        items = [
            {"to": f"+1202555{n % 10000:04d}", "body": b, "priority": prio, **extra}
            for n, b in enumerate(chunk)
        ]
        async with (
            gate,
            http.post(
                f"{node.url}/api/v1/messages/batch", json={"messages": items}, headers=auth
            ) as r,
        ):
            assert r.status == 202, await r.text()
            got = await r.json()
            assert got["accepted"] == len(chunk), got
            ids.extend(x["id"] for x in got["results"])

    await asyncio.gather(*(one(i, c) for i, c in enumerate(chunks)))
    return ids


async def throughput(pg: PgServer, count: int, n: int, sqlite: bool) -> dict[str, Any]:
    async with _site(count, None if sqlite else pg.create_database()) as site:
        bodies = [f"tp{count}{'s' if sqlite else 'p'} {i}" for i in range(n)]
        t0 = time.perf_counter()
        await _post(site, site.nodes, bodies, "normal")
        accepted = time.perf_counter() - t0
        await asyncio.wait_for(site.smsc.wait_until(lambda: site.smsc.submits >= n), 600)
        elapsed = time.perf_counter() - t0
    backend = "sqlite" if sqlite else "postgresql"
    rate = n / elapsed
    print(f"throughput {backend} nodes={count}: {rate:,.0f} msg/s ({n} in {elapsed:.1f} s)")
    return {"backend": backend, "nodes": count, "messages": n, "seconds": round(elapsed, 2),
            "accept_seconds": round(accepted, 2), "msg_per_s": round(rate, 1)}  # fmt: skip


async def failover(pg: PgServer, queued: int) -> dict[str, Any]:
    """Node 2 holds `queued` messages (its route at 50/s) and is killed; node 1 is idle."""
    lease = 4.0
    options = {"lease": lease, "margin": 1.0, "heartbeat": 0.5, "route_extra": "rate = 50\n"}
    async with _site(2, pg.create_database(), **options) as site:
        smsc = site.smsc
        theirs = [f"fo2 {i}" for i in range(queued)]
        await _post(site, site.nodes[1:], theirs, "normal")
        await smsc.wait_until(lambda: smsc.submits >= 10)
        left = set(theirs) - {m.text for m in smsc.submitted}
        site.nodes[1].kill()
        killed = time.perf_counter()
        seen = len(smsc.submitted)
        # A submit already on the wire at the kill is not a takeover: only what reaches
        # the carrier a second or more after it (node 1 sends nothing else).
        await asyncio.wait_for(
            smsc.wait_until(
                lambda: (
                    time.perf_counter() - killed > 1
                    and any(m.text in left for m in smsc.submitted[seen:])
                )
            ),
            120,
        )
        takeover = time.perf_counter() - killed
        await asyncio.wait_for(
            smsc.wait_until(lambda: left <= {m.text for m in smsc.submitted}), 300
        )
        drained = time.perf_counter() - killed
    print(f"failover: takeover {takeover:.2f} s, dead node's {len(left)} drained {drained:.1f} s")
    return {"lease_s": lease, "route_rate": 50, "dead_queued": len(left),
            "takeover_s": round(takeover, 2), "drained_s": round(drained, 2)}  # fmt: skip


RECOVERY_SHARE = 0.9  # S3: the survivors back to >= 90 % of the cap
RECOVERY_LIMIT = 30.0  # ... within 30 s of the kill
RECOVERY_HOLD = 10.0  # seconds watched after the recovery (did it stay there?)
PRE_KILL = 5.0  # seconds of the three nodes at the cap before the kill


def _in_window(times: list[float], end: float) -> int:
    """Submits in (end - 1, end]; `times` sorted."""
    return bisect.bisect_right(times, end) - bisect.bisect_right(times, end - 1.0)


def _recovered_at(times: list[float], killed: float, floor: float) -> float | None:
    """The end of the first whole second after `killed` holding >= `floor` submits."""
    return next((t for t in times if t >= killed + 1.0 and _in_window(times, t) >= floor), None)


def _bins(log: list[SubmitRecord], origin: float, first: int, last: int) -> dict[str, list[int]]:
    """Accepted submits per 1 s bin [origin + i, origin + i + 1) for i in first..last-1,
    all together (`all`) and per node (the bind's system_type)."""
    out: dict[str, list[int]] = {"all": [0] * (last - first)}
    for r in log:
        i = math.floor(r.at - origin) - first
        if r.status == Status.ESME_ROK and 0 <= i < last - first:
            out["all"][i] += 1
            out.setdefault(r.system_type, [0] * (last - first))[i] += 1
    return out


async def recovery(pg: PgServer, cap: int, burst: int) -> dict[str, Any]:
    """S3: node 3 of three is killed while the three keep an account's cap busy."""
    lease = 8.0  # as the S3 test's
    per_node = 15 * cap  # the cap busy until recovery + RECOVERY_HOLD, unless very late
    options = {"lease": lease, "margin": 2.0, "heartbeat": 0.5, "account": (cap, burst)}
    async with _site(3, pg.create_database(), **options) as site:
        smsc, loop = site.smsc, asyncio.get_running_loop()
        bodies = [f"s3r {i}" for i in range(3 * per_node)]
        t0 = loop.time()
        await _post(site, site.nodes, bodies, "normal")  # round robin: a third each
        posted = loop.time()
        await asyncio.sleep(PRE_KILL)  # a bench: watching the clock is the point
        site.nodes[2].kill()
        killed = loop.time()
        floor = RECOVERY_SHARE * cap
        end = killed + RECOVERY_LIMIT
        while loop.time() < end:
            times = sorted(r.at for r in smsc.submit_log if r.status == Status.ESME_ROK)
            back = _recovered_at(times, killed, floor)
            if back is not None:
                end = min(end, back + RECOVERY_HOLD)
            await asyncio.sleep(0.5)
        log = [r for r in smsc.submit_log if r.at <= end]
        times = sorted(r.at for r in log if r.status == Status.ESME_ROK)
        back = _recovered_at(times, killed, floor)
        # Every whole second from the recovery on, to the end of the watch.
        held = (
            []
            if back is None
            else [_in_window(times, back + k) for k in range(int(end - back) + 1)]
        )
        bins = _bins(log, killed, -int(PRE_KILL), math.floor(end - killed))  # whole seconds
        throttled = sum(r.status == Status.ESME_RTHROTTLED for r in smsc.submit_log)
        left = 3 * per_node - len(times)
    out = {
        "cap": cap, "burst": burst, "lease_s": lease, "backlog": 3 * per_node,
        "recovery_s": None if back is None else round(back - killed, 2),
        "held": bool(held) and min(held) >= floor, "held_min": min(held, default=None),
        "held_seconds": len(held), "max_1s_window": max_in_window(log, -math.inf, math.inf),
        "max_per_second": max(bins["all"]), "throttled": throttled,
        "unsent_at_end": left, "posting_s": round(posted - t0, 1),
        "per_second_from": -int(PRE_KILL), "per_second": bins,
    }  # fmt: skip
    print(
        f"recovery (cap {cap}/s, burst {burst}, node 3 of 3 killed):"
        f" back to >= {floor:.0f}/s {out['recovery_s']} s after the kill,"
        f" held {out['held']} (min {out['held_min']} over {len(held)} s),"
        f" max 1 s window {out['max_1s_window']}, max per second {out['max_per_second']}"
    )
    nodes_ = sorted(k for k in bins if k != "all")
    for i, total in enumerate(bins["all"]):
        parts = ", ".join(f"{n} {bins[n][i]}" for n in nodes_)
        print(f"  {i - int(PRE_KILL):+3d} s: {total:4d}  ({parts})")
    return out


async def claim_latency(pg: PgServer, queued: int, rounds: int = 300) -> dict[str, Any]:
    dsn = pg.create_database()
    async with AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False) as pool:
        async with pool.connection() as conn:
            await apply_schema(conn)
        for start in range(0, queued, 50_000):
            await add_messages(pool, min(50_000, queued - start), prefix=f"q{start}")
        async with pool.connection() as conn:
            await conn.execute("ANALYZE messages")
            me = await nodes.register(conn, "bench", 600)
            out: dict[str, Any] = {"queued": queued}
            rounds = min(rounds, queued // 22)  # 10 + 1 per round, and some left
            for want in (10, 1):
                times = []
                for _ in range(rounds):
                    t0 = time.perf_counter()
                    got = await claims.claim(conn, me, "g", "r", want, NOW)
                    times.append((time.perf_counter() - t0) * 1000)
                    assert len(got.claimed) == want
                out[f"want{want}_p50_ms"] = round(statistics.median(times), 2)
                out[f"want{want}_p99_ms"] = round(_pct(times, 0.99), 2)
    print(f"claim latency at {queued:,} queued: {out}")
    return out


async def _events(dsn: str, ids: list[str]) -> list[float]:
    """accept -> first `sending` per message, ms, from the events."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        rows = await (
            await conn.execute(
                "SELECT message_id, min(at) FILTER (WHERE state = 'sending'),"
                " min(at) FILTER (WHERE attempt = 0) FROM message_events"
                " WHERE message_id = ANY(%s) GROUP BY message_id",
                (ids,),
            )
        ).fetchall()
    return [(r[1] - r[2]) * 1000 for r in rows if r[1] is not None and r[2] is not None]


async def priority(
    pg: PgServer,
    backlog: int,
    sqlite: bool,
    critical: int = 50,
    *,
    bulk_both: bool = False,
    account: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Bulk on node 1 (`bulk_both`: on both), criticals on node 2 (one node on SQLite:
    both on it). `accept_*`: the critical's POST round trip (its accept's commit);
    `carrier_*`: its POST's start -> its submit_sm at the simulator. With `account`
    (rate, burst) the route sends on a carrier account the nodes share instead of each
    its own 100/s; `waits` then counts the sessions seen waiting on a lock (sampled
    from `pg_stat_activity` while the criticals are posted) by their statement."""
    dsn = None if sqlite else pg.create_database()
    options: dict[str, Any] = {"route_extra": "rate = 100\n"}
    if account is not None:
        options = {"account": account}
    # The nodes' breakdown of each claimed accept (`gateway/cluster/accept_phases.py`).
    phases_file = Path(tempfile.mkdtemp(prefix="smsgw-bench-phases-")) / "phases.jsonl"
    os.environ["SMSGW_ACCEPT_PHASES"] = str(phases_file)
    async with _site(1 if sqlite else 2, dsn, **options) as site:
        del os.environ["SMSGW_ACCEPT_PHASES"]  # the nodes have it
        smsc = site.smsc
        bulk_nodes = site.nodes if bulk_both else site.nodes[:1]
        await _post(site, bulk_nodes, [f"bulk {i}" for i in range(backlog)], "bulk")
        sampling = asyncio.Event()
        sampler = asyncio.create_task(_lock_waits(dsn, sampling)) if dsn is not None else None
        ids: list[str] = []
        posts: list[float] = []
        started: dict[str, float] = {}  # body -> the loop time its POST began
        loop = asyncio.get_running_loop()
        for i in range(critical):
            t0 = time.perf_counter()
            started[f"crit {i}"] = loop.time()
            ids += await _post(site, site.nodes[-1:], [f"crit {i}"], "critical")
            posts.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0.02)
        sampling.set()
        waits = {} if sampler is None else await sampler
        await asyncio.wait_for(
            smsc.wait_until(
                lambda: sum(m.text.startswith("crit") for m in smsc.submitted) >= critical
            ),
            120,
        )
        lat = await (_api_delays(site, ids) if sqlite else _events(str(dsn), ids))
        counters = {} if sqlite or account is None else await _account_counters(site)
        # POST -> submit_sm at the carrier (the simulator answers every submit ESME_ROK
        # here, so its arrivals and submitted messages pair up one to one).
        assert len(smsc.arrivals) == len(smsc.submitted)
        carrier = [
            (at - started[m.text]) * 1000
            for m, (at, _) in zip(smsc.submitted, smsc.arrivals, strict=True)
            if m.text in started
        ]
        # Its POST's answer -> its submit_sm: the wait the accept's round trip leaves out
        # (a shared account's token, a round), apart from the loaded node's accept.
        answered = {f"crit {i}": started[f"crit {i}"] + ms / 1000 for i, ms in enumerate(posts)}
        queued = [
            (at - answered[m.text]) * 1000
            for m, (at, _) in zip(smsc.submitted, smsc.arrivals, strict=True)
            if m.text in answered
        ]
    out = {"backend": "sqlite" if sqlite else "postgresql", "backlog": backlog,
           "bulk_on": "both" if bulk_both and not sqlite else "node 1",
           "account": None if account is None else list(account),
           "critical": critical, "p50_ms": round(statistics.median(lat), 1),
           "p99_ms": round(_pct(lat, 0.99), 1),
           "accept_p50_ms": round(statistics.median(posts), 1),
           "accept_p99_ms": round(_pct(posts, 0.99), 1),
           "carrier_p50_ms": round(statistics.median(carrier), 1),
           "carrier_p99_ms": round(_pct(carrier, 0.99), 1),
           "answered_p50_ms": round(statistics.median(queued), 1),
           "answered_p99_ms": round(_pct(queued, 0.99), 1), "waits": waits,
           "phases": _phases(phases_file), "account_counters": counters,
           "load": _load()}  # fmt: skip
    print(f"priority: {out}")
    return out


def _phases(path: Path) -> dict[str, list[float]]:
    """Per phase of the claimed accepts (`accept_phases.py`): [p50, p99, count], ms from
    the accept's start to the phase's end."""
    marks: dict[str, list[float]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            for name, ms in json.loads(line).items():
                marks.setdefault(name, []).append(ms)
        path.unlink()
    path.parent.rmdir()
    return {
        k: [round(statistics.median(v), 1), round(_pct(v, 0.99), 1), len(v)]
        for k, v in marks.items()
    }


async def _lock_waits(dsn: str, done: asyncio.Event) -> dict[str, int]:
    """Until `done`: every 5 ms, the sessions waiting on a lock, counted by the first
    words of their statement (which statement queues behind which row)."""
    seen: dict[str, int] = {}
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while not done.is_set():
            rows = await (
                await conn.execute(
                    "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 60) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                )
            ).fetchall()
            for (query,) in rows:
                seen[query] = seen.get(query, 0) + 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.005)
    return dict(sorted(seen.items(), key=lambda kv: -kv[1])[:5])


async def _api_delays(site: Site, ids: list[str]) -> list[float]:
    """accept -> first `sending` per message, ms, from `GET /api/v1/messages/{id}`."""
    auth = {"Authorization": f"Bearer {site.token}"}
    out = []
    for mid in ids:
        async with site.http.get(f"{site.nodes[0].url}/api/v1/messages/{mid}", headers=auth) as r:
            events = (await r.json())["events"]
        at = {e["state"]: parse_iso(e["at"]) for e in reversed(events)}
        out.append((at["sending"] - at[events[0]["state"]]) * 1000)
    return out


async def soak(pg: PgServer, seconds: float, rate: int = 200) -> dict[str, Any]:
    """S9: `rate` messages a second, posted round robin to two nodes, while a REPEATABLE
    READ transaction holds the xmin horizon for `seconds`; then, with the load going on,
    the dead tuples of the queue's tables through two autovacuum cycles after its
    release."""
    dsn = pg.create_database()
    async with _site(2, dsn) as site:
        holder = await psycopg.AsyncConnection.connect(dsn)
        await holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        await holder.execute("SELECT count(*) FROM messages")
        load = _SoakLoad(site, rate)
        window = min(60.0, seconds / 4)  # the claims of the first and the last minute
        start = await _claim_buckets(site)
        first_claims: dict[float, float] | None = None
        last_from: dict[float, float] | None = None
        minute_from, by_minute = start, []  # the claims' p99 of each whole minute
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            await load.second()
            elapsed = time.perf_counter() - t0
            if elapsed >= 60 * (len(by_minute) + 1):
                now_buckets = await _claim_buckets(site)
                by_minute.append(_bucket_pct(_minus(now_buckets, minute_from), 0.99))
                minute_from = now_buckets
            if first_claims is None and elapsed >= window:
                first_claims = _minus(await _claim_buckets(site), start)
            if last_from is None and elapsed >= seconds - window:
                last_from = await _claim_buckets(site)
        last_claims = _minus(await _claim_buckets(site), last_from or start)
        async with site.http.get(f"{site.nodes[0].url}/api/v1/healthz") as r:
            health = await r.json()
        held_ids = load.last_ids
        await holder.close()
        vacuum = await _after_release(dsn, load)
        await asyncio.wait_for(site.smsc.wait_until(lambda: site.smsc.submits >= load.n), 300)
        first = await _events(dsn, load.first_ids)
        last = await _events(dsn, held_ids)
    out = {"seconds": seconds, "rate": rate, "messages": load.n,
           "late_seconds": load.late,
           "xmin_age_s": health["node"].get("xmin_age_seconds"),
           "xmin_age_xids": health["node"].get("xmin_age_xids"),
           "first_p99_ms": round(_pct(first, 0.99), 1),
           "last_p99_ms": round(_pct(last, 0.99), 1),
           # S9's criterion: claim p99 < 100 ms while xmin is held, from the nodes'
           # smsgw_cluster_claim_seconds (at most this bucket's bound), both nodes.
           "claim_p99_first_ms_le": _bucket_pct(first_claims or {}, 0.99),
           "claim_p99_last_ms_le": _bucket_pct(last_claims, 0.99),
           "claims_last": int(last_claims.get(math.inf, 0)),
           "claim_p99_by_minute_ms_le": by_minute,
           **vacuum}  # fmt: skip
    print(f"soak with xmin held: {out}")
    return out


class _SoakLoad:
    """`rate` messages a second on the wall clock, in batches round robin over the
    nodes; the first and the latest second's ids kept for their latencies."""

    def __init__(self, site: Site, rate: int) -> None:
        self.site, self.rate = site, rate
        self.n = 0
        self.late = 0  # seconds whose posts took longer than the second
        self.first_ids: list[str] = []
        self.last_ids: list[str] = []
        self._next = time.perf_counter()

    async def second(self) -> None:
        texts = [f"soak {self.n + i}" for i in range(self.rate)]
        ids = await _post(self.site, self.site.nodes, texts, "normal")
        self.n += self.rate
        self.first_ids = self.first_ids or ids
        self.last_ids = ids
        self._next += 1.0
        pause = self._next - time.perf_counter()
        if pause > 0:
            await asyncio.sleep(pause)
        else:
            self.late += 1


_DEAD = """
SELECT relname, n_dead_tup, current_setting('autovacuum_vacuum_threshold')::bigint
    + current_setting('autovacuum_vacuum_scale_factor')::float8 * n_live_tup
FROM pg_stat_user_tables WHERE relname IN ('messages', 'message_events', 'outbox')
"""
SAMPLE_EVERY = 5.0  # seconds between readings of the dead tuples after the release


async def _after_release(dsn: str, load: _SoakLoad) -> dict[str, Any]:
    """S9's second criterion: with the load going on, each queue table's dead tuples at
    the release, and how long after it they first fell under that table's autovacuum
    threshold, read every few seconds through two autovacuum cycles
    (`autovacuum_naptime`); None: not within them."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        row = await (
            await conn.execute(
                "SELECT setting::float8 FROM pg_settings WHERE name = 'autovacuum_naptime'"
            )
        ).fetchone()  # in seconds (`SHOW` says "1min")
        naptime = float(row[0]) if row else 60.0

        async def reading() -> dict[str, tuple[int, float]]:
            rows = await (await conn.execute(_DEAD)).fetchall()
            return {str(r[0]): (int(r[1]), float(r[2])) for r in rows}

        released = time.perf_counter()
        at_release = await reading()
        under: dict[str, float | None] = {
            t: 0.0 if d < limit else None for t, (d, limit) in at_release.items()
        }
        last_read = released
        while time.perf_counter() - released < 2 * naptime:
            await load.second()
            if time.perf_counter() - last_read >= SAMPLE_EVERY:
                last_read = time.perf_counter()
                for table, (dead, limit) in (await reading()).items():
                    if under.get(table) is None and dead < limit:
                        under[table] = round(last_read - released, 1)
    return {
        "naptime_s": naptime,
        "dead_at_release": {t: d for t, (d, _) in at_release.items()},
        "under_threshold_after_s": under,
        "dead_under_threshold_within_2_cycles": all(v is not None for v in under.values()),
    }


async def _claim_buckets(site: Site) -> dict[float, float]:
    """Every node's `smsgw_cluster_claim_seconds` buckets summed: bound -> claims at or
    under it (cumulative, as Prometheus keeps them)."""
    auth = {"Authorization": f"Bearer {site.token}"}
    total: dict[float, float] = {}
    for node in site.nodes:
        async with site.http.get(f"{node.url}/api/v1/metrics", headers=auth) as r:
            text = await r.text()
        for line in text.splitlines():
            if line.startswith("smsgw_cluster_claim_seconds_bucket{"):
                bound = line.split('le="', 1)[1].split('"', 1)[0]
                le = math.inf if bound == "+Inf" else float(bound)
                total[le] = total.get(le, 0.0) + float(line.rsplit(" ", 1)[1])
    return total


async def _account_counters(site: Site) -> dict[str, float]:
    """The nodes' round takes on the account tried again (its row held past the take's
    short wait) and settles that owed their give-back, summed
    (`gateway/cluster/account_takes.py`)."""
    auth = {"Authorization": f"Bearer {site.token}"}
    names = ("smsgw_cluster_account_busy_retries", "smsgw_cluster_account_settles_owed")
    total = dict.fromkeys(names, 0.0)
    for node in site.nodes:
        async with site.http.get(f"{node.url}/api/v1/metrics", headers=auth) as r:
            text = await r.text()
        for line in text.splitlines():
            name = line.split("{", 1)[0]
            if name in total:
                total[name] += float(line.rsplit(" ", 1)[1])
    return {k.removeprefix("smsgw_cluster_account_"): v for k, v in total.items()}


def _minus(now: dict[float, float], before: dict[float, float]) -> dict[float, float]:
    return {le: n - before.get(le, 0.0) for le, n in now.items()}


def _bucket_pct(buckets: dict[float, float], q: float) -> float | None:
    """The smallest bucket bound (ms) holding the `q` quantile of the claims; None
    without claims."""
    count = buckets.get(math.inf, 0.0)
    if count <= 0:
        return None
    for le in sorted(buckets):
        if buckets[le] >= q * count:
            return None if le == math.inf else le * 1000
    return None


async def main(args: argparse.Namespace) -> dict[str, Any]:
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL is not installed (`make peers` installs Debian's)")
    pg = PgServer(bindir)
    pg.start()
    try:
        result: dict[str, Any] = {"bench": "cluster", "busy_machine_load": _load()}
        if args.only_recovery:
            result["recovery"] = await recovery(pg, args.cap, args.burst)
            result["load_after"] = _load()
            return result
        if args.only_hl7:
            result["hl7"] = await _hl7_bench().hl7(pg, args.hl7, args.hl7_window)
            result["load_after"] = _load()
            return result
        if args.only_soak:
            result["soak"] = await soak(pg, args.soak or 600, args.soak_rate)
            result["load_after"] = _load()
            return result
        if args.only_account:  # with the same bulk on both at 100/s each, for reference
            result["priority"] = [
                await priority(pg, args.backlog, False, bulk_both=True),
                await priority(pg, args.backlog, False, bulk_both=True, account=args.account),
            ]
            result["load_after"] = _load()
            return result
        if args.only_priority:
            result["priority"] = [
                await priority(pg, args.backlog, False),
                await priority(pg, args.backlog, False, bulk_both=True),
                await priority(pg, args.backlog, False, bulk_both=True, account=args.account),
                await priority(pg, args.backlog, True),
            ]
            result["load_after"] = _load()
            return result
        runs = [await throughput(pg, k, args.messages, False) for k in (1, 2, 3)]
        runs.append(await throughput(pg, 1, args.messages, True))
        one = runs[0]["msg_per_s"]
        result["throughput"] = runs
        result["scaling_2_over_1"] = round(runs[1]["msg_per_s"] / one, 2)
        result["scaling_3_over_1"] = round(runs[2]["msg_per_s"] / one, 2)
        result["pg1_over_sqlite1"] = round(one / runs[3]["msg_per_s"], 2)
        result["failover"] = await failover(pg, args.failover)
        result["recovery"] = await recovery(pg, args.cap, args.burst)
        result["claim"] = await claim_latency(pg, args.queued)
        result["priority"] = [await priority(pg, args.backlog, sqlite) for sqlite in (False, True)]
        result["priority_pg_over_sqlite_p99"] = round(
            result["priority"][0]["p99_ms"] / max(result["priority"][1]["p99_ms"], 0.1), 2
        )
        if args.soak:
            result["soak"] = await soak(pg, args.soak, args.soak_rate)
        result["load_after"] = _load()
        return result
    finally:
        pg.stop()


def _hl7_bench() -> Any:
    """`bench/cluster_hl7.py`, loaded by its path (bench/ is off sys.path here, as its
    `hl7.py` would shadow python-hl7)."""
    path = harness.BENCH_DIR / "cluster_hl7.py"
    spec = importlib.util.spec_from_file_location("cluster_hl7", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load() -> float:
    return round(float(Path("/proc/loadavg").read_text().split()[0]), 2)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=6000, help="per throughput run")
    parser.add_argument("--failover", type=int, default=400, help="queued on the killed node")
    parser.add_argument("--cap", type=int, default=150, help="S3 recovery: the account's /s")
    parser.add_argument("--burst", type=int, default=15, help="S3 recovery: the account's")
    parser.add_argument("--only-recovery", action="store_true", help="run S3 recovery alone")
    parser.add_argument("--only-priority", action="store_true", help="run S6 priority alone")
    parser.add_argument(
        "--account",
        type=lambda v: tuple(float(x) for x in v.split(",")),
        default=(100.0, 10.0),
        help="S6's shared-account row: RATE,BURST of the account both nodes send on"
        " (a burst of 4 or more keeps a critical reserve: docs/ops/cluster.md)",
    )
    parser.add_argument(
        "--only-account",
        action="store_true",
        help="S6 bulk on both, 100/s each then the account (~1 min)",
    )
    parser.add_argument("--only-hl7", action="store_true", help="HL7 over MLLP alone")
    parser.add_argument("--hl7", type=int, default=2000, help="HL7: messages per site")
    parser.add_argument("--hl7-window", type=int, default=16, help="HL7: outstanding each")
    parser.add_argument("--only-soak", action="store_true", help="run S9 alone (--soak, 600)")
    parser.add_argument("--soak-rate", type=int, default=200, help="S9: messages a second")
    parser.add_argument("--queued", type=int, default=100_000)
    parser.add_argument("--backlog", type=int, default=3000, help="bulk before the criticals")
    parser.add_argument("--soak", type=float, default=0, help="S9 soak seconds (0: none)")
    args = parser.parse_args()
    result = asyncio.run(main(args))
    LATEST.parent.mkdir(exist_ok=True)
    line = json.dumps(result)
    latest = LATEST
    if args.only_recovery:
        latest = RECOVERY_LATEST
    elif args.only_priority or args.only_account:
        latest = PRIORITY_LATEST
    elif args.only_soak:
        latest = SOAK_LATEST
    elif args.only_hl7:
        latest = HL7_LATEST
    latest.write_text(line + "\n")
    print(line)
