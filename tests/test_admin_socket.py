"""Console commands on a sealed install: `smsgw user`, `token`, `audit` through the
running service's admin socket (a real `smsgw run`), who the socket serves, and a root
console that never leaves files the service cannot open."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path
from typing import Any

from gateway import config as config_mod
from gateway.cli import main
from gateway.ops import client
from gateway.ops.registry import OpContext, op
from tests.admin_support import PASSWORD
from tests.socket_rig import NOBODY, TOKEN_RE, as_user, init_data_dir, open_dir, owners, running


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _get(url: str, token: str) -> int:
    auth = {"Authorization": f"Bearer {token}"}
    req = urllib.request.Request(url, headers=auth)  # noqa: S310 - loopback, http
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return e.code


def _audit(db: Path) -> list[tuple[str, str, str]]:
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT actor, action, detail FROM audit_log ORDER BY seq")
        return [(str(a), str(b), str(c)) for a, b, c in rows]


def test_sealed_install_console_commands_run_inside_the_service(tmp_path: Path) -> None:
    # The key exists only for the service (as a TPM-sealed systemd credential does): it is
    # read at start from a path that is gone by the time the console runs.
    conf = init_data_dir(tmp_path)
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    key = credentials / "smsgw-master-key"
    shutil.move(tmp_path / "master.key", key)
    conf.write_text(conf.read_text().replace('"master.key"', f'"{key}"'))
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    cfg = ("--config", str(conf))
    url = "http://" + config_mod.load(conf).http.listen
    with running(conf) as service:
        shutil.rmtree(credentials)
        code, out, err = _cli(
            "user", "add", "--role", "admin", "alice", "--password-file", str(pw), *cfg
        )
        assert (code, err) == (0, "") and out.startswith("added alice (admin), id ")
        code, out, err = _cli(
            "user", "add", "--role", "admin", "alice", "--password-file", str(pw), *cfg
        )
        assert code == 1 and "exists" in err and out == ""
        code, out, _ = _cli("user", "list", *cfg)
        assert code == 0 and out.splitlines()[0].split() == ["ID", "STATE", "ROLE", "2FA", "NAME"]
        assert re.search(r"[0-9a-f]{12}\s+active\s+admin\s+-\s+alice", out)
        code, out, _ = _cli("token", "create", "--scope", "read", "--name", "ops", *cfg)
        assert code == 0 and TOKEN_RE.fullmatch(out.strip()), out
        token = out.strip()
        assert _get(url + "/api/v1/routes", token) == 200
        code, out, _ = _cli("token", "list", *cfg)
        assert out.splitlines()[0].split() == ["ID", "STATE", "SCOPES", "NAME"]
        token_id = token.split("_")[1]
        assert re.search(rf"{token_id}\s+active\s+read\s+ops", out) and token not in out
        assert _cli("token", "revoke", token_id, *cfg)[0] == 0
        assert _get(url + "/api/v1/routes", token) == 401, "the service's cache forgot it"
        assert _cli("token", "revoke", token_id, *cfg)[0] == 1
        code, out, _ = _cli("audit", "verify", *cfg)
        assert code == 0 and out.startswith("audit chain intact:")
        log = service.stop()
    assert PASSWORD not in log and token not in log
    assert not (tmp_path / "admin.sock").exists(), "the socket goes with the service"
    # The service is down and the key is nowhere the console can read: say what to do.
    code, out, err = _cli("user", "list", *cfg)
    assert code == 2 and out == ""
    assert "Start the service" in err and str(key) in err
    entries = _audit(tmp_path / "smsgw.db")
    ours = [(a, b) for a, b, _ in entries if a.startswith("console:")]
    assert ours == [
        ("console:root", "user_created"),
        ("console:root", "token_created"),
        ("console:root", "token_revoked"),
        ("console:root", "audit_verified"),
    ]
    assert all(PASSWORD not in d for _, _, d in entries)


@op("test.file_owners")
async def _file_owners(ctx: OpContext, args: dict[str, Any]) -> int:
    """Who owns each file of the data directory while the store is open (-wal, -shm),
    after writing one of its own there (as a key replacement or a backup does)."""
    await ctx.audit.record(ctx.actor, "test_probe")  # a write: the WAL holds a frame
    data_dir = Path(ctx.config.data_dir)
    (data_dir / "written-by-op").write_text("x")
    ctx.out(json.dumps({"euid": os.geteuid(), "files": owners(data_dir)}))
    return 0


def test_root_console_runs_as_the_data_directorys_owner() -> None:
    with open_dir() as base:
        data = base / "data"
        conf = init_data_dir(data)
        pw = base / "pw"
        pw.write_text(PASSWORD + "\n")
        shutil.chown(base / "pw", "root")
        os.system(f"chown -R {NOBODY}:{NOBODY} {data}")  # noqa: S605 - a fixed command
        cfg = ("--config", str(conf))
        assert os.geteuid() == 0
        code, out, _ = _cli(
            "user", "add", "--role", "admin", "bob", "--password-file", str(pw), *cfg
        )
        assert code == 0 and "added bob" in out
        assert _cli("token", "create", *cfg)[0] == 0
        assert _cli("audit", "verify", *cfg)[0] == 0
        config = config_mod.load(conf)
        out_lines = io.StringIO()
        with contextlib.redirect_stdout(out_lines):
            assert client.run(config, "test.file_owners", {}) == 0
        during = json.loads(out_lines.getvalue())
        assert during["euid"] == NOBODY
        assert {"smsgw.db", "smsgw.db-wal", "smsgw.db-shm", "written-by-op"} <= set(during["files"])
        assert set(during["files"].values()) == {NOBODY}, during
        assert set(owners(data).values()) == {NOBODY}, owners(data)
        actions = [b for _, b, _ in _audit(data / "smsgw.db")]
        assert actions[-4:] == ["user_created", "token_created", "audit_verified", "test_probe"]


def test_a_uid_neither_root_nor_the_services_is_refused_and_audited() -> None:
    # The socket is reachable (its directory and file are open to group 0, which the
    # client is in), so only the kernel's word on the peer's uid stops it.
    with open_dir() as base:
        data = base / "data"
        sockets = base / "run"
        sockets.mkdir()
        sockets.chmod(0o750)  # as the unit's RuntimeDirectory=smsgw, RuntimeDirectoryMode=0750
        conf = init_data_dir(data, f'socket = "{sockets / "admin.sock"}"\n')
        config = config_mod.load(conf)
        with running(conf) as service:
            mode = (sockets / "admin.sock").stat().st_mode
            assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660
            code, out, err = as_user(
                lambda: client.run(config, "user.list", {}), NOBODY, NOBODY, (0,)
            )
            assert (code, out) == (2, ""), err
            assert "only root and the service's user" in err
            service.wait_log(lambda e: e.get("event") == "admin_socket_refused")
            # Without the group the file itself is closed to it: a plain message.
            code, out, err = as_user(lambda: client.run(config, "user.list", {}), NOBODY, NOBODY)
            assert (code, out) == (2, "") and "not open to this user" in err
            assert _cli("user", "list", "--config", str(conf))[0] == 0  # root still is
        refused = [e for e in _audit(data / "smsgw.db") if e[1] == "admin_socket_refused"]
        assert refused == [
            (
                "console:nobody",
                "admin_socket_refused",
                json.dumps({"uid": NOBODY}, separators=(",", ":")),
            )
        ]


def test_a_service_running_as_its_own_user_serves_root_and_that_user() -> None:
    # As packaged: the service runs as its own user, owns the data directory, and alone
    # can read the key (a 0700 directory of its own). Root's console and the service
    # user's both go through the socket; every file stays the service's.
    with open_dir() as base:
        data = base / "data"
        conf = init_data_dir(data)
        secrets = base / "secrets"
        secrets.mkdir(mode=0o700)
        key = secrets / "master.key"
        shutil.move(data / "master.key", key)
        conf.write_text(conf.read_text().replace('"master.key"', f'"{key}"'))
        pw = base / "pw"
        pw.write_text(PASSWORD + "\n")
        for path in (data, secrets):
            subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(path)], check=True)
        config = config_mod.load(conf)
        cfg = ("--config", str(conf))
        with running(conf, uid=NOBODY):
            code, out, err = _cli(
                "user", "add", "--role", "admin", "carol", "--password-file", str(pw), *cfg
            )
            assert code == 0 and "added carol" in out, err
            assert _cli("token", "create", *cfg)[0] == 0
            code, out, err = as_user(lambda: client.run(config, "user.list", {}), NOBODY, NOBODY)
            assert code == 0 and "carol" in out, err
            code, _, err = as_user(lambda: client.run(config, "audit.verify", {}), NOBODY, NOBODY)
            assert code == 0, err
        assert set(owners(data).values()) == {NOBODY}, owners(data)
        actors = [(a, b) for a, b, _ in _audit(data / "smsgw.db") if a.startswith("console:")]
        assert actors == [
            ("console:root", "user_created"),
            ("console:root", "token_created"),
            ("console:nobody", "audit_verified"),
        ]
