"""The panel's webhooks page: endpoints, deliveries, dead letters, audited redelivery."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from drivers.clock import FakeClock
from gateway.http_app import build_app, runner_options
from gateway.panel_users import Role
from gateway.store import outbox_sql
from tests import webhook_rig
from tests.admin_support import PanelClient
from tests.conftest import FAST_PASSWORD_HASH, GatewayFactory, accept
from tests.test_outbox import FAST, drive, hook
from tests.webhook_rig import Receiver, write_secret

receivers = webhook_rig.receivers  # the fixture


async def test_dead_letter_shown_and_redelivered_from_the_panel(
    tmp_path: Path, open_gateway: GatewayFactory, receivers: Any, clock: FakeClock
) -> None:
    path, secret = write_secret(tmp_path, "rx")
    rx: Receiver = await receivers(secret, "500")
    webhooks = [hook("ehr", rx.url + "?key=route-secret", path)]
    gw = await open_gateway(webhooks=webhooks, outbox=FAST, admin=FAST_PASSWORD_HASH)
    await gw.store.cancel(await accept(gw), clock.time())
    await drive(clock, asyncio.create_task(gw.outbox.run_once("webhook:ehr")))
    (dead,) = await gw.outbox.repo.recent(10, state=outbox_sql.DEAD)
    server = TestServer(build_app(gw))
    await server.start_server(**runner_options(gw))
    client = TestClient(server)
    await client.start_server()
    try:
        ui = PanelClient(gw, client)
        await ui.add_user("boss", Role.ADMIN)
        token = await ui.login_ok("boss")
        page = await (await client.get("/webhooks")).text()
        assert "ehr" in page and f"http://127.0.0.1:{rx.port}" in page
        assert "route-secret" not in page  # origins only
        assert dead.event_id is not None and dead.event_id in page and "http_500" in page
        form = {"consumer": "webhook:ehr", "seq": str(dead.seq)}
        assert (await ui.post("/webhooks/redeliver", form)).status == 403  # no CSRF token
        rx.mode = "ok"
        r = await ui.post("/webhooks/redeliver", form, token=token)
        assert r.status == 303 and r.headers["Location"] == "/webhooks?redelivered=1"
        again = await ui.post("/webhooks/redeliver", form, token=token)
        assert again.headers["Location"] == "/webhooks?redelivered=0"  # queued once
        await gw.outbox.run_once("webhook:ehr")
        assert [e["id"] for e in rx.events] == [dead.event_id]
        assert (await ui.audit_actions()).count("webhook_redelivered") == 1
        page = await (await client.get("/webhooks")).text()
        assert "No dead letters." in page and "delivered" in page
    finally:
        await client.close()


async def test_webhooks_page_is_for_admins_only(panel: PanelClient) -> None:
    for role in (Role.OPERATOR, Role.VIEWER, Role.AUDITOR):
        await panel.add_user(role.value, role)
        await panel.login_ok(role.value)
        r = await panel.client.get("/webhooks", allow_redirects=False)
        assert r.status == 403, role
    await panel.add_user("boss", Role.ADMIN)
    await panel.login_ok("boss")
    page = await (await panel.client.get("/webhooks")).text()
    assert "No endpoint is configured" in page
