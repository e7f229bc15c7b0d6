"""The `smsgw` command, in-process and as a real daemon on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.cli import main
from tests.conftest import (
    CANARY_BODY,
    CANARY_DIGITS,
    CANARY_NUMBER,
    SMSGW,
    TEST_CONSENT_TOML,
    smsgw_process,
)
from tests.ports import free_port

TOKEN_RE = re.compile(r"smsgw_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")


def _init(tmp_path: Path, capsys: pytest.CaptureFixture[str] | None) -> tuple[Path, str]:
    """`smsgw init` in this process; without `capsys` (a fixture wider than a test), its
    output is captured here."""
    if capsys is None:
        captured = io.StringIO()
        with contextlib.redirect_stdout(captured):
            assert main(["init", "--data-dir", str(tmp_path)]) == 0
        out = captured.getvalue()
    else:
        assert main(["init", "--data-dir", str(tmp_path)]) == 0
        out = capsys.readouterr().out
    tokens = TOKEN_RE.findall(out)
    assert len(tokens) == 1
    conf = tmp_path / "smsgw.toml"
    text = conf.read_text().replace("127.0.0.1:8080", f"127.0.0.1:{free_port()}")
    text = text.replace("receipt_delay = 2.0", "receipt_delay = 0.2")
    conf.write_text(text + TEST_CONSENT_TOML)  # the suite's default purpose (conftest)
    return conf, tokens[0]


def test_init_writes_config_private_key_store_and_one_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf, _ = _init(tmp_path, capsys)
    assert conf.exists()
    assert (tmp_path / "master.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "smsgw.db").exists()
    key_before = (tmp_path / "master.key").read_bytes()
    assert main(["init", "--data-dir", str(tmp_path)]) == 0
    again = capsys.readouterr().out
    assert not TOKEN_RE.search(again), "a second init must not mint another token"
    assert (tmp_path / "master.key").read_bytes() == key_before
    # the token is stored only as a hash
    assert _init_token_hash_only(tmp_path)


def _init_token_hash_only(tmp_path: Path) -> bool:
    import sqlite3

    conn = sqlite3.connect(tmp_path / "smsgw.db")
    rows = conn.execute("SELECT id, secret_hash FROM api_tokens").fetchall()
    conn.close()
    return len(rows) == 1 and len(rows[0][1]) == 32


def test_token_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf, _ = _init(tmp_path, capsys)
    assert (
        main(["token", "create", "--scope", "send,read", "--name", "lab", "--config", str(conf)])
        == 0
    )
    created = capsys.readouterr().out.strip()
    assert TOKEN_RE.fullmatch(created), "prints only the new token"
    token_id = created.split("_")[1]
    assert main(["token", "list", "--config", str(conf)]) == 0
    listing = capsys.readouterr().out
    assert token_id in listing and "lab" in listing and created not in listing
    assert main(["token", "revoke", token_id, "--config", str(conf)]) == 0
    capsys.readouterr()
    assert main(["token", "list", "--config", str(conf)]) == 0
    assert re.search(rf"{token_id}\s+revoked", capsys.readouterr().out)
    assert main(["token", "revoke", token_id, "--config", str(conf)]) == 1
    assert main(["token", "create", "--scope", "root", "--config", str(conf)]) == 2


def test_bad_config_stops_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text(
        '[[routes]]\nname = "a"\ntype = "loopback"\n\n'
        '[[routes]]\nname = "b"\ntype = "loopback"\nrate = "fast"\n'
    )
    assert main(["run", "--config", str(conf)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        'smsgw: configuration error: routes[1].rate: expected a positive number, got "fast"'
    )


class Daemon:
    """A running `smsgw run`; its JSON log on stderr is read all the time (so the pipe
    never fills) and serves as the event stream tests wait on."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str) -> None:
        self.proc = proc
        self.url = url
        self.lines: list[str] = []
        self._seen = 0
        self._grew = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while raw := await self.proc.stderr.readline():
            async with self._grew:
                self.lines.append(raw.decode())
                self._grew.notify_all()
        async with self._grew:
            self._grew.notify_all()

    async def wait_log(self, predicate: Any, limit: float = 20.0) -> dict[str, Any]:
        """The next log event (after those already matched) for which `predicate` holds."""
        async with asyncio.timeout(limit), self._grew:
            while True:
                while self._seen < len(self.lines):
                    line = self.lines[self._seen]
                    self._seen += 1
                    try:
                        event = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if predicate(event):
                        return dict(event)
                if self._reader.done():
                    raise AssertionError("daemon exited:\n" + "".join(self.lines))
                await self._grew.wait()

    async def finished(self) -> str:
        await self._reader
        return "".join(self.lines)


@pytest.fixture
async def daemon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> AsyncIterator[tuple[Daemon, str]]:
    conf, token = await asyncio.to_thread(_init, tmp_path, capsys)
    # Debug level: per-message events (message_final) are what the tests wait on, and
    # the PHI scan then covers the most talkative log the daemon can write.
    conf.write_text(conf.read_text() + '\n[log]\nlevel = "debug"\n')
    listen = re.search(r'listen = "([^"]+)"', conf.read_text())
    assert listen is not None
    proc = await smsgw_process("run", "--config", str(conf))
    d = Daemon(proc, f"http://{listen.group(1)}")
    await d.wait_log(lambda e: e.get("event") == "listening")
    try:
        yield d, token
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_daemon_delivers_then_stops_cleanly_on_sigterm(daemon: tuple[Daemon, str]) -> None:
    d, token = daemon
    # Ready, it tells what each stage of its start cost; then reads the rest of the queue.
    started = await d.wait_log(lambda e: e.get("event") == "started")
    assert {"interpreter_and_imports", "store_open", "queue_load", "listen"} <= set(
        started["stages"]
    )
    assert started["wall_s"] > 0 and started["cpu_s"] > 0
    await d.wait_log(lambda e: e.get("event") == "queue_loaded_later")
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        resp = await http.post(
            f"{d.url}/api/v1/messages", json={"to": CANARY_NUMBER, "body": CANARY_BODY}
        )
        assert resp.status == 202
        mid = (await resp.json())["id"]
        await d.wait_log(lambda e: e.get("event") == "message_final" and e.get("message_id") == mid)
        view = await (await http.get(f"{d.url}/api/v1/messages/{mid}")).json()
        assert [e["state"] for e in view["events"]] == ["queued", "sending", "sent", "delivered"]
    d.proc.send_signal(signal.SIGTERM)
    await d.wait_log(lambda e: e.get("event") == "stopped")
    assert await asyncio.wait_for(d.proc.wait(), 20) == 0
    log_text = await d.finished()
    assert CANARY_DIGITS not in log_text and "CANARY" not in log_text


async def test_cli_send_posts_to_a_running_gateway(daemon: tuple[Daemon, str]) -> None:
    d, token = daemon
    proc = await asyncio.create_subprocess_exec(
        *SMSGW,
        "send",
        "--to",
        CANARY_NUMBER,
        "--body",
        "from the console",
        "--priority",
        "critical",
        "--url",
        d.url,
        "--token",
        token,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    assert json.loads(out)["priority"] == "critical"


async def test_kill_9_under_load_loses_no_acknowledged_message(
    daemon: tuple[Daemon, str], tmp_path: Path
) -> None:
    d, token = daemon
    headers = {"Authorization": f"Bearer {token}"}
    acknowledged: list[str] = []
    enough = asyncio.Event()

    async def client(http: aiohttp.ClientSession, n: int) -> None:
        for i in range(n):
            try:
                resp = await http.post(
                    f"{d.url}/api/v1/messages", json={"to": CANARY_NUMBER, "body": f"load {i}"}
                )
            except aiohttp.ClientError:
                return  # the daemon is gone: this request was never acknowledged
            if resp.status == 202:
                acknowledged.append((await resp.json())["id"])
                if len(acknowledged) >= 150:
                    enough.set()

    async with aiohttp.ClientSession(headers=headers) as http:
        clients = [asyncio.create_task(client(http, 100)) for _ in range(8)]
        await asyncio.wait_for(enough.wait(), 30)
        d.proc.kill()
        await d.proc.wait()
        await asyncio.gather(*clients)

    proc = await smsgw_process("run", "--config", str(tmp_path / "smsgw.toml"))
    d2 = Daemon(proc, d.url)
    try:
        await d2.wait_log(lambda e: e.get("event") == "listening")
        async with aiohttp.ClientSession(headers=headers) as http:
            for mid in acknowledged:
                resp = await http.get(f"{d.url}/api/v1/messages/{mid}")
                assert resp.status == 200, f"acknowledged {mid} lost"
                view = await resp.json()
                assert view["status"] in ("queued", "sending", "sent", "delivered")
                if view["possible_duplicate"]:
                    # Only a message that was on its way to the route may be resent.
                    assert "sending" in [e["state"] for e in view["events"]]
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 20)
    import sqlite3

    conn = sqlite3.connect(tmp_path / "smsgw.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


@pytest.mark.parametrize(
    ("listen", "refused"),
    [
        ("0.0.0.0:8080", True),
        ("[::]:8080", True),
        ("gw.hospital.local:8443", True),
        ("10.1.2.3:8080", True),
        ("127.0.0.1:8080", False),
        ("[::1]:8080", False),
        ("localhost:8080", False),
    ],
)
def test_plain_http_only_on_loopback(listen: str, refused: bool) -> None:
    from gateway.config import HttpConfig

    assert (HttpConfig(listen=listen).plain_http_problem() is not None) is refused
    # allow_plain_http does not open plain HTTP beyond loopback (issue 10, point 5).
    plain = HttpConfig(listen=listen, allow_plain_http=True).plain_http_problem()
    assert (plain is not None) is refused
    with_tls = HttpConfig(listen=listen, tls_cert_file="c.pem", tls_key_file="k.pem")
    assert with_tls.plain_http_problem() is None


def test_run_refuses_plain_http_off_loopback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf, _ = _init(tmp_path, capsys)
    assert main(["run", "--config", str(conf), "--listen", "0.0.0.0:18080"]) == 2
    err = capsys.readouterr().err
    assert "not a loopback address and TLS is off" in err


def test_init_hints_carry_the_config_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    conf = tmp_path / "smsgw.toml"
    hints = [line for line in out.splitlines() if "smsgw user add" in line]
    assert hints and all(f"--config {conf}" in line for line in hints), out
    assert main(["init", "--data-dir", str(tmp_path)]) == 0
    again = capsys.readouterr().out
    hints = [line for line in again.splitlines() if "smsgw token create" in line]
    assert hints and all(f"--config {conf}" in line for line in hints), again


async def test_cli_send_uses_the_configured_listen_address(
    daemon: tuple[Daemon, str], tmp_path: Path
) -> None:
    _, token = daemon
    proc = await asyncio.create_subprocess_exec(
        *SMSGW,
        "send",
        "--config",
        str(tmp_path / "smsgw.toml"),
        "--to",
        CANARY_NUMBER,
        "--body",
        "from the console",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "SMSGW_TOKEN": token},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    assert json.loads(out)["status"] == "queued"


def test_run_with_a_listen_override_lacking_a_port_names_the_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf, _ = _init(tmp_path, capsys)
    assert main(["run", "--config", str(conf), "--listen", "localhost"]) == 2
    err = capsys.readouterr().err
    assert 'http.listen: "localhost" has no port' in err and "loopback" not in err


def test_make_says_what_it_installs_before_it_installs() -> None:
    repo = Path(__file__).resolve().parent.parent
    dry = subprocess.run(
        ["make", "-n", "-B", "setup"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for slow in ("-m venv", "pip install -q -e"):
        at = next(i for i, line in enumerate(dry) if slow in line)
        assert dry[at - 1].startswith("echo "), f"nothing said before {slow!r}: {dry}"
