"""Issue 18, tracked links on a cluster: two gateways on one PostgreSQL (one keyring:
the first's data directory copied, the send policy on), each with its API and its
redirect listener on loopback. A link made on A, a send on A with `{link:NAME}`: its
token is written with the message in PostgreSQL, the short URL followed on B
redirects to the stored destination and is recorded once (as B's), A's link analytics
count it; B, started before the link existed, expands it in a send of its own.
Housekeeping on B forgets tokens expired everywhere; an erasure on B ends the number's
short links on every node."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from drivers.clock import FakeClock
from gateway.app import Gateway
from gateway.cluster.node import ClusterNode
from gateway.config import from_mapping
from gateway.links import server as links_server
from gateway.links import tokens
from gateway.store import crypto
from gateway.tokens import create_token
from tests.conftest import CANARY_NUMBER, LOOPBACK_TEST
from tests.pg.test_consent_cluster import CAPS
from tests.test_api import Api, start_client
from tests.test_links import FLU, IPHONE, LINKS, URL


def _config(data: Path, name: str, dsn: str) -> Any:
    data.mkdir(exist_ok=True)
    return from_mapping(
        {
            "data_dir": str(data),
            "routes": [{"name": "main", "type": "loopback", **LOOPBACK_TEST}],
            "http": {"shutdown_grace": 1.0},
            "consent": CAPS,  # the policy's accept (cluster/consent_accept.py) writes the tokens
            "links": LINKS,
            "source": str(data / "smsgw.toml"),
            # A fake clock never renews the lease: long enough for any test here.
            "cluster": {"enabled": True, "node_id": name, "conninfo": dsn, "lease_seconds": 600},
        }
    )


@dataclass
class Node:
    api: Api
    redirect: str  # its redirect listener's base URL

    @property
    def gw(self) -> Gateway:
        return self.api.gw

    @property
    def cluster(self) -> ClusterNode:
        assert self.gw.cluster is not None
        return self.gw.cluster

    async def send(self, body: str) -> tuple[str, str]:
        """A send through this node's API: (message id, the body as stored)."""
        r = await self.api.post(
            "/api/v1/messages", {"to": CANARY_NUMBER, "body": body, "purpose": "informational"}
        )
        assert r.status == 202, await r.text()
        message_id = (await r.json())["id"]
        stored = await self.cluster.queue.message(message_id)
        assert stored is not None
        return message_id, stored.body.open()

    async def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        async with self.cluster.queue.pool.connection() as conn:
            rows = await (await conn.execute(sql.encode(), args)).fetchall()
        return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]


@pytest.fixture
async def nodes(
    tmp_path: Path, clock: FakeClock, pg_dsn: str
) -> AsyncIterator[tuple[Node, Node, ClientSession]]:
    gateways: list[Gateway] = []
    closing: list[Any] = []
    first = tmp_path / "gw1"
    try:
        found: list[Node] = []
        for name in ("gw1", "gw2"):
            config = _config(tmp_path / name, name, pg_dsn)
            if name == "gw1":
                crypto.generate_master_key(config.master_key_path)
            else:
                shutil.copytree(first, tmp_path / name, dirs_exist_ok=True)
            gw = await Gateway.open(config, clock)
            gateways.append(gw)
            await gw.start(dispatch=False)
            client = await start_client(gw)
            closing.append(client)
            server = TestServer(links_server.build_app(gw), host="127.0.0.1", port=0)
            await server.start_server()
            closing.append(server)
            token = await create_token(gw.store, name, frozenset({"admin", "send"}), clock)
            await gw.cluster.tokens.copy_local(gw.store.reader)  # type: ignore[union-attr]
            found.append(Node(Api(gw, client, token.text), f"http://127.0.0.1:{server.port}"))
        async with ClientSession() as http:
            yield found[0], found[1], http
    finally:
        for c in closing:
            await c.close()
        for gw in gateways:
            if not gw.stopped:
                await gw.stop()


def _token(body: str) -> str:
    found = URL.search(body)
    assert found is not None
    return found.group(1)


async def test_a_link_sent_on_a_redirects_on_b_once_and_a_counts_it(
    nodes: tuple[Node, Node, ClientSession], clock: FakeClock
) -> None:
    a, b, http = nodes
    assert a.gw.intake.policy.enabled  # accepts are judged in their transaction
    r = await a.api.post("/api/v1/links", {"name": "flu-clinic", "destination": FLU})
    assert r.status == 201, await r.text()
    made = await r.json()
    message_id, stored = await a.send("Flu shots this week: {link:flu-clinic}")
    token = _token(stored)
    assert await a.rows("SELECT link_id, message_id FROM link_tokens") == [(made["id"], message_id)]

    async def follow(method: str, **headers: str) -> Any:
        return await http.request(
            method, f"{b.redirect}/{token}", headers=headers, allow_redirects=False
        )

    r = await follow("GET", **{"User-Agent": IPHONE})
    assert r.status == 302 and r.headers["Location"] == FLU
    r = await follow("HEAD", **{"User-Agent": IPHONE})
    assert r.status == 302
    clicks = "SELECT link_id, message_id, human, agent_class, node_id FROM link_clicks ORDER BY seq"
    assert await a.rows(clicks) == [
        (made["id"], message_id, 1, "human", "gw2"),
        (made["id"], message_id, 0, "head", "gw2"),
    ]
    one = await (await a.api.get(f"/api/v1/links/{made['id']}")).json()
    assert one["clicks"] == {"human": 1, "bots": 1, "people": 1}
    assert one["by_class"]["human"] == 1 and one["by_class"]["head"] == 1
    listed = await (await b.api.get("/api/v1/links")).json()
    assert [x["clicks"] for x in listed["links"]] == [{"human": 1, "bots": 1, "people": 1}]

    # B loaded its links before this one was made: its send reads them again.
    other_id, other = await b.send("Again: {link:flu-clinic}")
    assert _token(other) != token
    assert (await http.get(f"{a.redirect}/{_token(other)}", allow_redirects=False)).status == 302
    r = await b.api.post(
        "/api/v1/messages", {"to": CANARY_NUMBER, "body": "{link:nope}", "purpose": "informational"}
    )
    assert r.status == 422 and (await r.json())["error"]["code"] == "unknown_link"
    # One name across the nodes.
    r = await b.api.post("/api/v1/links", {"name": "flu-clinic", "destination": FLU})
    assert r.status == 409 and (await r.json())["error"]["code"] == "name_taken"

    # Housekeeping on either node forgets the tokens expired everywhere.
    clock.advance(89 * 86400.0)
    _, new = await a.send("{link:flu-clinic}")
    clock.advance(2 * 86400.0)
    await b.gw.links.prune()
    kept = await a.rows("SELECT token_hash, message_id FROM link_tokens")
    assert [k[0] for k in kept] == [tokens.token_hash(_token(new))] and other_id not in kept[0]
    assert (await http.get(f"{b.redirect}/{token}", allow_redirects=False)).status == 410

    # An erasure on B ends the number's short links on every node; the clicks stay.
    assert (await http.get(f"{a.redirect}/{_token(new)}", allow_redirects=False)).status == 302
    r = await b.api.post("/api/v1/erasures", {"number": CANARY_NUMBER})
    assert r.status == 200, await r.text()
    assert await a.rows("SELECT * FROM link_tokens") == []
    assert (await http.get(f"{a.redirect}/{_token(new)}", allow_redirects=False)).status == 410
    assert len(await a.rows(clicks)) == 4
