"""Back up under SMPP load, restore elsewhere, start a gateway there (issue 14, point 4).

A real `smsgw run` sends over SMPP to the simulated carrier while clients post messages
and opt-outs over HTTP in parallel; `smsgw backup` runs meanwhile (as a console process:
`registry.run_local` until the admin socket is in the tree). The backup is restored into
another data directory with the master key copied there separately, and a second `smsgw
run` serves it: every message acknowledged (202) before the backup started is there and
reads back (number and body), every opt-out recorded before it stands, every audit entry
written before it is there unchanged, and `smsgw audit verify` passes. Around it: restore
refuses the live directory, a tampered copy fails `--verify`, a wrong key is refused.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import sqlite3
from pathlib import Path
from typing import Any

from aiohttp import ClientSession

from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from gateway.store import crypto
from tests.conftest import TEST_CONSENT_TOML, smsgw_process
from tests.http_daemon import TOKEN_RE
from tests.ports import free_port

SENDERS = 4
BEFORE_BACKUP = 120  # messages acknowledged before the backup starts


def _config(data: Path, smsc_port: int) -> tuple[Path, str]:
    """The data directory's config (its API on a free port), and the API's URL."""
    port = free_port()
    conf = data / "smsgw.toml"
    conf.write_text(
        f'data_dir = "{data}"\n\n[http]\nlisten = "127.0.0.1:{port}"\nshutdown_grace = 1.0\n\n'
        '[log]\nformat = "json"\nlevel = "info"\n\n'
        f'[[routes]]\nname = "carrier"\ntype = "smpp"\nhost = "127.0.0.1"\nport = {smsc_port}\n'
        'system_id = "smsgw"\npassword = "pw"\nreconnect_min = 0.05\nreconnect_max = 0.2\n'
        + TEST_CONSENT_TOML
    )
    return conf, f"http://127.0.0.1:{port}"


async def _smsgw(*args: str) -> tuple[int, str, str]:
    proc = await smsgw_process(*args)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class _Daemon:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.listening = asyncio.Event()
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.lines.append(line.decode(errors="replace"))
            if b'"event": "listening"' in line:
                self.listening.set()

    @classmethod
    async def start(cls, conf: Path) -> _Daemon:
        daemon = cls(await smsgw_process("run", "--config", str(conf)))
        done = asyncio.ensure_future(daemon.proc.wait())
        await asyncio.wait(
            [done, asyncio.ensure_future(daemon.listening.wait())],
            timeout=60,
            return_when=asyncio.FIRST_COMPLETED,
        )
        assert daemon.listening.is_set(), "".join(daemon.lines)
        return daemon

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(self.proc.wait(), 30) == 0, "".join(self.lines[-20:])
        await self._reader


class _Load:
    """Parallel senders over HTTP; what each 202 acknowledged, in order."""

    def __init__(self, http: ClientSession, url: str, token: str) -> None:
        self.http, self.url, self.auth = http, url, {"Authorization": f"Bearer {token}"}
        self.acked: list[tuple[str, str, str]] = []  # id, number, body
        self.opt_outs: list[tuple[int, str]] = []  # ledger id, number
        self.grew = asyncio.Condition()
        self.stop = asyncio.Event()
        self._n = itertools.count()

    async def sender(self) -> None:
        while not self.stop.is_set():
            n = next(self._n)
            number, body = f"+1202555{n % 10000:04d}", f"backup e2e {n} ✓"
            if n % 25 == 0:  # now and then an opt-out, through the consent API
                async with self.http.post(
                    f"{self.url}/api/v1/optouts",
                    json={"number": f"+1303555{n:04d}"},
                    headers=self.auth,
                ) as r:
                    assert r.status == 201, await r.text()
                    self.opt_outs.append(((await r.json())["id"], f"+1303555{n:04d}"))
            async with self.http.post(
                f"{self.url}/api/v1/messages",
                json={"to": number, "body": body},
                headers=self.auth,
            ) as r:
                assert r.status == 202, await r.text()
                mid = (await r.json())["id"]
            async with self.grew:
                self.acked.append((mid, number, body))
                self.grew.notify_all()

    async def wait_for(self, count: int) -> None:
        async with self.grew:
            await asyncio.wait_for(self.grew.wait_for(lambda: len(self.acked) >= count), 60)


def _audit_rows(db: Path, up_to: int) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(
            "SELECT * FROM audit_log WHERE seq <= ? ORDER BY seq", (up_to,)
        ).fetchall()
    finally:
        conn.close()


def _audit_head(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT coalesce(max(seq), 0) FROM audit_log").fetchone()[0])
    finally:
        conn.close()


async def test_backup_under_smpp_load_restores_everything_acknowledged(tmp_path: Path) -> None:
    smsc = SmscSimulator(SimulatorConfig(system_id="smsgw", password="pw", receipt_delay=0.2))
    await smsc.start()
    a, b = tmp_path / "a", tmp_path / "b"
    code, out, _ = await _smsgw("init", "--data-dir", str(a))
    assert code == 0
    conf_a, url_a = _config(a, smsc.port)
    code, out, _ = await _smsgw(
        "token", "create", "--scope", "send,read,admin,phi,consent", "--config", str(conf_a)
    )
    (token,) = TOKEN_RE.findall(out)
    daemon = await _Daemon.start(conf_a)
    try:
        async with ClientSession() as http:
            load = _Load(http, url_a, token)
            senders = [asyncio.create_task(load.sender()) for _ in range(SENDERS)]
            await load.wait_for(BEFORE_BACKUP)
            acked_before, opted_before = list(load.acked), list(load.opt_outs)
            head_before = _audit_head(a / "smsgw.db")
            audit_before = _audit_rows(a / "smsgw.db", head_before)
            code, out, err = await _smsgw(
                "backup", "--config", str(conf_a), "--out", str(tmp_path / "backups")
            )
            acked_after_backup = len(load.acked)
            load.stop.set()
            await asyncio.gather(*senders)
    finally:
        await daemon.stop()
    assert code == 0, err
    assert "backup: pages copied" in err  # its progress, on stderr
    assert acked_after_backup > len(acked_before)  # the load went on while it ran
    assert smsc.submits > 0  # and went out over SMPP
    (backup,) = (tmp_path / "backups").glob("*.db")
    assert out.splitlines()[0] == f"backup: {backup}"
    # The console's `backup_created` entry went into the live chain beside the daemon's.
    code, out, _ = await _smsgw("audit", "verify", "--config", str(conf_a))
    assert code == 0, out

    # A tampered copy fails --verify; the backup itself passes.
    tampered = tmp_path / "tampered.db"
    data = bytearray(backup.read_bytes())
    data[len(data) // 3] ^= 0x01
    tampered.write_bytes(bytes(data))
    shutil.copy(f"{backup}.manifest.json", f"{tampered}.manifest.json")
    assert (await _smsgw("backup", "--config", str(conf_a), "--verify", str(tampered)))[0] == 1
    assert (await _smsgw("backup", "--config", str(conf_a), "--verify", str(backup)))[0] == 0

    # A wrong key is refused before anything is written.
    wrong = tmp_path / "wrong"
    crypto.generate_master_key(wrong / "master.key")
    code, out, _ = await _smsgw("restore", str(backup), "--data-dir", str(wrong))
    assert code == 3 and "does NOT fit this backup" in out
    assert not (wrong / "smsgw.db").exists()

    # The key travels apart from the backup; then restore into an empty directory.
    b.mkdir(mode=0o750)
    shutil.copy(a / "master.key", b / "master.key")
    os.chmod(b / "master.key", 0o600)
    code, out, err = await _smsgw("restore", str(backup), "--data-dir", str(b))
    assert code == 0, out + err
    assert "restore: bytes copied" in err
    conf_b, url_b = _config(b, smsc.port)
    code, out, _ = await _smsgw("audit", "verify", "--config", str(conf_b))
    assert code == 0 and out.startswith("audit chain intact"), out

    daemon = await _Daemon.start(conf_b)
    try:
        code, out, _ = await _smsgw("restore", str(backup), "--data-dir", str(b))
        assert code == 4 and "in use by another smsgw" in out  # a live directory
        auth = {"Authorization": f"Bearer {token}"}
        async with ClientSession(headers=auth) as http:
            for mid, number, body in acked_before:
                async with http.get(f"{url_b}/api/v1/messages/{mid}?include=phi") as r:
                    assert r.status == 200, (mid, await r.text())
                    got = await r.json()
                assert (got["to"], got["body"]) == (number, body)
            for ledger_id, number in opted_before:
                async with http.get(f"{url_b}/api/v1/optouts", params={"number": number}) as r:
                    view = await r.json()
                assert [h["id"] for h in view["history"]] == [ledger_id]
                assert view["standing"][0]["status"] == "opted_out"
    finally:
        await daemon.stop()
        await smsc.aclose()
    assert _audit_rows(b / "smsgw.db", head_before) == audit_before
    code, out, _ = await _smsgw("audit", "verify", "--config", str(conf_b))
    assert code == 0, out
