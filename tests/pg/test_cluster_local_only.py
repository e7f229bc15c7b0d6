"""Issue 18: what a cluster node would keep in its own SQLite, refused or shared.

Two gateways on one PostgreSQL (one keyring: the first's data directory copied), each
serving its API and panel on loopback. The features whose data would stay in one
node's store answer 501 `not_on_cluster` (API) or show the notice (panel); the
analytics read on B count what A sent, blocked and B's redirect recorded, from the
shared tables; the dashboard's break-glass count is every node's.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from drivers.base import InboundSms
from drivers.clock import FakeClock
from gateway.app import Gateway
from gateway.cluster.node import ClusterNode
from gateway.config import from_mapping
from gateway.http_app import build_app, runner_options
from gateway.ops.registry import run_in
from gateway.panel_users import Role
from gateway.store import crypto
from gateway.tokens import create_token
from gateway.usecases.consent import DecisionRequest
from tests.admin_support import PanelClient
from tests.conftest import CANARY_NUMBER, FAST_PASSWORD_HASH, LOOPBACK_TEST, settle_receipts
from tests.pg.test_consent_cluster import CAPS, OTHER
from tests.test_api import Api, _error
from tests.test_consent_inbound import SHORT_CODE
from tests.test_consent_policy import caller
from tests.test_links import FLU, IPHONE, LINKS, URL


def _config(data: Path, name: str, dsn: str) -> Any:
    data.mkdir(exist_ok=True)
    return from_mapping(
        {
            "data_dir": str(data),
            "routes": [{"name": "main", "type": "loopback", **LOOPBACK_TEST}],
            "http": {"shutdown_grace": 1.0},
            "admin": FAST_PASSWORD_HASH,
            "consent": CAPS,
            "links": LINKS,
            "analytics": {"time_zone": "UTC"},
            "source": str(data / "smsgw.toml"),
            # A fake clock never renews the lease: long enough for any test here.
            "cluster": {"enabled": True, "node_id": name, "conninfo": dsn, "lease_seconds": 600},
        }
    )


@dataclass
class Node:
    api: Api
    panel: PanelClient

    @property
    def gw(self) -> Gateway:
        return self.api.gw

    @property
    def cluster(self) -> ClusterNode:
        assert self.gw.cluster is not None
        return self.gw.cluster


@pytest.fixture
async def nodes(tmp_path: Path, clock: FakeClock, pg_dsn: str) -> AsyncIterator[tuple[Node, Node]]:
    gateways: list[Gateway] = []
    clients: list[TestClient[Any, Any]] = []
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
            server = TestServer(build_app(gw))
            await server.start_server(**runner_options(gw))
            client = TestClient(server)
            await client.start_server()
            clients.append(client)
            scopes = frozenset({"admin", "send", "read", "consent"})
            token = await create_token(gw.store, name, scopes, clock)
            await gw.cluster.tokens.copy_local(gw.store.reader)  # type: ignore[union-attr]
            found.append(Node(Api(gw, client, token.text), PanelClient(gw, client)))
        yield found[0], found[1]
    finally:
        for client in clients:
            await client.close()
        for gw in gateways:
            if not gw.stopped:
                await gw.stop()


LOCAL_ONLY_API: tuple[tuple[str, str], ...] = ()  # HL7 write-back, the last, is shared
LOCAL_ONLY_PAGES: tuple[str, ...] = ()


async def test_node_local_features_are_refused_and_break_glass_counts_every_node(
    nodes: tuple[Node, Node],
) -> None:
    a, b = nodes
    for method, path in LOCAL_ONLY_API:
        r = await b.api.client.request(method, path, json={}, headers=b.api.auth())
        error = await _error(r, 501, "not_on_cluster")
        assert "docs/ops/cluster.md" in error["message"] and "not on a cluster" in error["message"]
        r = await a.api.client.request(method, path)  # the token is checked first
        await _error(r, 401, "unauthenticated")

    document = await (await b.api.get("/api/v1/openapi.json")).json()
    assert "501" not in document["paths"]["/api/v1/hl7/outbound"]["get"]["responses"]
    assert "501" not in document["paths"]["/api/v1/replies"]["get"]["responses"]
    assert "501" not in document["paths"]["/api/v1/surveys"]["get"]["responses"]
    assert "501" not in document["paths"]["/api/v1/links"]["get"]["responses"]

    await a.panel.add_user("olga", Role.OPERATOR)
    await b.panel.login_ok("olga")  # a user made on A signs in on B (shared)
    for path in LOCAL_ONLY_PAGES:
        r = await b.panel.client.get(path, headers={"Accept": "text/html"})
        text = await r.text()
        assert r.status == 501 and "not_on_cluster" in text, (path, text[:300])
        assert "docs/ops/cluster.md" in text
    for path in ("/analytics", "/hl7", "/worklist"):  # shared: served
        r = await b.panel.client.get(path, headers={"Accept": "text/html"})
        assert r.status == 200, path
    r = await b.api.get("/api/v1/hl7/messages")  # the shared log (tests/pg/test_hl7_cluster.py)
    assert r.status == 200 and (await r.json())["messages"] == []
    r = await b.api.get("/api/v1/hl7/outbound")  # the shared write-back queue (migration 23)
    assert r.status == 200
    r = await b.api.get("/api/v1/replies")  # the shared replies (test_replies_cluster.py)
    assert r.status == 200 and (await r.json())["items"] == []

    # The dashboard's break-glass sign-ins: every node's.
    since = a.gw.clock.time() - 1
    await a.gw.audit.record("user:u1", "break_glass_login", "user", "u1")
    await b.gw.audit.record("user:u2", "break_glass_login", "user", "u2")
    assert (await b.gw.admin_repo.audit_uses("break_glass_login", since))[0] == 1  # its own
    await a.cluster.shipper.ship()  # A's heartbeat copies its entries up
    count, last = await b.gw.admin_repo.audit_uses("break_glass_login", since)
    assert count == 2 and last is not None
    assert (await a.gw.admin_repo.audit_uses("break_glass_login", since))[0] == 1  # B's not copied


async def test_analytics_read_on_b_count_what_a_sent_blocked_and_b_saw_clicked(
    nodes: tuple[Node, Node], clock: FakeClock
) -> None:
    a, b = nodes
    await a.gw.usecases.consent.record(
        await caller(a.gw, "consent", "phi"),
        DecisionRequest(OTHER, "opt_out", "api", "all"),  # type: ignore[arg-type]
    )
    r = await a.api.client.put(
        "/api/v1/contacts",
        json={"number": CANARY_NUMBER, "language": "en"},
        headers=a.api.auth(),
    )
    assert r.status == 200, await r.text()
    async with a.cluster.queue.pool.connection() as conn:  # an attribute store migrate copies
        await conn.execute("UPDATE contacts SET clinic = 'north'")
    r = await a.api.post("/api/v1/links", {"name": "flu", "destination": FLU})
    assert r.status == 201, await r.text()
    sent: list[str] = []
    for body in ("one", "two {link:flu}", "x" * 200):  # the last in two parts
        r = await a.api.post(
            "/api/v1/messages", {"to": CANARY_NUMBER, "body": body, "purpose": "informational"}
        )
        assert r.status == 202, await r.text()
        sent.append((await r.json())["id"])
    r = await a.api.post(
        "/api/v1/messages", {"to": OTHER, "body": "no", "purpose": "informational"}
    )
    assert (await r.json())["reason"] == "opted_out"

    await a.gw.scheduler.run_until_idle()
    clock.advance(LOOPBACK_TEST["receipt_delay"])
    await settle_receipts(a.gw)
    stored = await a.cluster.queue.message(sent[1])
    assert stored is not None and stored.state == "delivered"
    found = URL.search(stored.body.open())
    assert found is not None
    await b.gw.links.follow(found.group(1), "GET", {"User-Agent": IPHONE})  # on B
    await b.gw.links.follow(found.group(1), "GET", {"User-Agent": IPHONE})
    # Replies reach B: one counts as a reply to A's last message, a STOP as its opt-out.
    await b.gw.sink.inbound("main", InboundSms(CANARY_NUMBER, "Thanks, see you", SHORT_CODE))
    await b.gw.sink.inbound("main", InboundSms(CANARY_NUMBER, "STOP", SHORT_CODE))

    assert await b.gw.analytics.refresh() == 1  # B's round: today, from every node's rows
    assert await a.gw.analytics.refresh() == 0  # nothing new since: nothing to do
    summary = await (await b.api.get("/api/v1/analytics/summary")).json()
    f = summary["figures"]
    assert (f["sent"], f["delivered"], f["parts"]) == (3, 3, 4), f
    assert (f["blocked"], f["blocked_by_reason"]) == (1, {"opted_out": 1})
    assert (f["clicks"], f["clicked"]) == (2, 1)
    assert (f["replied_other"], f["opted_out"]) == (1, 1)
    assert f["latency_histogram"]["<=5s"] == 3 and f["latency_p50_s"] == 5.0
    purposes = await (await b.api.get("/api/v1/analytics/purposes")).json()
    by_key = {row["key"]: row["figures"] for row in purposes["rows"]}
    assert by_key["informational"]["sent"] == 3 and by_key["informational"]["blocked"] == 1
    assert by_key["informational"]["replied_other"] == by_key["informational"]["opted_out"] == 1
    clinics = await (await b.api.get("/api/v1/analytics/clinics")).json()
    assert [(r["key"], r["figures"]["sent"]) for r in clinics["rows"]] == [("north", 3)]
    routes = await (await b.api.get("/api/v1/analytics/routes")).json()
    assert [(r["key"], r["figures"]["parts"]) for r in routes["rows"]] == [("main", 4)]
    series = await (await a.api.get("/api/v1/analytics/timeseries")).json()
    assert sum(d["figures"]["sent"] for d in series["days"]) == 3  # A reads the same

    async def console(gateway: Gateway | None) -> tuple[int, list[str]]:
        lines: list[str] = []
        status = await run_in(
            b.gw.config, b.gw.store, b.gw.store.master_key, "analytics.report", {},
            actor="console", out=lines.append, err=lines.append, clock=clock, gateway=gateway,
        )  # fmt: skip
        return status, lines

    status, lines = await console(b.gw)  # through the running node: the shared figures
    assert status == 0 and lines[-1].split()[:2] == ["total", "3"], lines
    status, lines = await console(None)  # offline: this node's store is not the cluster's
    assert status == 2 and "shared PostgreSQL" in lines[0], lines
