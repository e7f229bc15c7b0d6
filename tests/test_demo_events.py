"""`[demo] peers = true`: the README's "Try events without hardware" walk, run as a new
user would: a real `smsgw run --config` with the README's own config (ports made free),
Debian's mosquitto, and a local receiver that checks signatures with `standardwebhooks`."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
from aiohttp import web
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from standardwebhooks.webhooks import Webhook

from gateway.cli import TRY_EVENTS_HINT, _print_welcome, main
from gateway.config import ConfigError, from_mapping, load
from tests.conftest import smsgw_process
from tests.peers.mosquitto import Mosquitto, binary
from tests.ports import free_port
from tests.test_cli import TOKEN_RE, Daemon
from tests.webhook_rig import new_secret

WAIT = 20.0
README = Path(__file__).resolve().parent.parent / "README.md"
HANDSET, TEXT = "+12025550147", "C-CANARY-REPLY"


def readme_config() -> str:
    """The TOML block of the README's "Try events without hardware" section."""
    section = README.read_text().split("### Try events without hardware", 1)[1]
    found = re.search(r"```toml\n(.*?)```", section, re.S)
    assert found is not None
    return found.group(1)


class Receiver:
    """Webhooks (POST, verified with the reference library) and dlr-url calls (GET)."""

    def __init__(self, secret: str) -> None:
        self.verifier = Webhook(secret)
        self.webhooks: list[dict[str, Any]] = []
        self.dlr_calls: list[dict[str, str]] = []
        self.changed = asyncio.Condition()
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        app.router.add_get("/dlr", self._dlr)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = self.runner.addresses[0][1]

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        event = self.verifier.verify(body, dict(request.headers))  # raises when forged
        async with self.changed:
            self.webhooks.append(event)
            self.changed.notify_all()
        return web.Response(status=204)

    async def _dlr(self, request: web.Request) -> web.Response:
        async with self.changed:
            self.dlr_calls.append(dict(request.query))
            self.changed.notify_all()
        return web.Response(text="ok")

    async def until(self, found: Callable[[], Any]) -> Any:
        async with asyncio.timeout(WAIT), self.changed:
            while not (result := found()):
                await self.changed.wait()
            return result


class Walk:
    def __init__(self, daemon: Daemon, token: str, receiver: Receiver, broker: Mosquitto) -> None:
        self.daemon, self.token, self.receiver, self.broker = daemon, token, receiver, broker
        self.kannel_url = ""


pytestmark = pytest.mark.skipif(binary("mosquitto") is None, reason="make peers installs it")


def set_up(conf: Path, secret: str, capsys: pytest.CaptureFixture[str]) -> str:
    """The README's set-up steps, in process; the first (admin) token."""
    conf_text, data = conf.read_text(), conf.parent
    assert main(["init", "--data-dir", str(data)]) == 0
    (token,) = TOKEN_RE.findall(capsys.readouterr().out)
    assert conf.read_text() == conf_text, "init keeps the file"
    args = ["token", "create", "--scope", "send", "--name", "demo-send", "--config", str(conf)]
    assert main(args) == 0
    (data / "send.token").write_text(capsys.readouterr().out)
    (data / "kannel.password").write_text("demo-password\n")
    (data / "hook.whsec").write_text(secret + "\n")
    for name in ("send.token", "kannel.password", "hook.whsec"):
        (data / name).chmod(0o600)
    return str(token)


@pytest.fixture
async def walk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> AsyncIterator[Walk]:
    (tmp_path / "broker").mkdir()
    broker = Mosquitto(tmp_path / "broker")
    await broker.start()
    secret = new_secret()
    receiver = Receiver(secret)
    await receiver.start()
    data = tmp_path / "demo-data"
    data.mkdir()
    http_port, kannel_port = free_port(), free_port()
    origin = f"http://127.0.0.1:{receiver.port}"
    conf_text = (
        readme_config()
        .replace('data_dir = "demo-data"', f'data_dir = "{data}"')
        .replace("http://127.0.0.1:9000", origin)
        .replace("port = 1883", f"port = {broker.port}")
        .replace('listen = "127.0.0.1:13013"', f'listen = "127.0.0.1:{kannel_port}"')
    )
    conf_text += f'\n[http]\nlisten = "127.0.0.1:{http_port}"\n'
    conf = data / "smsgw.toml"
    conf.write_text(conf_text)
    token = await asyncio.to_thread(set_up, conf, secret, capsys)

    proc = await smsgw_process("run", "--config", str(conf))
    daemon = Daemon(proc, f"http://127.0.0.1:{http_port}")
    try:
        waiting = {"listening", "mqtt_connected", "kannel_listening"}  # in any order
        while waiting:
            seen = await daemon.wait_log(lambda e: e.get("event") in waiting, WAIT)
            waiting.discard(seen["event"])
        w = Walk(daemon, token, receiver, broker)
        w.kannel_url = f"http://127.0.0.1:{kannel_port}/cgi-bin/sendsms"
        yield w
    finally:
        if proc.returncode is None:
            proc.terminate()
            async with asyncio.timeout(WAIT):
                await proc.wait()
        await daemon.finished()
        assert receiver.runner is not None
        await receiver.runner.cleanup()
        await broker.stop()


async def next_json(client: aiomqtt.Client, topic: str) -> tuple[str, dict[str, Any]]:
    """The next message on a topic matching `topic` (a regex), with its JSON payload."""
    async with asyncio.timeout(WAIT):
        async for message in client.messages:
            if re.fullmatch(topic, message.topic.value):
                return message.topic.value, json.loads(bytes(message.payload))
    raise AssertionError("the subscription ended")


async def test_a_demo_reply_reaches_the_webhook_receiver_and_mqtt_with_its_text(
    walk: Walk,
) -> None:
    async with aiomqtt.Client(
        "127.0.0.1", walk.broker.port, protocol=aiomqtt.ProtocolVersion.V5
    ) as sub:
        await sub.subscribe("smsgw/#", qos=1)
        headers = {"Authorization": f"Bearer {walk.token}"}
        async with (
            aiohttp.ClientSession(headers=headers) as http,
            http.post(
                f"{walk.daemon.url}/api/v1/demo/inbound", json={"sender": HANDSET, "body": TEXT}
            ) as r,
        ):
            assert r.status == 202, await r.text()
        topic, published = await next_json(sub, r"smsgw/inbound/[^/]+")
    assert published["type"] == "message.inbound"
    assert published["phi"]["text"] == TEXT and published["phi"]["from"] == HANDSET
    inbound_id = topic.rsplit("/", 1)[1]

    event = await walk.receiver.until(
        lambda: next((e for e in walk.receiver.webhooks if e["type"] == "message.inbound"), None)
    )
    assert event["data"]["inbound_id"] == inbound_id
    assert event["data"]["text"] == TEXT and event["data"]["from"] == HANDSET
    assert event["data"]["route"] == "smsc-sim"


async def test_a_send_over_mqtt_is_answered_on_the_response_topic_and_delivered(
    walk: Walk,
) -> None:
    async with aiomqtt.Client(
        "127.0.0.1", walk.broker.port, protocol=aiomqtt.ProtocolVersion.V5
    ) as client:
        await client.subscribe("client/replies", qos=1)
        await client.subscribe("smsgw/messages/+/status", qos=1)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "client/replies"
        props.CorrelationData = b"req-1"
        payload = json.dumps({"to": "+12025550123", "body": "Reply C to confirm"})
        await client.publish("smsgw/send", payload, qos=1, properties=props)
        async with asyncio.timeout(WAIT):
            async for message in client.messages:
                if message.topic.value == "client/replies":
                    break
        assert message.properties is not None
        assert message.properties.CorrelationData == b"req-1"
        reply = json.loads(bytes(message.payload))
        assert reply["status"] == "queued"
        topic = rf"smsgw/messages/{reply['id']}/status"
        while (await next_json(client, topic))[1]["data"]["state"] != "delivered":
            pass


async def test_a_kannel_script_sends_unchanged_and_its_dlr_url_is_called(walk: Walk) -> None:
    origin = f"http://127.0.0.1:{walk.receiver.port}"
    query = urllib.parse.urlencode(
        {
            "username": "ehr",
            "password": "demo-password",
            "to": "+12025550123",
            "text": "Hello",
            "dlr-mask": "31",
            "dlr-url": f"{origin}/dlr?id=%I&type=%d",
        }
    )
    async with aiohttp.ClientSession() as http, http.get(f"{walk.kannel_url}?{query}") as r:
        assert (r.status, await r.text()) == (202, "0: Accepted for delivery")
    calls = await walk.receiver.until(
        lambda: [c for c in walk.receiver.dlr_calls if c["type"] == "1"]
    )
    assert calls[0]["id"]


def test_demo_peers_default_off_for_a_file_on_for_the_embedded_default(tmp_path: Path) -> None:
    conf = tmp_path / "smsgw.toml"
    conf.write_text("")
    assert not load(conf).demo_peers
    conf.write_text("[demo]\npeers = true\n")
    assert load(conf).demo_peers
    assert load(None).demo_peers


@pytest.mark.parametrize("name", ["smsc-sim", "modems", "demo"])
def test_a_route_named_like_a_demo_peer_route_is_refused_naming_the_key(name: str) -> None:
    raw = {"demo": {"peers": True}, "routes": [{"name": name, "type": "loopback"}]}
    with pytest.raises(ConfigError) as e:
        from_mapping(raw)
    assert str(e.value).startswith(f"demo.peers: the simulated peers add a route named {name!r}")
    assert "routes[0]" in str(e.value)
    from_mapping({**raw, "demo": {"peers": False}})


def test_unknown_demo_key_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"demo\.modems"):
        from_mapping({"demo": {"peers": True, "modems": 3}})


def test_make_run_points_to_the_events_walk(capsys: pytest.CaptureFixture[str]) -> None:
    _print_welcome("127.0.0.1:8080", "smsgw_x")
    assert TRY_EVENTS_HINT in capsys.readouterr().out
    assert '"Try events without hardware"' in TRY_EVENTS_HINT
    assert "### Try events without hardware" in README.read_text()
