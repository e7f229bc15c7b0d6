"""Webhook endpoints against real receivers on loopback: Standard Webhooks signatures
(verified with the reference `standardwebhooks`), PHI only where configured, bad
receivers retried without blocking sends or other endpoints, and `callback_url`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from drivers.base import InboundSms
from drivers.clock import FakeClock
from gateway.config import ConfigError
from gateway.http_app import build_app, runner_options
from gateway.integrations.addresses import AddressRefused, CheckedResolver
from gateway.startup import StartupFault
from gateway.tokens import create_token
from tests import webhook_rig
from tests.conftest import (
    CANARY_BODY,
    CANARY_DIGITS,
    CANARY_NUMBER,
    GatewayFactory,
    accept,
    make_config,
    settle_receipts,
    state_of,
)
from tests.test_outbox import FAST, hook, outbox_rows
from tests.webhook_rig import Dribbler, Receiver, write_secret

receivers = webhook_rig.receivers  # the fixture
ALL = ["message.status", "message.inbound", "route.health"]


async def test_events_are_signed_and_carry_ids_only(
    tmp_path: Path, open_gateway: GatewayFactory, receivers: Any
) -> None:
    path, secret = write_secret(tmp_path, "rx")
    rx: Receiver = await receivers(secret)
    gw = await open_gateway(webhooks=[hook("rx", rx.url, path, events=ALL)], outbox=FAST)
    message_id = await accept(gw, body=CANARY_BODY)
    await gw.scheduler.run_until_idle()
    await gw.sink.inbound("main", InboundSms(sender=CANARY_NUMBER, body=CANARY_BODY))
    await gw.outbox.run_once("webhook:rx")
    assert rx.bad_signatures == 0 and rx.requests == len(rx.events)
    # In order per message; different subjects' events may pass each other (concurrency).
    kinds = sorted(e["body"]["type"] for e in rx.events)
    assert kinds == ["message.inbound", "message.status", "message.status", "route.health"]
    statuses = [e["body"] for e in rx.events if e["body"]["type"] == "message.status"]
    assert [b["data"]["state"] for b in statuses] == ["sending", "sent"]
    status = statuses[0]
    assert status["data"] == {
        "message_id": message_id,
        "state": "sending",
        "route": "main",
        "error_code": None,
        "attempts": 1,
    }
    assert status["timestamp"].endswith("Z")
    ids = {r.id for r in await gw.outbox.repo.after(0, 100)}
    assert {e["id"] for e in rx.events} == ids  # webhook-id is the event's stable id
    raw = json.dumps([e["body"] for e in rx.events])
    assert CANARY_DIGITS not in raw and CANARY_BODY not in raw


async def test_phi_endpoint_gets_numbers_and_texts(
    tmp_path: Path, open_gateway: GatewayFactory, receivers: Any
) -> None:
    path, secret = write_secret(tmp_path, "rx")
    rx: Receiver = await receivers(secret)
    webhooks = [hook("rx", rx.url, path, events=["message.inbound"], phi=True)]
    gw = await open_gateway(webhooks=webhooks, outbox=FAST)
    await gw.sink.inbound("main", InboundSms(sender=CANARY_NUMBER, body=CANARY_BODY))
    await gw.outbox.run_once("webhook:rx")
    (event,) = rx.events
    assert event["body"]["data"]["from"] == CANARY_NUMBER
    assert event["body"]["data"]["text"] == CANARY_BODY
    assert rx.bad_signatures == 0


BAD = {
    "500": "http_500",
    "hang": "timeout",
    "redirect": "redirect_refused",
    "tls": "tls_certificate",
    "dribble": "timeout",
}


@pytest.mark.parametrize("fault", sorted(BAD))
async def test_bad_receiver_is_retried_and_blocks_nothing(
    fault: str,
    tmp_path: Path,
    open_gateway: GatewayFactory,
    receivers: Any,
    clock: FakeClock,
) -> None:
    bad_path, bad_secret = write_secret(tmp_path, "bad")
    good_path, good_secret = write_secret(tmp_path, "good")
    dribbler = None
    if fault == "dribble":
        dribbler = await Dribbler().start()
        bad_url = dribbler.url
    else:
        mode = "ok" if fault == "tls" else fault
        bad = await receivers(bad_secret, mode, tmp_path if fault == "tls" else None)
        bad_url = bad.url
    good: Receiver = await receivers(good_secret)
    webhooks = [
        hook("bad", bad_url, bad_path, phi=True, timeout=0.5),
        hook("good", good.url, good_path),
    ]
    try:
        with capture_logs() as logs:
            gw = await open_gateway(webhooks=webhooks, outbox=FAST)
            first = await accept(gw, body=CANARY_BODY)
            await gw.scheduler.run_until_idle()
            clock.advance(5.0)  # its receipt in, so the lane is the only sleeper
            await settle_receipts(gw)
            stuck = asyncio.create_task(gw.outbox.run_once("webhook:bad"))
            await clock.wait_sleeping(1)  # failed once; waiting out its back-off
            seq = (await outbox_rows(gw, "message.status"))[0].seq
            attempt = await gw.outbox.repo.attempt("webhook:bad", seq)
            assert attempt is not None and attempt.state == "pending"
            assert attempt.reason == BAD[fault]
            # Sends go on, and so does the other endpoint.
            second = await accept(gw, body=CANARY_BODY)
            await gw.scheduler.run_until_idle()
            assert await state_of(gw, second) == "sent"
            await gw.outbox.run_once("webhook:good")
            assert {e["body"]["data"]["message_id"] for e in good.events} == {first, second}
            assert not stuck.done()
            stuck.cancel()
            await asyncio.gather(stuck, return_exceptions=True)
        text = repr(logs)
        assert CANARY_DIGITS not in text and CANARY_BODY not in text
        assert "127.0.0.1" not in text  # no URL in the logs either
        assert any(e.get("reason") == BAD[fault] for e in logs)
    finally:
        if dribbler is not None:
            await dribbler.close()


async def test_https_endpoint_verified_with_its_ca_file(
    tmp_path: Path, open_gateway: GatewayFactory, receivers: Any
) -> None:
    path, secret = write_secret(tmp_path, "rx")
    rx: Receiver = await receivers(secret, "ok", tmp_path)
    webhooks = [hook("rx", rx.url, path, ca_file=str(tmp_path / "rx.crt"))]
    gw = await open_gateway(webhooks=webhooks, outbox=FAST)
    await gw.store.cancel(await accept(gw), gw.clock.time())
    await gw.outbox.run_once("webhook:rx")
    assert [e["body"]["data"]["state"] for e in rx.events] == ["cancelled"]


async def test_callback_url_gets_its_message_status_at_an_endpoint_origin(
    tmp_path: Path, open_gateway: GatewayFactory, receivers: Any
) -> None:
    path, secret = write_secret(tmp_path, "rx")
    rx: Receiver = await receivers(secret)
    # The endpoint itself takes no status events: only the callbacks do.
    gw = await open_gateway(
        webhooks=[hook("rx", rx.url, path, events=["route.health"])], outbox=FAST
    )
    origin = rx.url.removesuffix("/hook")
    asked = await accept(gw, callback_url=f"{origin}/callbacks/ehr?visit=7")
    await accept(gw)  # no callback: nothing for it
    await gw.scheduler.run_until_idle()
    await gw.outbox.run_once("callback:rx")
    assert [(e["path"], e["body"]["data"]["state"]) for e in rx.events] == [
        ("/callbacks/ehr", "sending"),
        ("/callbacks/ehr", "sent"),
    ]
    assert {e["body"]["data"]["message_id"] for e in rx.events} == {asked}
    assert rx.bad_signatures == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:9/elsewhere",  # another port of the same host
        "https://127.0.0.1:{port}/hook",  # another scheme
        "http://user:pw@127.0.0.1:{port}/hook",
        "http://ehr.example/hook",
    ],
)
async def test_callback_url_elsewhere_is_refused_at_accept(
    url: str, tmp_path: Path, open_gateway: GatewayFactory, receivers: Any
) -> None:
    path, secret = write_secret(tmp_path, "rx")
    rx: Receiver = await receivers(secret)
    gw = await open_gateway(webhooks=[hook("rx", rx.url, path)], outbox=FAST)
    token = await create_token(gw.store, "t", frozenset({"send", "read"}), gw.clock)
    server = TestServer(build_app(gw))
    await server.start_server(**runner_options(gw))
    client = TestClient(server)
    await client.start_server()
    callback = url.format(port=rx.port)
    try:
        resp = await client.post(
            "/api/v1/messages",
            json={"to": CANARY_NUMBER, "body": "hi", "callback_url": callback},
            headers={"Authorization": f"Bearer {token.text}"},
        )
        assert resp.status == 422
        body = await resp.json()
        assert body["error"]["code"] == "callback_not_allowed"
        assert body["error"]["field"] == "callback_url"
        assert callback not in json.dumps(body) and "169.254" not in json.dumps(body)
        count = await gw.store.reader.one("SELECT count(*) FROM messages")
        assert count is not None and count[0] == 0
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("url", "extra", "problem"),
    [
        ("http://169.254.169.254/", {}, "link-local"),
        ("http://[fd00:ec2::254]/", {}, "metadata"),
        ("http://[fe80::1]/", {}, "link-local"),
        ("http://127.0.0.1:8/", {"allow_loopback": False}, "loopback"),
        ("http://localhost:8/", {"allow_loopback": False}, "loopback"),
        ("http://10.1.2.3/", {"allow_plain_http": False}, "plain http"),
        ("ftp://10.1.2.3/", {}, "http:// or https://"),
        ("https://u:p@10.1.2.3/", {}, "credentials"),
    ],
)
def test_endpoint_addresses_refused_at_load(
    url: str, extra: dict[str, Any], problem: str, tmp_path: Path
) -> None:
    bad = {**hook("x", url, tmp_path / "s"), **extra}
    with pytest.raises(ConfigError) as e:
        make_config(tmp_path, webhooks=[bad])
    assert str(e.value).startswith("webhooks[0].url:") and problem in str(e.value)


def test_endpoint_secret_and_events_checked_at_load(tmp_path: Path) -> None:
    good = hook("x", "https://10.1.2.3/", tmp_path / "s")
    with pytest.raises(ConfigError, match=r"^webhooks\[0\]\.secret_file:"):
        make_config(tmp_path, webhooks=[{**good, "secret_file": None}])
    with pytest.raises(ConfigError, match=r"^webhooks\[1\]\.name: duplicate"):
        make_config(tmp_path, webhooks=[good, good])
    with pytest.raises(ConfigError, match=r"webhooks\[0\]\.events"):
        make_config(tmp_path, webhooks=[{**good, "events": ["message.sent"]}])


async def test_names_resolving_to_refused_addresses_are_not_connected() -> None:
    with pytest.raises(AddressRefused):
        await CheckedResolver(loopback=False).resolve("localhost", 80)
    allowed = await CheckedResolver(loopback=True).resolve("localhost", 80)
    assert allowed and all(a["host"] in ("127.0.0.1", "::1") for a in allowed)


async def test_bad_secret_stops_start_naming_the_endpoint(
    tmp_path: Path, open_gateway: GatewayFactory
) -> None:
    secret = tmp_path / "weak.whsec"
    secret.write_text("whsec_c2hvcnQ=\n")
    with pytest.raises(StartupFault, match=r"webhooks\[0\] \(rx\): secret"):
        await open_gateway(webhooks=[hook("rx", "http://127.0.0.1:9/", secret)])
