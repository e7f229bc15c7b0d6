"""`smsgw demo-cluster` (`make cluster-demo`) as a newcomer runs it: one command, then
a send to each node, both delivered by the simulated carrier, both nodes listed by
`GET /api/v1/cluster`, and Ctrl-C (SIGINT) stops it all: the carrier's record printed,
no node, PostgreSQL or temporary directory left behind.

It starts its own PostgreSQL (not the suite's): the one skip is PostgreSQL missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
from pathlib import Path

import aiohttp
import psycopg
import pytest

from tests.admin_support import _CSRF_META
from tests.conftest import smsgw_process
from tests.pg_server import SKIP_REASON, find_bindir
from tests.ports import free_port

pytestmark = pytest.mark.skipif(find_bindir() is None, reason=SKIP_REASON)


class _Output:
    """The demo's stdout, read as it comes; `tick` waits for a line or `limit` seconds."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc, self.text = proc, ""
        self.grew = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            async with self.grew:
                self.text += line.decode(errors="replace")
                self.grew.notify_all()

    async def wait_for(self, pattern: str, limit: float) -> re.Match[str]:
        async with self.grew:
            await asyncio.wait_for(
                self.grew.wait_for(lambda: re.search(pattern, self.text, re.M) is not None),
                limit,
            )
        found = re.search(pattern, self.text, re.M)
        assert found is not None
        return found

    async def tick(self, limit: float) -> None:
        async with self.grew:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.grew.wait(), limit)

    async def done(self) -> None:
        await self._reader


async def _state(http: aiohttp.ClientSession, url: str, auth: dict[str, str]) -> str:
    async with http.get(url, headers=auth) as r:
        assert r.status == 200, await r.text()
        state: str = (await r.json())["status"]
        return state


async def _panel_sign_in(origin: str, password: str) -> None:
    """The printed first sign-in works on the panel (as a browser posts the form)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.get(f"{origin}/login") as page:
            found = _CSRF_META.search(await page.text())
        assert found is not None
        form = {"username": "admin", "password": password, "csrf": found.group(1)}
        async with browser.post(
            f"{origin}/login", data=form, headers={"Origin": origin}, allow_redirects=False
        ) as r:
            assert r.status == 303 and r.headers["Location"] == "/", await r.text()


@pytest.mark.timeout(180)
async def test_cluster_demo_sends_through_both_nodes_and_stops_clean() -> None:
    listens = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    proc = await smsgw_process(
        "demo-cluster", "--listen", listens[0], "--listen", listens[1], "--stop-after", "150"
    )
    out = _Output(proc)
    pids: list[int] = []
    dirs: list[Path] = []
    try:
        token = (await out.wait_for(r"^  TOKEN=(\S+)$", 120)).group(1)
        pids = [int(p) for p in re.findall(r"^  gw\d  \S+  \(pid (\d+)\)$", out.text, re.M)]
        where = await out.wait_for(r"logs: (\S+), PostgreSQL's: (\S+)$", 5)
        dirs = [Path(where.group(1)), Path(where.group(2))]
        dsn = (await out.wait_for(r"^  PostgreSQL  (.+)$", 5)).group(1)
        assert len(pids) == 2 and all(d.is_dir() for d in dirs)
        password = (await out.wait_for(r"user admin, password (\S+)", 5)).group(1)
        auth = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as http:
            sent = []
            for n, listen in enumerate(listens, start=1):
                async with http.post(
                    f"http://{listen}/api/v1/messages",
                    json={"to": f"+1202555012{n}", "body": f"Your results are ready ({n})."},
                    headers=auth,
                ) as r:
                    assert r.status == 202, await r.text()
                    sent.append(f"http://{listen}/api/v1/messages/{(await r.json())['id']}")
            for url in sent:  # the simulated carrier's receipt makes it `delivered`
                async with asyncio.timeout(60):
                    while await _state(http, url, auth) != "delivered":
                        await out.tick(0.5)
            async with http.get(f"http://{listens[1]}/api/v1/cluster", headers=auth) as r:
                cluster = await r.json()
            assert {n["node_id"] for n in cluster["nodes"]} == {"gw1", "gw2"}
            await _panel_sign_in(f"http://{listens[1]}", password)  # the admin node 1 had
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert await asyncio.wait_for(proc.wait(), 60) == 0
        await out.done()
        assert "messages accepted: 2 (2 delivered)" in out.text, out.text
        assert "duplicates at the carrier: none" in out.text
        submits = sum(int(n) for n in re.findall(r"submits from gw\d: (\d+)", out.text))
        assert submits == 2
        for pid in pids:  # the nodes are gone, and reaped
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        assert not [d for d in dirs if d.exists()]
        with pytest.raises(psycopg.OperationalError):
            await psycopg.AsyncConnection.connect(dsn, connect_timeout=3)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
