"""Webhooks on a two-node cluster (issue 18): messages sent through both nodes reach one
real receiver, every status event once and in each message's order, from whichever
node leads the endpoint's lane; when the leader is killed mid-stream the other takes
the lane over and nothing is lost (a repeat only of what the dead leader had not
recorded)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import defaultdict
from pathlib import Path

import psycopg
import pytest
from aiohttp import ClientSession

from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from tests.pg.node_proc import Node, init_data, node_config, stop_all
from tests.webhook_rig import Receiver, write_secret

WAIT = 30.0
SETTLED = ("sent", "delivered")
PER_NODE = 5


def _webhook(conf: Path, rx: Receiver, secret: Path) -> None:
    conf.write_text(
        conf.read_text()
        + "\n[outbox]\nsafety_poll = 0.5\ndebounce = 0\nyield_to_sends = 0\n"
        + "backoff_initial = 0.05\nbackoff_max = 0.1\n\n"
        + f'[[webhooks]]\nname = "rx"\nurl = "{rx.url}"\nsecret_file = "{secret}"\n'
        + 'events = ["message.status"]\nallow_loopback = true\nallow_plain_http = true\n'
    )


def _took_rx(node: Node) -> bool:
    return any(
        '"outbox_lane_taken"' in line and '"consumer": "webhook:rx"' in line for line in node.lines
    )


async def _leader(nodes: list[Node]) -> Node:
    """The node that took the `rx` lane (its log says so)."""

    async def took(node: Node) -> Node:
        async with node.changed:
            await node.changed.wait_for(lambda: _took_rx(node))
        return node

    waits = [asyncio.ensure_future(took(n)) for n in nodes]
    done, pending = await asyncio.wait(waits, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    assert done, "no node took the rx lane"
    return done.pop().result()


def _arrived(rx: Receiver) -> dict[str, list[tuple[str, str]]]:
    """Per message: (event id, state) in arrival order."""
    seen: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for event in rx.events:
        data = event["body"]["data"]
        seen[data["message_id"]].append((event["id"], data["state"]))
    return seen


def _first_arrivals(events: list[tuple[str, str]]) -> list[str]:
    """The states of the distinct events in the order they first arrived (a repeat
    is the same event, by its id)."""
    first: dict[str, str] = {}
    for event_id, state in events:
        first.setdefault(event_id, state)
    return list(first.values())


async def _written(dsn: str, ids: list[str]) -> dict[str, list[str]]:
    """Per message, the states of its events in PostgreSQL, less its creation (implied
    by the row: no outbox row on SQLite either). A receipt that overtakes its submit's
    answer may be applied late, so the truth is what was written, not `delivered`."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT message_id, state FROM message_events WHERE message_id = ANY(%s)"
            " AND NOT (state = 'queued' AND attempt = 0 AND error_code IS NULL) ORDER BY seq",
            (ids,),
        )
        written: dict[str, list[str]] = {i: [] for i in ids}
        for message_id, state in await cur.fetchall():
            written[message_id].append(state)
    return written


async def _complete(rx: Receiver, dsn: str, ids: list[str]) -> dict[str, list[str]]:
    """Wait until every message of `ids` has left `sending` and the receiver has every
    event written for it (looked at again when an event arrives, or each second for
    a change in the database); what was written."""
    async with asyncio.timeout(WAIT):
        while True:
            written = await _written(dsn, ids)
            seen = _arrived(rx)
            if all(
                w and w[-1] in SETTLED and _first_arrivals(seen.get(i, [])) == w
                for i, w in written.items()
            ):
                return written
            async with rx.arrived:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(rx.arrived.wait(), 1.0)


async def _send(http: ClientSession, node: Node, token: str, n: int) -> str:
    async with http.post(
        f"{node.url}/api/v1/messages",
        json={"to": f"+4915112345{n:03d}", "body": f"m{n}"},
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:
        assert resp.status == 202, await resp.text()
        return str((await resp.json())["id"])


@pytest.mark.timeout(120)
async def test_two_nodes_deliver_each_status_once_and_survive_the_leaders_death(
    tmp_path: Path, pg_dsn: str
) -> None:
    smsc = SmscSimulator(SimulatorConfig(system_id="smsgw", password="pw", receipt_delay=0.05))
    await smsc.start()
    secret_path, secret = write_secret(tmp_path, "rx")
    rx = await Receiver(secret).start()
    token = await init_data(tmp_path, ["gw1", "gw2"])
    nodes: list[Node] = []
    try:
        starts = []
        for name in ("gw1", "gw2"):
            conf, url = node_config(tmp_path / name, name, pg_dsn, ("127.0.0.1", smsc.port))
            _webhook(conf, rx, secret_path)
            starts.append(Node.start(name, conf, url))
        nodes += await asyncio.gather(*starts)
        leader = await _leader(nodes)
        numbers = itertools.count()
        async with ClientSession() as http:
            first = [
                await _send(http, node, token, next(numbers))
                for node in nodes
                for _ in range(PER_NODE)
            ]
            written = await _complete(rx, pg_dsn, first)
            arrived = _arrived(rx)
            for message_id in first:  # exactly once, in the message's order
                assert [s for _, s in arrived[message_id]] == written[message_id]
            assert len({e["id"] for e in rx.events}) == len(rx.events)

            # The other node sends more; the leader is killed once their events flow.
            (survivor,) = [n for n in nodes if n is not leader]
            later = [await _send(http, survivor, token, next(numbers)) for _ in range(2 * PER_NODE)]
            async with rx.arrived:
                await asyncio.wait_for(
                    rx.arrived.wait_for(lambda: any(m in _arrived(rx) for m in later)), WAIT
                )
            leader.kill()  # SIGKILL: its session, and the lane's lock, end with it
            # Nothing lost; repeats (the same event ids) only of what the dead leader
            # delivered but had not recorded.
            await _complete(rx, pg_dsn, first + later)
        assert _took_rx(survivor)
        assert rx.bad_signatures == 0
    finally:
        await stop_all([n for n in nodes if n.alive])
        for node in nodes:
            if not node.alive:
                await node.proc.wait()
        await rx.close()
        await smsc.aclose()
