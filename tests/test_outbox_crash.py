"""Crash safety with a real `smsgw run`: events committed with their changes survive a
SIGKILL and reach the receiver once it answers, each once (the receiver had answered
none before the kill)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import ClientSession

from tests.conftest import CANARY_NUMBER, TEST_CONSENT_TOML, smsgw_process
from tests.http_daemon import TOKEN_RE, free_port
from tests.webhook_rig import Receiver, write_secret


def _config(tmp_path: Path, port: int, rx: Receiver, secret: Path) -> Path:
    conf = tmp_path / "smsgw.toml"
    conf.write_text(
        f'data_dir = "{tmp_path}"\n\n[http]\nlisten = "127.0.0.1:{port}"\n\n'
        '[log]\nformat = "json"\nlevel = "debug"\n\n'
        "[outbox]\nbackoff_initial = 0.05\nbackoff_max = 0.1\n\n"
        f'[[webhooks]]\nname = "rx"\nurl = "{rx.url}"\nsecret_file = "{secret}"\n'
        'events = ["message.status"]\nallow_loopback = true\nallow_plain_http = true\n\n'
        '[[routes]]\nname = "demo"\ntype = "loopback"\nreceipt_delay = 0.2\n'
        + TEST_CONSENT_TOML  # the suite's default purpose (conftest)
    )
    return conf


class _Daemon:
    """`smsgw run`, its JSON log read line by line (so its pipe never fills)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.listening = asyncio.Event()
        self.final = asyncio.Event()  # a message's receipt is stored
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.lines.append(line.decode(errors="replace"))
            if b'"event": "listening"' in line:
                self.listening.set()
            if b'"event": "message_final"' in line:
                self.final.set()

    async def wait_listening(self) -> None:
        await asyncio.wait_for(self.listening.wait(), 30)

    async def end(self, *, kill: bool) -> None:
        if self.proc.returncode is None:
            self.proc.kill() if kill else self.proc.terminate()
        await asyncio.wait_for(self.proc.wait(), 20)
        await self._reader


async def _run(conf: Path) -> _Daemon:
    daemon = _Daemon(await smsgw_process("run", "--config", str(conf)))
    await daemon.wait_listening()
    return daemon


async def _send(port: int, token: str) -> str:
    async with (
        ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{port}/api/v1/messages",
            json={"to": CANARY_NUMBER, "body": "crash"},
            headers={"Authorization": f"Bearer {token}"},
        ) as resp,
    ):
        assert resp.status == 202, await resp.text()
        return str((await resp.json())["id"])


async def test_events_survive_sigkill_and_are_delivered_once(tmp_path: Path) -> None:
    init = await smsgw_process("init", "--data-dir", str(tmp_path))
    out, _ = await init.communicate()
    assert init.returncode == 0
    (token,) = TOKEN_RE.findall(out.decode())
    secret_path, secret = write_secret(tmp_path, "rx")
    rx = await Receiver(secret, "500").start()
    port = free_port()
    conf = _config(tmp_path, port, rx, secret_path)
    daemon = await _run(conf)
    try:
        message_id = await _send(port, token)
        await asyncio.wait_for(daemon.final.wait(), 20)  # sending, sent, delivered: stored
        await rx.wait_for(2, requests=True)  # and refused by the receiver so far
        await daemon.end(kill=True)
        rx.mode = "ok"
        daemon = await _run(conf)
        await rx.wait_for(3)
        states = [e["body"]["data"]["state"] for e in rx.events]
        assert states == ["sending", "sent", "delivered"]
        assert {e["body"]["data"]["message_id"] for e in rx.events} == {message_id}
        assert len({e["id"] for e in rx.events}) == 3
        assert rx.bad_signatures == 0
    finally:
        await daemon.end(kill=False)
        await rx.close()
