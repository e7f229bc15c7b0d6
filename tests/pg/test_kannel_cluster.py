"""Issue 18 pt 1: the Kannel-compatible listener on a two-node cluster.

Two gateways on one PostgreSQL (one keyring: the first's data directory copied), each
with its own sendsms listener, one Kannel user whose API token was made on A. A
sendsms with a dlr-url to A and another to B are both accepted into the shared queue
with their dlr-url rows (sealed), sent by the node holding each (loopback route, its
receipts), and B's dlr-url lane of the shared outbox calls each URL once per report
the mask asks for, with Kannel's substitutions, on a real local HTTP receiver.
Erasing A's number on B removes its dlr-url row too.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from drivers.clock import FakeClock
from gateway.app import Gateway
from gateway.cluster.node import ClusterNode
from gateway.config import from_mapping
from gateway.integrations import kannel_server
from gateway.integrations.kannel_dlr import CONSUMER_NAME
from gateway.store import crypto
from gateway.store.store import Store
from gateway.tokens import create_token
from tests.conftest import (
    CANARY_DIGITS,
    CANARY_NUMBER,
    LOOPBACK_TEST,
    TEST_CONSENT,
    settle_receipts,
)
from tests.peers.kannel_peer import PASSWORD, USERNAME
from tests.pg.test_erasure_cluster import _erase_by_api, _rows
from tests.test_api import start_client
from tests.test_kannel import q
from tests.test_kannel_dlr import (
    PATTERN,
    SECRET_QUERY,
    Receiver,
    receiver,  # noqa: F401
)

OTHER = "+12025550199"


def _config(data: Path, name: str, dsn: str, origin: str) -> Any:
    data.mkdir(exist_ok=True)
    user = {"username": USERNAME, "password_file": "kannel.pw", "token_file": "kannel.token"}
    return from_mapping(
        {
            "data_dir": str(data),
            "routes": [{"name": "main", "type": "loopback", **LOOPBACK_TEST}],
            "http": {"shutdown_grace": 1.0},
            "kannel": {"enabled": True, "users": [user], "dlr_url_origins": [origin]},
            "consent": TEST_CONSENT,  # the send policy at accept, in its transaction
            "source": str(data / "smsgw.toml"),
            # A fake clock never renews the lease: long enough for any test here.
            "cluster": {"enabled": True, "node_id": name, "conninfo": dsn, "lease_seconds": 600},
        }
    )


@dataclass
class Node:
    gw: Gateway
    listener: TestServer
    origin: str  # the dlr-url receiver's

    @property
    def cluster(self) -> ClusterNode:
        assert self.gw.cluster is not None
        return self.gw.cluster

    async def sendsms(self, to: str) -> tuple[int, str]:
        query = q(to=to, text="hi", dlr_mask="9", dlr_url=self.origin + PATTERN)
        url = f"http://127.0.0.1:{self.listener.port}/cgi-bin/sendsms?{query}"
        async with aiohttp.ClientSession() as session, session.get(url) as r:
            return r.status, await r.text()


@dataclass
class Pair:
    a: Node
    b: Node
    api_b: TestClient[Any, Any]


@pytest.fixture
async def pair(
    tmp_path: Path,
    clock: FakeClock,
    pg_dsn: str,
    receiver: Receiver,  # noqa: F811 - the fixture
) -> AsyncIterator[Pair]:
    opened: list[Gateway] = []
    servers: list[TestServer] = []
    clients: list[TestClient[Any, Any]] = []
    first = tmp_path / "gw1"
    try:
        for name in ("gw1", "gw2"):
            data = tmp_path / name
            if name == "gw1":
                config = _config(first, name, pg_dsn, receiver.origin)
                crypto.generate_master_key(config.master_key_path)
                store = Store(config.db_path, crypto.read_master_key(config.master_key_path))
                await store.open()
                token = await create_token(store, "kannel", frozenset({"send"}), clock)
                await store.close()
                (first / "kannel.pw").write_text(PASSWORD + "\n")
                (first / "kannel.token").write_text(token.text + "\n")
            else:  # one keyring for every node: the first's data directory copied
                shutil.copytree(first, data)
                config = _config(data, name, pg_dsn, receiver.origin)
            gw = await Gateway.open(config, clock)  # A copies its token up as it opens
            opened.append(gw)
            await gw.start(dispatch=False)
            server = TestServer(kannel_server.build_app(gw), host="127.0.0.1", port=0)
            await server.start_server()
            servers.append(server)
        clients.append(await start_client(opened[1]))
        a, b = (Node(gw, s, receiver.origin) for gw, s in zip(opened, servers, strict=True))
        yield Pair(a, b, clients[0])
    finally:
        for client in clients:
            await client.close()
        for server in servers:
            await server.close()
        for gw in opened:
            if not gw.stopped:
                await gw.stop()


async def test_sendsms_on_either_node_is_reported_once_to_its_dlr_url(
    pair: Pair,
    clock: FakeClock,
    receiver: Receiver,  # noqa: F811 - the fixture
) -> None:
    a, b = pair.a, pair.b
    assert await a.sendsms(CANARY_NUMBER) == (202, "0: Accepted for delivery")
    assert await b.sendsms(OTHER) == (202, "0: Accepted for delivery")  # A's token, on B
    wishes = await _rows(b.gw, "SELECT message_id, url_ct, receiver_ct FROM kannel_dlr")
    assert len(wishes) == 2
    for _, url_ct, receiver_ct in wishes:  # sealed, as SQLite seals them
        assert SECRET_QUERY.encode() not in url_ct and CANARY_DIGITS.encode() not in receiver_ct
    ids = {
        to: str(r[0])
        for to in (CANARY_NUMBER, OTHER)
        for r in await _rows(b.gw, "SELECT id FROM messages WHERE to_index = %s", _index(b, to))
    }

    for node in (a, b):  # each sends what it accepted (its scheduler holds the row)
        await node.gw.scheduler.run_until_idle()
    clock.advance(LOOPBACK_TEST["receipt_delay"])
    for node in (a, b):
        await settle_receipts(node.gw)
    for mid in ids.values():
        stored = await a.cluster.queue.message(mid)
        assert stored is not None and stored.state == "delivered"

    await b.gw.outbox.run_once(CONSUMER_NAME)  # B leads the lane: A's message too
    await b.gw.outbox.run_once(CONSUMER_NAME)  # nothing new: nothing called again
    by_message = {mid: [c for c in receiver.calls if c["id"] == mid] for mid in ids.values()}
    assert len(receiver.calls) == 4
    for to, mid in ids.items():
        (sent, delivered) = by_message[mid]
        (fid,) = await _rows(b.gw, "SELECT carrier_id FROM carrier_ids WHERE message_id = %s", mid)
        assert sent == {
            "type": "8",
            "answer": "ACK/",
            "id": mid,
            "smsc": "main",
            "to": to,
            "from": "",
            "user": USERNAME,
            "t": sent["t"],
            "fid": fid[0],
            "pct": "%",
            "keep": "%Z",
            "ref": SECRET_QUERY,
        }
        assert (delivered["type"], delivered["answer"], delivered["fid"]) == (
            "1",
            "DELIVRD",
            fid[0],
        )

    counts = await _erase_by_api(b.gw, pair.api_b, CANARY_NUMBER)
    assert counts["shared_kannel_dlr"] == 1
    left = await _rows(b.gw, "SELECT message_id FROM kannel_dlr")
    assert left == [(ids[OTHER],)]


def _index(node: Node, number: str) -> bytes:
    return node.cluster.queue.blind_index(number)
