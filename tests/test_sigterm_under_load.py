"""SIGTERM to a real `smsgw run` under load ends it cleanly, within a bound, every time.

Once, `smsgw run` did not exit after SIGTERM under load. Here a real daemon with the
simulated peers (`[demo] peers = true`: the SMSC simulator over real SMPP, emulated
modems on ptys) takes HTTP sends, reads of what it stored and inbound messages from
the simulated carrier and modems, and is stopped in the middle of that, several times
on the same data directory. Each time it must exit 0 well inside the unit's
`TimeoutStopSec=30`, with its "stopped" line logged, and lose no acknowledged message.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
from pathlib import Path

import aiohttp

from gateway.cli import main
from tests.conftest import TEST_CONSENT_TOML, smsgw_process
from tests.ports import free_port
from tests.test_cli import TOKEN_RE, Daemon

EXIT_BOUND = 15.0  # seconds from SIGTERM to exit; the unit's TimeoutStopSec is 30
CYCLES = 3
ACKED_BEFORE_STOP = 120  # sends acknowledged in a cycle before the signal goes
HANDSET = "+12025550147"
PATIENT = "+12025550123"


def _setup(tmp_path: Path) -> tuple[Path, str]:
    port = free_port()
    conf = tmp_path / "smsgw.toml"
    conf.write_text(
        f'data_dir = "{tmp_path}"\n\n[http]\nlisten = "127.0.0.1:{port}"\nshutdown_grace = 2.0\n'
        '\n[demo]\npeers = true\n\n[log]\nformat = "json"\nlevel = "info"\n' + TEST_CONSENT_TOML
    )
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["init", "--data-dir", str(tmp_path)]) == 0
    tokens = TOKEN_RE.findall(out.getvalue())
    assert len(tokens) == 1
    return conf, tokens[0]


async def _load(url: str, token: str, acked: list[str], enough: asyncio.Event) -> None:
    """Senders, readers and handsets until the daemon stops answering."""
    headers = {"Authorization": f"Bearer {token}"}
    stop = asyncio.Event()

    async def sender(http: aiohttp.ClientSession, n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            route = "modems" if i % 10 == 0 else "smsc-sim"
            body = {"to": PATIENT, "body": f"load {n}/{i}", "route": route}
            try:
                resp = await http.post(f"{url}/api/v1/messages", json=body)
                if resp.status == 202:
                    acked.append((await resp.json())["id"])
                    if len(acked) >= ACKED_BEFORE_STOP:
                        enough.set()
                elif resp.status == 503:
                    stop.set()  # shutting down
            except (aiohttp.ClientError, OSError):
                stop.set()

    async def reader(http: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            try:
                await (await http.get(f"{url}/api/v1/messages?limit=50")).read()
                await (await http.get(f"{url}/api/v1/inbound?limit=20")).read()
            except (aiohttp.ClientError, OSError):
                stop.set()

    async def handset(http: aiohttp.ClientSession) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            via = "modem" if i % 3 == 0 else "smsc"
            body = {"sender": HANDSET, "body": f"reply {i}", "via": via, "parts": 1 + i % 2}
            try:
                await (await http.post(f"{url}/api/v1/demo/inbound", json=body)).read()
            except (aiohttp.ClientError, OSError):
                stop.set()

    async with aiohttp.ClientSession(headers=headers) as http:
        await asyncio.gather(
            *(sender(http, n) for n in range(6)), reader(http), reader(http), handset(http)
        )


async def test_sigterm_under_load_exits_cleanly_within_the_bound_every_time(
    tmp_path: Path,
) -> None:
    conf, token = await asyncio.to_thread(_setup, tmp_path)
    url = "http://" + conf.read_text().split('listen = "')[1].split('"')[0]
    acked: list[str] = []
    for cycle in range(CYCLES):
        proc = await smsgw_process("run", "--config", str(conf))
        d = Daemon(proc, url)
        try:
            await d.wait_log(lambda e: e.get("event") == "listening", limit=30)
            enough = asyncio.Event()
            before = len(acked)
            load = asyncio.create_task(_load(url, token, acked, enough))
            await asyncio.wait_for(enough.wait(), 60)
            assert len(acked) > before
            proc.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.wait_for(proc.wait(), EXIT_BOUND)
            except TimeoutError:
                raise AssertionError(
                    f"cycle {cycle}: no exit {EXIT_BOUND} s after SIGTERM:\n"
                    + "".join(d.lines[-40:])
                ) from None
            await asyncio.wait_for(load, 30)
            log_text = await d.finished()
            assert code == 0, f"cycle {cycle}: exit {code}\n{log_text[-4000:]}"
            assert '"event": "stopped"' in log_text
            enough.clear()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    conn = sqlite3.connect(tmp_path / "smsgw.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {r[0] for r in conn.execute("SELECT id FROM messages")}
    finally:
        conn.close()
    assert set(acked) <= stored, "an acknowledged message is missing"
