"""HL7 over MLLP into `smsgw run` nodes: one SQLite node, one cluster node, two cluster
nodes with the feed on one, and two with the feed split over both (issue 18 on issue
13's feed). `bench/cluster.py --only-hl7` runs it.

Each site is fresh (`smsgw init`, one keyring; a new PostgreSQL database for a cluster),
its nodes run every inbound job under the clinical advisory lock, with the demo's two
reminder rules posted first (each booking plans two reminders). The feed is
`bench/hl7.py`'s: N new SIU^S12 bookings of 500 patients, each connection keeping
`window` outstanding and timing each message from its write to its ACK. A split feed is
one connection per node, each with half of the messages (disjoint control ids and
appointment keys, the same 500 patients). messages/s = N / (first write -> last ACK);
p50/p99 over every message's ACK latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from tests.pg.node_proc import Node, init_data, node_config
from tests.pg_server import PgServer
from tests.ports import free_port

_spec = importlib.util.spec_from_file_location(
    "bench_hl7", Path(__file__).resolve().parent / "hl7.py"
)  # not `import hl7`: that name is python-hl7's
assert _spec is not None and _spec.loader is not None
bench_hl7 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_hl7)

SMSC_PW = "pw"  # the simulator's, on loopback (tests/pg/node_proc.py's)
RULES = (  # gateway/reminders/demo.py's, through the API
    {"name": "The evening before", "offset": "-1d", "delivery_time": "18:00",
     "template": "reminder"},
    {"name": "Two hours before", "offset": "-2h", "skip_if_booked_within": "4h",
     "template": "reminder"},
)  # fmt: skip


def _interface(port: int) -> str:
    return (
        '\n[[hl7.interfaces]]\nname = "bench"\n'
        f'listen = "127.0.0.1:{port}"\nprocessing_ids = ["P", "T"]\n'
        'accept_untyped_phone = true\ntiming_source = "sch11"\n'
    )


@contextlib.asynccontextmanager
async def _nodes(count: int, dsn: str | None) -> AsyncIterator[tuple[list[Node], list[int]]]:
    smsc = SmscSimulator(SimulatorConfig(system_id="smsgw", password=SMSC_PW))
    await smsc.start()
    names = [f"gw{i + 1}" for i in range(count)]
    started: list[Node] = []
    try:
        with tempfile.TemporaryDirectory(prefix="smsgw-bench-hl7c-") as tmp:
            root = Path(tmp)
            token = await init_data(root, names)
            ports, confs = [], []
            for name in names:
                conf, url = node_config(root / name, name, dsn, ("127.0.0.1", smsc.port))
                ports.append(free_port())
                conf.write_text(conf.read_text() + _interface(ports[-1]))
                confs.append((conf, url))
            for name, (conf, url) in zip(names, confs, strict=True):
                started.append(await Node.start(name, conf, url))
            async with aiohttp.ClientSession() as http:
                for rule in RULES:
                    async with http.post(
                        f"{started[0].url}/api/v1/reminder-rules",
                        json=rule,
                        headers={"Authorization": f"Bearer {token}"},
                    ) as r:
                        assert r.status == 201, await r.text()
            yield started, ports
            for node in started:
                with contextlib.suppress(Exception):
                    await node.stop()
    finally:
        for node in started:
            if node.proc.returncode is None:
                node.proc.kill()
        await smsc.aclose()


async def _counts(dsn: str) -> dict[str, int]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        out = {}
        for name, sql in (
            ("mapped", "SELECT count(*) FROM hl7_messages WHERE state = 'mapped'"),
            ("appointments", "SELECT count(*) FROM appointments"),
            ("notices", "SELECT count(*) FROM clinical_notices WHERE state = 'pending'"),
        ):
            row = await (await conn.execute(sql)).fetchone()
            out[name] = int(row[0]) if row else 0
        return out


async def run_site(
    pg: PgServer, nodes: int, feeds: int, sqlite: bool, n: int, window: int
) -> dict[str, Any]:
    """`n` bookings over `feeds` connections (one per node, from the first)."""
    dsn = None if sqlite else pg.create_database()
    async with _nodes(nodes, dsn) as (_, ports):
        share = n // feeds
        t0 = time.perf_counter()
        runs = await asyncio.gather(
            *(bench_hl7.drive(ports[i], share, window, None, i * share) for i in range(feeds))
        )
        elapsed = time.perf_counter() - t0
        latencies = sorted(x for r in runs for x in r["latencies_s"])
        counts = {} if dsn is None else await _counts(dsn)
    total = share * feeds
    result = {
        "backend": "sqlite" if sqlite else "postgresql",
        "nodes": nodes,
        "feeds": feeds,
        "messages": total,
        "window": window,
        "msg_per_s": round(total / elapsed, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
        **counts,
    }
    print(
        f"hl7 {result['backend']} nodes={nodes} feeds={feeds}: {result['msg_per_s']:,} msg/s,"
        f" p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms",
        flush=True,
    )
    return result


async def hl7(pg: PgServer, n: int, window: int) -> dict[str, Any]:
    runs = [
        await run_site(pg, 1, 1, True, n, window),
        await run_site(pg, 1, 1, False, n, window),
        await run_site(pg, 2, 1, False, n, window),
        await run_site(pg, 2, 2, False, n, window),
    ]
    sqlite, one, _, split = runs
    return {
        "runs": runs,
        "pg1_over_sqlite1": round(one["msg_per_s"] / sqlite["msg_per_s"], 2),
        "pg2_split_over_pg1": round(split["msg_per_s"] / one["msg_per_s"], 2),
    }
