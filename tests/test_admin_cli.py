"""`smsgw user`, `smsgw audit verify`, `smsgw init --self-signed-cert`, and the daemon
serving the panel over HTTPS."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import ssl
from contextlib import closing
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509

from gateway.cli import main
from tests.admin_support import PASSWORD
from tests.conftest import FAST_PASSWORD_HASH
from tests.ports import free_port
from tests.test_cli import SMSGW, Daemon


def _init(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> Path:
    assert main(["init", "--data-dir", str(tmp_path), *extra]) == 0
    capsys.readouterr()
    conf = tmp_path / "smsgw.toml"
    fast = "".join(f"{k} = {v}\n" for k, v in FAST_PASSWORD_HASH.items())
    conf.write_text(conf.read_text() + "\n[admin]\n" + fast)
    return conf


def _password_file(tmp_path: Path, text: str = PASSWORD) -> str:
    path = tmp_path / "pw"
    path.write_text(text + "\n")
    return str(path)


def test_user_add_list_disable_reset_unlock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = _init(tmp_path, capsys)
    pw = _password_file(tmp_path)
    cfg = ["--config", str(conf)]
    assert main(["user", "add", "--role", "admin", "alice", "--password-file", pw, *cfg]) == 0
    assert "added alice (admin)" in capsys.readouterr().out
    assert main(["user", "add", "--role", "admin", "alice", "--password-file", pw, *cfg]) == 1
    assert "exists" in capsys.readouterr().err
    weak = _password_file(tmp_path, "Password123456!")
    assert main(["user", "add", "--role", "viewer", "bob", "--password-file", weak, *cfg]) == 1
    err = capsys.readouterr().err
    assert "commonly used" in err and "Password123456!" not in err
    with pytest.raises(SystemExit):
        main(["user", "add", "--role", "root", "carl", "--password-file", pw, *cfg])
    capsys.readouterr()
    assert main(["user", "list", *cfg]) == 0
    listing = capsys.readouterr().out
    assert re.search(r"[0-9a-f]{12}\s+active\s+admin\s+-\s+alice", listing)
    assert PASSWORD not in listing
    for action in ("disable", "enable", "reset-totp", "unlock"):
        assert main(["user", action, "alice", *cfg]) == 0, action
    assert main(["user", "disable", "nobody", *cfg]) == 1
    capsys.readouterr()
    assert main(["audit", "verify", *cfg]) == 0
    out = capsys.readouterr().out
    assert out.startswith("audit chain intact:")
    with closing(sqlite3.connect(tmp_path / "smsgw.db")) as conn:
        actions = [r[0] for r in conn.execute("SELECT action FROM audit_log ORDER BY seq")]
        hashes = [r[0] for r in conn.execute("SELECT password_hash FROM users")]
    assert actions == [
        "master_key_generated",
        "store_created",
        "token_created",
        "user_created",
        "user_disabled",
        "user_enabled",
        "totp_reset",
        "account_unlocked",
        "audit_verified",
    ]
    assert hashes[0].startswith("$argon2id$")


def test_user_add_without_a_console_or_file_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = _init(tmp_path, capsys)
    assert main(["user", "add", "--role", "admin", "alice", "--config", str(conf)]) == 1
    assert "--password-file" in capsys.readouterr().err


def test_no_default_account_after_init(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _init(tmp_path, capsys)
    with closing(sqlite3.connect(tmp_path / "smsgw.db")) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 0


def test_audit_verify_exits_1_on_a_tampered_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = _init(tmp_path, capsys)
    assert main(["token", "create", "--config", str(conf)]) == 0
    with closing(sqlite3.connect(tmp_path / "smsgw.db", isolation_level=None)) as conn:
        conn.execute("DROP TRIGGER audit_log_no_update")
        conn.execute("UPDATE audit_log SET actor = 'user:000000000000' WHERE seq = 2")
    capsys.readouterr()
    assert main(["audit", "verify", "--config", str(conf)]) == 1
    assert capsys.readouterr().out.startswith("audit chain BROKEN at entry 2:")


def test_init_self_signed_cert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["init", "--data-dir", str(tmp_path), "--self-signed-cert", "--hostname", "gw.local"])
        == 0
    )
    assert "self-signed certificate" in capsys.readouterr().out
    cert_path, key_path = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
    assert key_path.stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["gw.local"]
    text = (tmp_path / "smsgw.toml").read_text()
    assert 'tls_cert_file = "tls/cert.pem"' in text and 'tls_key_file = "tls/key.pem"' in text
    before = key_path.read_bytes()
    assert main(["init", "--data-dir", str(tmp_path), "--self-signed-cert"]) == 0
    assert "exists; kept" in capsys.readouterr().out
    assert key_path.read_bytes() == before


async def test_daemon_serves_the_panel_over_https(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = await asyncio.to_thread(
        _init, tmp_path, capsys, "--self-signed-cert", "--hostname", "127.0.0.1"
    )
    port = free_port()
    conf.write_text(conf.read_text().replace("127.0.0.1:8080", f"127.0.0.1:{port}"))
    pw = _password_file(tmp_path)
    add = ["user", "add", "--role", "admin", "root", "--password-file", pw, "--config", str(conf)]
    assert await asyncio.to_thread(main, add) == 0
    proc = await asyncio.create_subprocess_exec(
        *SMSGW,
        "run",
        "--config",
        str(conf),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    d = Daemon(proc, f"https://127.0.0.1:{port}")
    try:
        event = await d.wait_log(lambda e: e.get("event") == "listening")
        assert event["url"].startswith("https://")
        trust = ssl.create_default_context(cafile=str(tmp_path / "tls" / "cert.pem"))
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=trust),
            cookie_jar=aiohttp.CookieJar(unsafe=True),  # browsers keep cookies for IP hosts
        ) as http:
            page = await http.get(f"{d.url}/login")
            assert page.status == 200
            assert page.headers["Strict-Transport-Security"].startswith("max-age=")
            token = re.search(r'name="csrf-token" content="([^"]+)"', await page.text())
            assert token is not None
            r = await http.post(
                f"{d.url}/login",
                data={"username": "root", "password": PASSWORD, "csrf": token.group(1)},
                headers={"Origin": d.url},
                allow_redirects=False,
            )
            assert r.status == 303
            assert r.headers["Set-Cookie"].startswith("__Host-smsgw_session=")
        with pytest.raises(aiohttp.ClientError):
            async with aiohttp.ClientSession() as plain:
                await plain.get(f"http://127.0.0.1:{port}/login")
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 20)
