"""S7 with real nodes (issue 18): a `smsgw run` node in a network namespace loses its
link to PostgreSQL under load, while the carrier and its API stay reachable.

gw1 runs on this host; gw2 in a namespace (`tests/pg/netns.py`) whose only way to the
database is a veth link that the test sets down. gw2 holds a backlog (its route at
20/s) and, when the link goes, submits the carrier has not answered yet (the simulator
stops answering just before the cut, and answers again once gw1 has taken gw2's rows).

Pass: gw2 fences itself (healthz 503, `"lease": "fenced"`) before the database ends its
lease (its `node_fenced` log line is earlier than gw1's `node_recovered` for it), and
sends nothing more while cut; gw1 sends every message gw2 acknowledged; on heal gw2
joins under a new incarnation, and the outcomes it learned while cut are recorded as
late outcomes, overwriting nothing; whatever the carrier got twice was in gw2's flight
and is flagged `possible_duplicate`. Skips, saying why, where namespaces cannot be made.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import psycopg
import pytest

from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from tests.pg.netns import Forward, Namespace, unavailable
from tests.pg.node_proc import Node, init_data, node_config, stop_all
from tests.pg_server import PgServer

BACKLOG = 60
LEASE = {"lease": 6.0, "margin": 2.0, "heartbeat": 0.5}


@pytest.fixture
def namespace() -> Iterator[Namespace]:
    reason = unavailable()
    if reason is not None:
        pytest.skip(f"S7 with a network namespace: {reason}")
    ns = Namespace()
    ns.create()
    try:
        yield ns
    finally:
        ns.delete()


def _at(line: str) -> str:
    stamp: str = json.loads(line)["timestamp"]
    return stamp


@pytest.mark.timeout(180)
async def test_a_node_cut_from_the_database_fences_itself_and_its_peer_sends_its_messages(
    tmp_path: Path, pg_server: PgServer, pg_dsn: str, namespace: Namespace
) -> None:
    smsc = SmscSimulator(SimulatorConfig(system_id="smsgw", password="pw", receipt_delay=0.1))
    await smsc.start()
    db = Forward(namespace.db_host, pg_server.port)
    carrier = Forward(namespace.net_host, smsc.port)  # gw2's submits, counted
    await db.start()
    await carrier.start()
    token = await init_data(tmp_path, ["gw1", "gw2"])
    auth = {"Authorization": f"Bearer {token}"}
    conf1, url1 = node_config(tmp_path / "gw1", "gw1", pg_dsn, ("127.0.0.1", smsc.port), **LEASE)
    ns_dsn = pg_dsn.replace("host=127.0.0.1", f"host={namespace.db_host}").replace(
        f"port={pg_server.port}", f"port={db.port}"
    )
    conf2, url2 = node_config(
        tmp_path / "gw2", "gw2", ns_dsn, (namespace.net_host, carrier.port),
        listen_host=namespace.net_node, route_extra="rate = 20\n", **LEASE,
    )  # fmt: skip
    nodes: list[Node] = []
    try:
        nodes += await asyncio.gather(
            Node.start("gw1", conf1, url1),
            Node.start("gw2", conf2, url2, prefix=namespace.exec_prefix()),
        )
        gw1, gw2 = nodes
        # gw2 serves HTTPS (plain HTTP is loopback only), under a self-signed pair.
        trust = ssl.create_default_context(cafile=str(tmp_path / "gw2" / "tls.crt"))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust)) as http:
            async with http.get(f"{url2}/api/v1/healthz") as r:
                before = (await r.json())["node"]
            assert before["lease"] == "live"
            items = [{"to": f"+1202555{i:04d}", "body": f"s7 {i}"} for i in range(BACKLOG)]
            async with http.post(
                f"{url2}/api/v1/messages/batch", json={"messages": items}, headers=auth
            ) as r:
                assert r.status == 202, await r.text()
                results = (await r.json())["results"]
            acked = {x["id"]: item["body"] for x, item in zip(results, items, strict=True)}
            await asyncio.wait_for(smsc.wait_until(lambda: smsc.submits >= 3), 30)
            smsc.stop_answering()  # what gw2 submits from now waits for its answer
            answered = len(carrier.submits)
            await asyncio.wait_for(carrier.wait_until(lambda: len(carrier.submits) > answered), 30)
            namespace.cut_db()
            fenced_line = await gw2.wait_line('"node_fenced"', 60)
            async with http.get(f"{url2}/api/v1/healthz") as r:
                assert r.status == 503
                assert (await r.json())["node"]["lease"] == "fenced"
            submits_when_fenced = len(carrier.submits)
            recovered_line = await gw1.wait_line('"node_recovered"', 60)
            assert '"gw2"' in gw1.lines[recovered_line]
            # Fenced on its own clock before the database's lease ended.
            assert _at(gw2.lines[fenced_line]) < _at(gw1.lines[recovered_line])
            smsc.resume_answering()
            await asyncio.wait_for(
                smsc.wait_until(lambda: {m.text for m in smsc.submitted} >= set(acked.values())),
                90,
            )  # gw1 sent all gw2 acknowledged
            assert len(carrier.submits) == submits_when_fenced, "gw2 submitted while fenced"
            namespace.heal_db()
            await gw2.wait_line('"node_registered"', 60, start=fenced_line)
            async with http.get(f"{url2}/api/v1/healthz") as r:
                after = (await r.json())["node"]
            assert after["incarnation"] > before["incarnation"]
            # The answers gw2 got while cut reach the database now, as late outcomes.
            await gw2.wait_line('"late_outcomes"', 60, start=fenced_line)
        async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
            late = {
                r[0]
                for r in await (
                    await conn.execute("SELECT message_id FROM late_outcomes WHERE node_id = 'gw2'")
                ).fetchall()
            }
            rows = await (
                await conn.execute(
                    "SELECT id, state, possible_duplicate FROM messages WHERE id = ANY(%s)",
                    (list(acked),),
                )
            ).fetchall()
        assert late and late <= acked.keys()
        states = {r[0]: r[1] for r in rows}
        flagged = {r[0] for r in rows if r[2]}
        assert set(states.values()) <= {"sent", "delivered"}, Counter(states.values())
        counts = Counter(m.text for m in smsc.submitted)
        twice = {mid for mid, body in acked.items() if counts[body] > 1}
        assert twice <= flagged and late <= flagged
    finally:
        for node in nodes:  # shown by pytest when the test failed
            print(node.name, "".join(x for x in node.lines if "dispatch_failed" not in x))
        await stop_all(nodes)
        await carrier.stop()
        await db.stop()
        await smsc.aclose()
