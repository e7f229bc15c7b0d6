"""Issue 14 point 3 as the checker walks it: a real `smsgw run` sending to the SMSC
simulator over SMPP under a steady load; `smsgw keys rotate` from the console; the
daemon takes the new generation up and re-encrypts at a bounded rate; kill -9 in the
middle of it; a restart resumes from the persisted cursor and finishes; generation 1
is retired; every acknowledged message and every other encrypted row opens under
generation 2; the audit chain verifies; no plaintext in the database, WAL or SHM."""

from __future__ import annotations

import asyncio
import io
import re
import signal
import sqlite3
from contextlib import redirect_stdout
from pathlib import Path

import aiohttp
import pytest

from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from gateway.app import Gateway
from gateway.cli import main
from gateway.config import load
from gateway.store import crypto
from gateway.store.store import Store
from tests.conftest import CANARY_BODY, CANARY_DIGITS, TEST_CONSENT_TOML, smsgw_process
from tests.keys_rows import SECRETS, fill, open_every_ciphertext
from tests.ports import free_port
from tests.test_cli import Daemon
from tests.test_store import _files, _needles, _scan

pytestmark = pytest.mark.timeout(180)

TOKEN_RE = re.compile(r"smsgw_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")
WAIT = 60.0
RATE = 100  # rows a second: the ~300 rows here take ~3 s, so the kill lands mid-way


def _setup(data: Path, smsc: SmscSimulator) -> tuple[Path, str, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["init", "--data-dir", str(data)]) == 0
    (token,) = TOKEN_RE.findall(out.getvalue())
    listen = f"127.0.0.1:{free_port()}"
    conf = data / "smsgw.toml"
    conf.write_text(
        f'data_dir = "{data}"\n\n[http]\nlisten = "{listen}"\nshutdown_grace = 1.0\n\n'
        f"[store]\nrekey_rows_per_second = {RATE}.0\n\n"
        f'[[routes]]\nname = "carrier"\ntype = "smpp"\nhost = "127.0.0.1"\nport = {smsc.port}\n'
        f'system_id = "{smsc.config.system_id}"\npassword = "{smsc.config.password}"\n'
        + TEST_CONSENT_TOML
    )
    return conf, token, f"http://{listen}"


async def _start(conf: Path, url: str) -> Daemon:
    d = Daemon(await smsgw_process("run", "--config", str(conf)), url)
    await d.wait_log(lambda e: e.get("event") == "listening", WAIT)
    return d


def _rekey_state(db: Path) -> tuple[int, int]:
    """(tables not through, ciphertexts of generation 1 in messages), read directly."""
    conn = sqlite3.connect(db)
    try:
        pending = conn.execute("SELECT count(*) FROM key_rekey WHERE done = 0").fetchone()[0]
        old = conn.execute(
            "SELECT count(*) FROM messages WHERE substr(body_ct, 1, 3) = ?",
            (crypto.generation_prefix(1),),
        ).fetchone()[0]
    finally:
        conn.close()
    return int(pending), int(old)


async def test_rotate_under_load_kill_9_mid_way_resume_and_retire(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    async with SmscSimulator(SimulatorConfig(system_id="smsgw", password="rot")) as smsc:
        conf, token, url = await asyncio.to_thread(_setup, data, smsc)
        config = load(str(conf))
        # Rows of every encrypted kind, under generation 1, written by the gateway's code.
        gw = await Gateway.open(config)
        await gw.start(dispatch=False)
        filled = await fill(gw, messages=150)
        await gw.stop()

        acknowledged: list[str] = []
        stop_load = asyncio.Event()
        go = asyncio.Event()  # set while the daemon is up: one client sends without pause

        async def load_loop(http: aiohttp.ClientSession) -> None:
            i = 0
            while not stop_load.is_set():
                await go.wait()
                i += 1
                try:
                    resp = await http.post(
                        f"{url}/api/v1/messages",
                        json={"to": "+12025550147", "body": f"{CANARY_BODY} load {i}"},
                    )
                except aiohttp.ClientError:
                    go.clear()  # the daemon is gone: wait for the restart
                    continue
                if resp.status == 202:
                    acknowledged.append((await resp.json())["id"])

        d = await _start(conf, url)
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            go.set()
            load_task = asyncio.create_task(load_loop(http))
            try:
                sent_before = len(smsc.submitted)
                at_rotate = len(acknowledged)
                rotate = await smsgw_process("keys", "rotate", "--config", str(conf))
                out, err = await asyncio.wait_for(rotate.communicate(), WAIT)
                assert rotate.returncode == 0, err.decode()
                # Run inside the service (its admin socket): the job starts there at once.
                assert b"generation 2 is current" in out and b"in the background" in out
                await d.wait_log(
                    lambda e: e.get("event") == "rekey_batch" and e.get("table") == "messages",
                    WAIT,
                )
                d.proc.kill()
                await d.proc.wait()
                assert len(acknowledged) > at_rotate, "sends went on while it re-encrypted"
                await d.finished()
                pending, old = await asyncio.to_thread(_rekey_state, data / "smsgw.db")
                assert pending > 0 and old > 0, "the kill was meant to land mid-way"

                d = await _start(conf, url)
                at_restart = len(acknowledged)
                go.set()
                await d.wait_log(lambda e: e.get("event") == "key_generation_retired", WAIT)
                assert len(acknowledged) > at_restart, "sends went on while it resumed"
                await smsc.wait_until(lambda: len(smsc.submitted) > sent_before + 20)
            finally:
                stop_load.set()
                go.set()
                await load_task
        d.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(d.proc.wait(), WAIT) == 0
        log_text = await d.finished()
    assert CANARY_DIGITS not in log_text and "CANARY" not in log_text

    key = crypto.read_master_key(config.master_key_path)
    store = Store(config.db_path, key)
    await store.open()
    try:
        counts = await open_every_ciphertext(store)
        assert set(counts) == {2}, counts
        for mid in [*filled, *acknowledged]:
            message = await store.records.message(mid)
            assert message is not None, f"acknowledged {mid} lost"
            assert message.body.open().startswith(CANARY_BODY)
        gens = await store.reader.all("SELECT generation FROM keyring WHERE purpose = 'field'")
        assert [int(r[0]) for r in gens] == [2]
        actions = [
            r[0] for r in await store.reader.all("SELECT action FROM audit_log ORDER BY seq")
        ]
        assert "key_rotation_started" in actions and "key_generation_retired" in actions
    finally:
        await store.close()
    verify = await smsgw_process("audit", "verify", "--config", str(conf))
    out, _ = await asyncio.wait_for(verify.communicate(), WAIT)
    assert verify.returncode == 0 and b"intact" in out
    needles = _needles(CANARY_BODY, CANARY_DIGITS, *SECRETS.values())
    assert _scan(_files(config.db_path), needles) == []
