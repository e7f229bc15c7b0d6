"""A dead node's turn of the MQTT send topic (issue 18: no single point of failure).

Two real `smsgw run` nodes on one PostgreSQL and one real mosquitto share the send
topic. One is killed with SIGKILL: mosquitto publishes its last will (`offline`) and
from then on hands that node's session every second send, queued until it returns.
Once the node has stayed away `share_drain_after` seconds, the live node takes those
queued sends from the dead node's session, answers each, and ends the session, so the
sends after it go to the live node alone (`gateway/integrations/mqtt_drain.py`).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiomqtt
import psycopg
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.conftest import CANARY_BODY
from tests.peers.mosquitto import Mosquitto, binary
from tests.pg.node_proc import Node, init_data
from tests.ports import free_port

pytestmark = pytest.mark.skipif(binary("mosquitto") is None, reason="make peers installs it")

WAIT = 30.0
DRAIN_AFTER = 2.0  # long enough to post the sends while the dead node's session holds its turn
REPLIES = "client/replies"


def _config(data: Path, name: str, dsn: str, broker: int) -> tuple[Path, str]:
    port = free_port()
    conf = data / "smsgw.toml"
    conf.write_text(
        f'data_dir = "{data}"\n\n[http]\nlisten = "127.0.0.1:{port}"\nshutdown_grace = 1.0\n\n'
        '[log]\nformat = "json"\nlevel = "info"\n\n'
        '[consent]\nenabled = false\ndefault_purpose = "informational"\n\n'
        f'[mqtt]\nenabled = true\nport = {broker}\ntopic_prefix = "hosp"\nsend_topic = true\n'
        f'send_token_file = "mqtt.token"\nshare_drain_after = {DRAIN_AFTER}\n\n'
        f'[cluster]\nenabled = true\nnode_id = "{name}"\nconninfo = "{dsn}"\n'
        "lease_seconds = 8.0\nmargin_seconds = 2.0\nheartbeat_seconds = 0.5\n\n"
        '[[routes]]\nname = "main"\ntype = "loopback"\nreceipt_delay = 600.0\n'
    )
    return conf, f"http://127.0.0.1:{port}"


async def _publish_sends(client: aiomqtt.Client, tag: str, count: int) -> None:
    for n in range(count):
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = REPLIES
        props.CorrelationData = f"{tag}-{n}".encode()
        body = json.dumps({"to": f"+4915112347{n:03d}", "body": CANARY_BODY}).encode()
        await client.publish("hosp/send", body, qos=1, properties=props)


async def _answers(client: aiomqtt.Client, count: int) -> dict[bytes, str]:
    """Correlation data -> status of the next `count` replies."""
    got: dict[bytes, str] = {}
    async with asyncio.timeout(WAIT):
        async for message in client.messages:
            if str(message.topic) != REPLIES or message.properties is None:
                continue
            got[message.properties.CorrelationData] = dict(message.properties.UserProperty)[
                "status"
            ]
            if len(got) == count:
                return got
    return got


@pytest.mark.timeout(120)
async def test_a_killed_nodes_queued_sends_are_taken_by_the_live_node(
    tmp_path: Path, pg_dsn: str
) -> None:
    broker = Mosquitto(tmp_path / "broker")
    (tmp_path / "broker").mkdir()
    await broker.start()
    names = ["gw1", "gw2"]
    token = await init_data(tmp_path, names)
    nodes: list[Node] = []
    try:
        for name in names:
            (tmp_path / name / "mqtt.token").write_text(token + "\n")
            conf, url = _config(tmp_path / name, name, pg_dsn, broker.port)
            nodes.append(await Node.start(name, conf, url))
        gw1, gw2 = nodes
        client = aiomqtt.Client("127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5)
        async with client:
            await client.subscribe("hosp/status/#", qos=1)
            await client.subscribe(REPLIES, qos=1)
            said: dict[str, bytes] = {}
            async with asyncio.timeout(WAIT):
                async for message in client.messages:
                    said[str(message.topic)] = bytes(message.payload)  # type: ignore[arg-type]
                    if said == {"hosp/status/gw1": b"online", "hosp/status/gw2": b"online"}:
                        break
            gw2.kill()
            async with asyncio.timeout(WAIT):
                async for message in client.messages:
                    if str(message.topic) == "hosp/status/gw2" and message.payload == b"offline":
                        break  # its last will: the broker saw the connection go
            await _publish_sends(client, "while-dead", 6)  # every second one queued for gw2
            answers = await _answers(client, 6)
            assert answers == {f"while-dead-{n}".encode(): "202" for n in range(6)}
            drained = gw1.lines[await gw1.wait_line('"event": "mqtt_share_drained"', WAIT)]
            assert json.loads(drained)["node"] == "gw2" and json.loads(drained)["sends"] >= 1
            # The dead node's session is gone: the next sends go to gw1 alone, at once.
            await _publish_sends(client, "after", 2)
            assert await _answers(client, 2) == {b"after-0": "202", b"after-1": "202"}
        with psycopg.connect(pg_dsn) as conn:
            assert conn.execute("SELECT count(*) FROM messages").fetchone() == (8,)
    finally:
        for node in nodes:
            node.kill()
        for node in nodes:  # reaped, or the next test meets its process as a warning
            await asyncio.wait_for(node.proc.wait(), 30)
        await broker.stop()
