"""Two running `smsgw run` nodes on one PostgreSQL (issue 18): any node lists and counts
the whole shared queue and every node's inbound, each node's audited actions land in
its chain in PostgreSQL and `smsgw audit verify --postgresql` passes while both run,
and a key rotation made from the console is taken up by both running nodes."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from aiohttp import ClientSession

from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from gateway.store import crypto
from tests.conftest import smsgw_process
from tests.http_daemon import TOKEN_RE
from tests.pg.node_proc import Node as _Node
from tests.pg.test_nodes_e2e import _config

WAIT = 60.0


class Node(_Node):
    """A node whose log lines can be waited for."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, url: str) -> None:
        self.logged = asyncio.Event()
        super().__init__(name, proc, url)

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.lines.append(line.decode(errors="replace"))
            if b'"event": "listening"' in line:
                self.listening.set()
            self.logged.set()

    async def logs(self, event: str, count: int = 1) -> None:
        """Wait until this node has logged `event` `count` times."""
        async with asyncio.timeout(WAIT):
            while sum(f'"event": "{event}"' in line for line in self.lines) < count:
                self.logged.clear()
                await self.logged.wait()


async def logged_on_either(nodes: list[Node], event: str, count: int) -> None:
    """Wait until the nodes together have logged `event` `count` times."""
    async with asyncio.timeout(WAIT):
        while sum(f'"event": "{event}"' in line for n in nodes for line in n.lines) < count:
            for n in nodes:
                n.logged.clear()
            waits = [asyncio.ensure_future(n.logged.wait()) for n in nodes]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()


async def console(*args: str) -> str:
    proc = await smsgw_process(*args)
    out, err = await asyncio.wait_for(proc.communicate(), WAIT)
    assert proc.returncode == 0, (out + err).decode()
    return out.decode()


@pytest.mark.timeout(180)
async def test_two_running_nodes_share_reads_audit_and_keys(tmp_path: Path, pg_dsn: str) -> None:
    smsc = SmscSimulator(SimulatorConfig(system_id="smsgw", password="pw", receipt_delay=0.05))
    await smsc.start()
    out = await console("init", "--data-dir", str(tmp_path / "gw1"))
    (token,) = TOKEN_RE.findall(out)
    shutil.copytree(tmp_path / "gw1", tmp_path / "gw2")  # one keyring, one token table
    nodes: list[Node] = []
    try:
        urls = []
        for name in ("gw1", "gw2"):
            conf, url = _config(tmp_path / name, name, pg_dsn, smsc.port)
            beat = "heartbeat_seconds = 0.5\n"
            conf.write_text(conf.read_text().replace(beat, beat + "audit_anchor_seconds = 0.5\n"))
            urls.append(url)
        # A token the console makes in gw1's own store only: gw1 shares it at start.
        out = await console(
            "token", "create", "--scope", "read,admin,phi", "--name", "phi-reader",
            "--config", str(tmp_path / "gw1" / "smsgw.toml"),
        )  # fmt: skip
        (phi_token,) = TOKEN_RE.findall(out)
        for name, url in zip(("gw1", "gw2"), urls, strict=True):
            conf = tmp_path / name / "smsgw.toml"
            nodes.append(Node(name, await smsgw_process("run", "--config", str(conf)), url))
        for node in nodes:
            async with asyncio.timeout(WAIT):
                await node.listening.wait()
        a, b = nodes
        auth = {"Authorization": f"Bearer {token}"}
        async with ClientSession(headers=auth) as http:
            ids = []
            in_ten_days = (datetime.now(UTC) + timedelta(days=10)).isoformat()
            later = {"to": "+12025550102", "body": "later", "send_at": in_ten_days}
            for body in ({"to": "+12025550101", "body": "now"}, later):
                async with http.post(f"{a.url}/api/v1/messages", json=body) as r:
                    assert r.status == 202, await r.text()
                    ids.append((await r.json())["id"])
            # 1. Node B accepted nothing, and lists and counts what A accepted.
            async with http.get(f"{b.url}/api/v1/messages") as r:
                listed = [m["id"] for m in (await r.json())["messages"]]
            assert listed == ids[::-1]
            async with http.get(f"{b.url}/api/v1/messages", params={"status": "scheduled"}) as r:
                assert [m["id"] for m in (await r.json())["messages"]] == [ids[1]]
            async with http.get(f"{b.url}/api/v1/queue") as r:
                queue = await r.json()
            assert queue["scheduled"]["normal"] == 1, queue
            async with http.get(f"{b.url}/api/v1/metrics") as r:
                metrics = await r.text()
            assert 'smsgw_queue_messages{priority="normal",state="scheduled"} 1.0' in metrics
            # 1b. Replies from handsets through the carrier, whichever node's bind takes
            # them (a long one in two parts): both nodes list them, in one order.
            smsc.inject_mo("+12025550104", "4000", "yes")
            smsc.inject_mo("+12025550104", "4000", "see you at nine " * 12, parts=2)
            await logged_on_either(nodes, "inbound_stored", 1)
            await logged_on_either(nodes, "inbound_part", 2)
            pages = []
            for node in nodes:
                async with http.get(f"{node.url}/api/v1/inbound") as r:
                    assert r.status == 200, await r.text()
                    pages.append((await r.json())["inbound"])
            assert pages[0] == pages[1] and len(pages[0]) == 2, pages
            assert {i["sender_masked"] for i in pages[0]} == {"+120••••••04"}
            # 2. Audited actions on each node, in that node's chain; gw1's token on gw2.
            phi = {"Authorization": f"Bearer {phi_token}"}
            url = f"{b.url}/api/v1/messages/{ids[0]}"
            async with http.get(url, params={"include": "phi"}, headers=phi) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["to"] == "+12025550101"
            async with http.delete(f"{b.url}/api/v1/messages/{ids[1]}") as r:
                assert r.status == 200, await r.text()
            for action in ("pause", "resume"):
                async with http.post(f"{a.url}/api/v1/routes/carrier/{action}") as r:
                    assert r.status == 200, await r.text()
            await asyncio.gather(a.logs("audit_copied", 2), b.logs("audit_copied", 2))
            verified = await console(
                "audit", "verify", "--postgresql", pg_dsn,
                "--config", str(tmp_path / "gw1" / "smsgw.toml"),
            )  # fmt: skip
            assert "audit chains intact: 2 nodes" in verified, verified
            # 3. A rotation from the console; both running nodes take it up.
            await console(
                "keys", "rotate", "--postgresql", pg_dsn, "--node-id", "console",
                "--config", str(tmp_path / "gw1" / "smsgw.toml"),
            )  # fmt: skip
            await asyncio.gather(a.logs("keyring_reloaded"), b.logs("keyring_reloaded"))
            new = {"to": "+12025550103", "body": "new"}
            async with http.post(f"{b.url}/api/v1/messages", json=new) as r:
                assert r.status == 202, await r.text()
                ids.append((await r.json())["id"])
            async with http.get(f"{a.url}/api/v1/messages/{ids[0]}") as r:  # re-encrypted
                assert (await r.json())["to_masked"] == "+120••••••01"
            async with http.get(f"{b.url}/api/v1/healthz") as r:
                assert (await r.json())["node"]["key_generation"] == 2
        for node in nodes:
            await node.stop()
        async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
            cur = await conn.execute(
                "SELECT substring(to_ct FROM 1 FOR 3) FROM messages WHERE id = %s", (ids[2],)
            )
            row = await cur.fetchone()
            assert row is not None and bytes(row[0]) == crypto.generation_prefix(2)
            cur = await conn.execute(
                "SELECT node_id, action FROM audit_log WHERE action IN"
                " ('message_cancelled', 'route_paused', 'route_resumed', 'key_rotated',"
                " 'phi_read')"
                " ORDER BY node_id, seq"
            )
            assert await cur.fetchall() == [
                ("console", "key_rotated"),
                ("gw1", "route_paused"),
                ("gw1", "route_resumed"),
                ("gw2", "phi_read"),
                ("gw2", "message_cancelled"),
            ]
    finally:
        for node in nodes:
            if node.proc.returncode is None:
                node.kill()
                await node.proc.wait()
        await smsc.aclose()
