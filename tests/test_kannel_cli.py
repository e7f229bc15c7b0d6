"""`smsgw run` with `[kannel] enabled`: the listener starts next to the API, a Kannel
client's GET is accepted and delivered, and SIGTERM stops both."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import smsgw_process
from tests.ports import free_port
from tests.test_cli import Daemon, _init


async def test_run_serves_sendsms_when_enabled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf, token = await asyncio.to_thread(_init, tmp_path, capsys)
    port = free_port()
    (tmp_path / "kannel.pw").write_text("s3cret\n")
    (tmp_path / "kannel.token").write_text(token + "\n")
    conf.write_text(
        conf.read_text()
        + f'\n[log]\nformat = "json"\nlevel = "debug"\n\n[kannel]\nenabled = true\n'
        f'listen = "127.0.0.1:{port}"\n\n[[kannel.users]]\nusername = "ehr"\n'
        'password_file = "kannel.pw"\ntoken_file = "kannel.token"\n'
    )
    proc = await smsgw_process("run", "--config", str(conf))
    d = Daemon(proc, f"http://127.0.0.1:{port}")
    try:
        await d.wait_log(lambda e: e.get("event") == "kannel_listening")
        params = {"username": "ehr", "password": "s3cret", "to": "+12025550123", "text": "hi"}
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{d.url}/cgi-bin/sendsms", params=params) as r,
        ):
            assert (r.status, await r.text()) == (202, "0: Accepted for delivery")
        accepted = await d.wait_log(lambda e: e.get("event") == "kannel_accepted")
        (mid,) = accepted["ids"]
        await d.wait_log(lambda e: e.get("event") == "message_final" and e.get("message_id") == mid)
        proc.send_signal(signal.SIGTERM)
        assert await proc.wait() == 0
        assert "2025550123" not in await d.finished()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_run_refuses_to_start_with_an_unreadable_password_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf, _ = await asyncio.to_thread(_init, tmp_path, capsys)
    conf.write_text(
        conf.read_text() + f'\n[kannel]\nenabled = true\nlisten = "127.0.0.1:{free_port()}"\n\n'
        '[[kannel.users]]\nusername = "ehr"\npassword_file = "missing.pw"\n'
        'token_file = "missing.token"\n'
    )
    proc = await smsgw_process("run", "--config", str(conf))
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert b"kannel.users[0].password_file: cannot read" in err
