"""Key custody without a TPM: a master key wrapped by a passphrase (`smsgw keys
protect`), unlocked at start from a systemd credential, a file, systemd-ask-password or
the terminal; or the key on separate media that must be mounted."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pty
import select
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from gateway import custody
from gateway.cli import main
from gateway.config import ConfigError, from_mapping
from tests.conftest import SMSGW
from tests.socket_rig import TOKEN_RE, Service, init_data_dir, running

PASSPHRASE = "correct horse battery staple"


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _protected(tmp_path: Path) -> tuple[Path, str, Path]:
    """An initialised data directory whose master key is protected; (config, the plain
    key file's text before, the passphrase file)."""
    conf = init_data_dir(tmp_path)
    plain = (tmp_path / "master.key").read_text()
    phrase = tmp_path / "phrase"
    phrase.write_text(PASSPHRASE + "\n")
    code, out, err = _cli(
        "keys", "protect", "--passphrase-file", str(phrase), "--config", str(conf)
    )
    assert code == 0, err
    assert "now protected" in out
    return conf, plain, phrase


def _audit(data_dir: Path) -> list[tuple[str, str]]:
    with closing(sqlite3.connect(data_dir / "smsgw.db")) as conn:
        rows = conn.execute("SELECT actor, action FROM audit_log ORDER BY seq").fetchall()
    return [(str(a), str(b)) for a, b in rows]


def test_protect_and_unprotect_round_trip(tmp_path: Path) -> None:
    conf, plain, phrase = _protected(tmp_path)
    key_file = tmp_path / "master.key"
    sealed = key_file.read_text()
    doc = json.loads(sealed)
    assert doc["format"] == custody.FORMAT and doc["version"] == 1 and doc["kdf"] == "argon2id"
    assert plain.strip() not in sealed
    assert key_file.stat().st_mode & 0o777 == 0o600
    cfg = ("--config", str(conf))
    assert _cli("keys", "protect", "--passphrase-file", str(phrase), *cfg)[0] == 1
    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase at all\n")
    code, out, err = _cli("keys", "unprotect", "--passphrase-file", str(wrong), *cfg)
    assert code == 2 and out == ""
    assert err == f"smsgw: the passphrase does not open the master key {key_file}\n"
    assert key_file.read_text() == sealed, "a wrong passphrase changes nothing"
    code, out, _ = _cli("keys", "unprotect", "--passphrase-file", str(phrase), *cfg)
    assert code == 0 and "plain key file again" in out
    assert key_file.read_text() == plain
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob(".master.key*")), "no temporary file left"
    assert _audit(tmp_path)[-2:] == [
        ("console", "master_key_protected"),
        ("console", "master_key_unprotected"),
    ]


def test_a_short_passphrase_is_refused(tmp_path: Path) -> None:
    conf = init_data_dir(tmp_path)
    short = tmp_path / "short"
    short.write_text("tooshort\n")
    before = (tmp_path / "master.key").read_text()
    code, _, err = _cli("keys", "protect", "--passphrase-file", str(short), "--config", str(conf))
    assert code == 2 and "at least 12 characters" in err and "tooshort" not in err
    assert (tmp_path / "master.key").read_text() == before


def test_a_lowered_cost_or_another_version_does_not_open() -> None:
    key = os.urandom(32)
    doc = json.loads(custody.protect(key, PASSPHRASE))
    where = Path("k")
    assert custody.unprotect(json.dumps(doc), PASSPHRASE, where) == key
    with pytest.raises(custody.CustodyError, match="passphrase does not open"):
        custody.unprotect(json.dumps({**doc, "iterations": 2}), PASSPHRASE, where)
    with pytest.raises(custody.CustodyError, match="format version 2"):
        custody.unprotect(json.dumps({**doc, "version": 2}), PASSPHRASE, where)
    with pytest.raises(custody.CustodyError, match="memory_kib out of range"):
        custody.unprotect(json.dumps({**doc, "memory_kib": 2**40}), PASSPHRASE, where)


def test_the_service_unlocks_with_the_systemd_credential(tmp_path: Path) -> None:
    conf, _, phrase = _protected(tmp_path)
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    (credentials / custody.CREDENTIAL).write_text(PASSPHRASE)
    phrase.unlink()
    with running(conf, {"CREDENTIALS_DIRECTORY": str(credentials)}):
        # The console has no passphrase (no terminal): it goes through the service.
        code, out, _ = _cli("token", "create", "--scope", "read", "--config", str(conf))
        assert code == 0 and TOKEN_RE.fullmatch(out.strip())
    assert ("smsgw", "master_key_unlocked") in _audit(tmp_path)  # at start, via the credential
    code, out, err = _cli("token", "list", "--config", str(conf))
    assert code == 2 and out == ""
    assert "protected by a passphrase" in err and "Start the service" in err


def test_the_service_unlocks_with_the_configured_passphrase_file(tmp_path: Path) -> None:
    conf, _, phrase = _protected(tmp_path)
    conf.write_text(
        conf.read_text().replace(
            "[store]\n", f'[store]\nmaster_key_passphrase_file = "{phrase}"\n', 1
        )
    )
    cfg = ("--config", str(conf))
    with running(conf):
        assert _cli("audit", "verify", *cfg)[0] == 0
        # Custody changes while it runs are audited by the service, as the console's user.
        assert _cli("keys", "unprotect", "--passphrase-file", str(phrase), *cfg)[0] == 0
        assert _cli("keys", "protect", "--passphrase-file", str(phrase), *cfg)[0] == 0
    assert _audit(tmp_path)[-4:] == [
        ("smsgw", "master_key_unlocked"),  # at start, with the configured file
        ("console:root", "audit_verified"),
        ("console:root", "master_key_unprotected"),
        ("console:root", "master_key_protected"),
    ]
    # With the file there, the console unlocks the key itself too.
    assert _cli("audit", "verify", *cfg)[0] == 0


def _files(directory: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.iterdir()}


def test_a_wrong_or_missing_passphrase_is_refused_and_nothing_else(tmp_path: Path) -> None:
    conf, _, phrase = _protected(tmp_path)
    phrase.unlink()
    before = _files(tmp_path)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / custody.CREDENTIAL).write_text("the wrong passphrase")
    wrong = Service(conf, {"CREDENTIALS_DIRECTORY": str(credentials)}, ready=False)
    assert wrong.exit_code() == 2
    assert wrong.stderr().strip().splitlines()[-1] == (
        f"smsgw: the passphrase does not open the master key {tmp_path / 'master.key'}"
    )
    assert "the wrong passphrase" not in wrong.stderr()
    # (smsgw.lock is taken before the key is read: one start per data directory)
    after = {k: v for k, v in _files(tmp_path).items() if k not in ("credentials", "smsgw.lock")}
    assert after == before, "no store opened, no socket, no file changed"
    none = Service(conf, ready=False)  # no credential, no file, no terminal
    assert none.exit_code() == 2
    assert "protected by a passphrase and none was given" in none.stderr()
    assert f"credential {custody.CREDENTIAL}" in none.stderr()


def _read_until(fd: int, text: str, limit: float = 30) -> str:
    """What the terminal shows, up to and including `text` (bounded by `limit`)."""
    seen = b""
    deadline = time.monotonic() + limit
    while text.encode() not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {text!r} on the terminal; got {seen[-2000:]!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the other side closed
                chunk = b""
            assert chunk, f"terminal closed before {text!r}; got {seen[-2000:]!r}"
            seen += chunk
    return seen.decode(errors="replace")


@contextlib.contextmanager
def _on_a_terminal(argv: list[str], env: dict[str, str]) -> Iterator[tuple[int, int]]:
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child becomes the program
        os.execvpe(argv[0], argv, env)  # noqa: S606 - the program under test, no shell
    try:
        yield pid, fd
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
        os.close(fd)


def test_the_service_asks_on_its_terminal(tmp_path: Path) -> None:
    conf, _, phrase = _protected(tmp_path)
    phrase.unlink()
    env = {k: v for k, v in os.environ.items() if k != "INVOCATION_ID"}
    with _on_a_terminal([*SMSGW, "run", "--config", str(conf)], env) as (_, fd):
        _read_until(fd, "Passphrase for the smsgw master key")
        os.write(fd, PASSPHRASE.encode() + b"\n")
        shown = _read_until(fd, '"event": "listening"')
        assert PASSPHRASE not in shown, "not echoed"


def test_under_systemd_the_service_asks_through_systemd_ask_password(tmp_path: Path) -> None:
    # As under systemd (INVOCATION_ID set, no terminal): the question goes to the
    # password agents; the console's agent, on a terminal of its own, answers it.
    conf, _, phrase = _protected(tmp_path)
    phrase.unlink()
    service = Service(conf, {"INVOCATION_ID": "0" * 32}, ready=False)
    try:
        service.wait_log(
            lambda e: (
                e.get("event") == "master_key_passphrase_asked"
                and e.get("via") == "systemd-ask-password"
            )
        )
        agent = ["systemd-tty-ask-password-agent", "--watch"]
        with _on_a_terminal(agent, dict(os.environ)) as (_, fd):
            _read_until(fd, "Passphrase for the smsgw master key")
            os.write(fd, PASSPHRASE.encode() + b"\n")
            service.wait_log(lambda e: e.get("event") == "listening")
    finally:
        service.stop()


def test_key_media_must_be_mounted(tmp_path: Path) -> None:
    conf = init_data_dir(tmp_path)
    media = tmp_path / "media"
    media.mkdir()
    key = media / "master.key"
    conf.write_text(
        conf.read_text().replace(
            'master_key_file = "master.key"',
            f'master_key_file = "{key}"\nmaster_key_media = "{media}"',
        )
    )
    absent = Service(conf, ready=False)
    assert absent.exit_code() == 2
    line = absent.stderr().strip().splitlines()[-1]
    assert line == (
        f"smsgw: the master key's media is not mounted at {media} (store.master_key_media):"
        " insert it and mount it there, then start again"
    )
    code, out, _ = _cli("doctor", "--config", str(conf), "--wait", "0")
    assert code == 1 and "not mounted at" in out
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "smsgw-key", str(media)]
    ).returncode:
        pytest.skip("cannot mount a tmpfs here to stand for the key's media")
    try:
        key.write_bytes((tmp_path / "master.key").read_bytes())
        key.chmod(0o600)
        with running(conf):
            assert _cli("user", "list", "--config", str(conf))[0] == 0
    finally:
        subprocess.run(["umount", str(media)], check=True)


def test_custody_keys_are_checked_with_their_names(tmp_path: Path) -> None:
    base = {"data_dir": str(tmp_path)}
    with pytest.raises(ConfigError, match=r"^store.master_key_media: expected an absolute"):
        from_mapping({**base, "store": {"master_key_media": "media"}})
    with pytest.raises(ConfigError, match=r"^store.master_key_media: store.master_key_file must"):
        from_mapping({**base, "store": {"master_key_media": "/media/key"}})
    with pytest.raises(ConfigError, match=r"^store.master_key_passphrase_file: empty"):
        from_mapping({**base, "store": {"master_key_passphrase_file": ""}})
    with pytest.raises(ConfigError, match=r"^admin.socket"):
        from_mapping({**base, "admin": {"socket": ""}})
    ok = from_mapping(
        {**base, "store": {"master_key_media": "/media/key", "master_key_file": "/media/key/k"}}
    )
    assert ok.master_key_path == Path("/media/key/k")
