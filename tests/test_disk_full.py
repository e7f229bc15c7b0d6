"""Disk full (R-DISK-1): sends refused with `503 store_unavailable`, nothing half
written, PHI reads fail closed when their audit entry cannot be written, readiness says
the store is failing, and the gateway recovers by itself when room returns.

Two ways to fill the store for real: a running `smsgw run` whose data directory is a
small tmpfs mounted in its own mount namespace (`unshare -m`, root only; the test
reaches the files through `/proc/<pid>/root`), and, in-process, SQLite's own page cap
(`PRAGMA max_page_count` on the writer's connection), which makes every write that
needs a new page fail with SQLITE_FULL exactly as a full disk does.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.clock import FakeClock
from gateway.store_failure import NoRoom
from gateway.tokens import create_token
from tests.conftest import CANARY_BODY, CANARY_NUMBER, TEST_CONSENT_TOML, GatewayFactory
from tests.http_daemon import Daemon, exchange, split_response
from tests.test_api import start_client

STORE_UNAVAILABLE = "store_unavailable"
MAX_SENDS = 3000  # a bound, never reached: the store fills long before


async def test_a_full_store_refuses_sends_and_recovers_without_restart(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway()
    token = await create_token(gw.store, "t", frozenset({"send", "read", "phi"}), gw.clock)
    auth = {"Authorization": f"Bearer {token.text}"}
    client = await start_client(gw)
    try:

        async def send(body: str = CANARY_BODY) -> tuple[int, dict[str, Any]]:
            resp = await client.post(
                "/api/v1/messages",
                data=json.dumps({"to": CANARY_NUMBER, "body": body}),
                headers=auth,
            )
            return resp.status, await resp.json()

        status, first = await send()
        assert status == 202

        def cap(conn: sqlite3.Connection) -> None:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages}")

        await gw.store.writer.call_outside_transaction(cap)
        accepted = [first["id"]]
        for _ in range(MAX_SENDS):
            status, body = await send()
            if status != 202:
                break
            accepted.append(body["id"])
        assert status == 503 and body["error"]["code"] == STORE_UNAVAILABLE, body
        assert CANARY_NUMBER not in json.dumps(body) and CANARY_BODY not in json.dumps(body)

        resp = await client.get("/api/v1/healthz")
        health = await resp.json()
        assert resp.status == 503 and "store" in health["reason"], health
        # A PHI read is served only once its audit entry is written: when that entry
        # no longer fits either, the read fails closed.
        served = 0
        for _ in range(MAX_SENDS):
            resp = await client.get(f"/api/v1/messages/{first['id']}?include=phi", headers=auth)
            text = await resp.text()
            if resp.status != 200:
                break
            served += 1
        assert resp.status == 503 and STORE_UNAVAILABLE in text and CANARY_BODY not in text
        reads = [e for e in await gw.audit.entries(limit=MAX_SENDS) if e.action == "phi_read"]
        assert len(reads) == served
        with pytest.raises(NoRoom):
            await gw.store.probe(clock.time())  # what the daemon's store watch tries
        assert gw.store.failing == "disk_full"
        # A commit that needs no room (a send's state rewritten in its page) is no sign
        # the store can take new rows: the store stays failing and not ready.
        await gw.store.writer.run(
            lambda conn: conn.execute(
                "UPDATE messages SET attempts = attempts WHERE id = ?", (first["id"],)
            )
        )
        assert gw.store.failing == "disk_full"
        assert (await client.get("/api/v1/healthz")).status == 503
        assert await _writable(client, auth) == 0.0

        # Nothing half-written: exactly the acknowledged messages are stored.
        cur = await gw.store.reader.execute("SELECT id FROM messages")
        assert sorted(r[0] for r in await cur.fetchall()) == sorted(accepted)

        await gw.store.writer.call_outside_transaction(
            lambda conn: conn.execute("PRAGMA max_page_count = 1073741823")
        )
        await gw.store.probe(clock.time())
        assert gw.store.failing is None
        assert (await client.get("/api/v1/healthz")).status == 200
        assert await _writable(client, auth) == 1.0
        status, _ = await send()
        assert status == 202
        check = await gw.store.writer.call_outside_transaction(
            lambda conn: conn.execute("PRAGMA integrity_check").fetchone()[0]
        )
        assert check == "ok"
        assert (await gw.audit.verify()).ok
    finally:
        await client.close()


async def _writable(client: Any, auth: dict[str, str]) -> float:
    """`smsgw_store_writable` as /metrics shows it."""
    resp = await client.get("/api/v1/metrics", headers=auth)
    for line in (await resp.text()).splitlines():
        if line.startswith("smsgw_store_writable "):
            return float(line.split()[1])
    raise AssertionError("no smsgw_store_writable in /metrics")


# -- on a real, small file system ------------------------------------------------------


def _can_mount_tmpfs(where: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = where / "probe"
    probe.mkdir()
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {probe}"],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


class SmallDiskDaemon(Daemon):
    """`smsgw run` with its data directory moved onto an 8 MiB tmpfs of its own."""

    def __init__(self, tmp_path: Path) -> None:
        self.mounted = tmp_path / "small"
        self.mounted.mkdir()
        self._source = tmp_path / "data"
        self._source.mkdir()
        super().__init__(self._source, TEST_CONSENT_TOML)

    def launch(self, conf: Path) -> subprocess.Popen[bytes]:
        # The config points at the tmpfs; the data made by `init` is copied onto it.
        text = conf.read_text().replace(
            f'data_dir = "{self._source}"', f'data_dir = "{self.mounted}"'
        )
        conf.write_text(text)
        script = (
            f"mount -t tmpfs -o size=8m,mode=0700 tmpfs {self.mounted}"
            f' && cp -a {self._source}/. {self.mounted}/ && exec "$@"'
        )
        return subprocess.Popen(
            ["unshare", "-m", "sh", "-c", script, "sh", *self.command(conf)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def inside(self, name: str) -> Path:
        """A file on the daemon's tmpfs, as this process reaches it."""
        return Path(f"/proc/{self.proc.pid}/root") / str(self.mounted).lstrip("/") / name


def _request(port: int, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    data = b"" if body is None else json.dumps(body).encode()
    raw = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\nConnection: close"
        "\r\n\r\n"
    ).encode() + data
    status, _, payload = split_response(exchange(port, raw))
    return status, json.loads(payload)


def _fill(path: Path) -> None:
    with path.open("wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())


# Run inside the daemon's mount namespace (`nsenter`): SQLite resolves the symlink that
# /proc/<pid>/root is, so from outside it would open the empty mount point instead.
CHECK = """
import json, sqlite3, sys
from pathlib import Path
from gateway.store import crypto
from gateway.store.audit_log import GENESIS, AuditEntry, audit_key, canonical, chain_hash
conn = sqlite3.connect(sys.argv[1])
key = audit_key(crypto.read_master_key(Path(sys.argv[2])))
prev, chain = GENESIS, True
for n, row in enumerate(conn.execute("SELECT * FROM audit_log ORDER BY seq"), 1):
    e = AuditEntry(*row)
    entry = canonical(e.seq, e.at, e.actor, e.action, e.target_kind, e.target_id, e.detail)
    chain = chain and e.seq == n and e.prev_hash == prev and chain_hash(key, prev, entry) == e.hash
    prev = e.hash
print(json.dumps({
    "ids": [r[0] for r in conn.execute("SELECT id FROM messages")],
    "integrity": conn.execute("PRAGMA integrity_check").fetchone()[0],
    "audit_chain": chain,
}))
"""


def _check_inside(d: SmallDiskDaemon) -> dict[str, Any]:
    done = subprocess.run(
        [
            "nsenter",
            "-t",
            str(d.proc.pid),
            "-m",
            "--",
            sys.executable,
            "-c",
            CHECK,
            str(d.mounted / "smsgw.db"),
            str(d.mounted / "master.key"),
        ],
        capture_output=True,
        check=False,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@contextlib.contextmanager
def _small_disk(tmp_path: Path) -> Iterator[SmallDiskDaemon]:
    daemon = SmallDiskDaemon(tmp_path)
    try:
        yield daemon
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.send_signal(signal.SIGTERM)
        daemon.stop()


def test_disk_full_on_a_real_small_filesystem(tmp_path: Path) -> None:
    if not _can_mount_tmpfs(tmp_path) or shutil.which("nsenter") is None:
        pytest.skip(
            "no mount namespace here (needs root and unshare); the in-process test"
            " above fills the store through SQLite's page cap instead"
        )
    with _small_disk(tmp_path) as d:
        status, first = _request(
            d.port, "POST", "/api/v1/messages", d.token, {"to": CANARY_NUMBER, "body": CANARY_BODY}
        )
        assert status == 202, first
        accepted = [first["id"]]
        _fill(d.inside("filler"))
        for _ in range(MAX_SENDS):
            status, body = _request(
                d.port,
                "POST",
                "/api/v1/messages",
                d.token,
                {"to": CANARY_NUMBER, "body": CANARY_BODY},
            )
            if status != 202:
                break
            accepted.append(body["id"])
        assert status == 503 and body["error"]["code"] == STORE_UNAVAILABLE, body
        status, health = _request(d.port, "GET", "/api/v1/healthz", d.token)
        assert status == 503 and "store" in health["reason"], health
        d.wait_log(lambda e: e.get("event") == "store_failing")

        d.inside("filler").unlink()
        d.wait_log(lambda e: e.get("event") == "store_recovered", limit=30)
        status, health = _request(d.port, "GET", "/api/v1/healthz", d.token)
        assert status == 200, health
        status, body = _request(
            d.port, "POST", "/api/v1/messages", d.token, {"to": CANARY_NUMBER, "body": CANARY_BODY}
        )
        assert status == 202, body
        accepted.append(body["id"])

        found = _check_inside(d)
        assert set(accepted) <= set(found["ids"])  # every acknowledged message is there
        assert found["integrity"] == "ok" and found["audit_chain"], found
        assert CANARY_NUMBER not in d.stderr() and CANARY_BODY not in d.stderr()
