"""Backup, verify and restore against a real store (issue 14, point 4), in process.

The end-to-end run under SMPP load, with real `smsgw run` processes, is in
`test_backup_e2e.py`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import io
import json
import os
import resource
import shutil
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.backup import snapshot, verify
from gateway.backup.manifest import fingerprint, manifest_path, read_manifest
from gateway.backup.restore import REFUSED, restore
from gateway.cli import main
from gateway.ops import registry
from gateway.startup import DataDirLock
from gateway.store import crypto
from gateway.store.schema import MIGRATIONS
from tests.conftest import (
    CANARY_BODY,
    CANARY_DIGITS,
    SMSGW,
    GatewayFactory,
    accept,
    make_config,
)


def _ids_in(backup: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{backup}?mode=ro&immutable=1", uri=True)
    try:
        return {r[0] for r in conn.execute("SELECT id FROM messages")}
    finally:
        conn.close()


async def test_backup_under_writes_is_the_snapshot_it_started_from(
    open_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await open_gateway()
    before = {await accept(gw, body=CANARY_BODY) for _ in range(300)}
    loop = asyncio.get_running_loop()
    during: list[str] = []
    steps: list[tuple[int, int]] = []

    def progress(done: int, total: int, what: str) -> None:
        if what.startswith("backup: pages"):
            steps.append((done, total))
            if len(during) < 5:  # a commit by the gateway between two steps of the copy
                mid = asyncio.run_coroutine_threadsafe(accept(gw, body=CANARY_BODY), loop)
                during.append(mid.result(20))

    path, manifest = await asyncio.to_thread(
        snapshot.take,
        gw.store.path,
        tmp_path / "out",
        gw.store.master_key,
        step_pages=4,
        progress=progress,
    )
    assert len(during) == 5 and len(steps) > 5
    dones = [d for d, _ in steps]
    assert dones == sorted(dones) and steps[-1][0] == steps[-1][1]  # never restarted
    assert _ids_in(path) == before  # every commit before it, none made during it
    assert await gw.store.records.message(during[-1]) is not None  # the writer went on
    verdict = verify.verify(path, gw.store.master_key)
    assert verdict.code == verify.OK, verdict.lines
    assert manifest.page_count == dones[-1]
    raw = path.read_bytes()
    assert CANARY_BODY.encode() not in raw and CANARY_DIGITS.encode() not in raw
    key_b64 = base64.b64encode(gw.store.master_key)
    text = manifest_path(path).read_bytes()
    assert gw.store.master_key not in raw + text and key_b64 not in raw + text
    assert json.loads(text)["key_fingerprint"] == fingerprint(gw.store.master_key)
    assert hashlib.sha256(raw).hexdigest() == manifest.sha256
    for made in (path, manifest_path(path), path.parent):
        mode = stat.S_IMODE(made.stat().st_mode)
        assert mode & 0o077 == 0, oct(mode)
    assert sorted(p.name for p in path.parent.iterdir()) == [
        path.name,
        manifest_path(path).name,
    ]  # no temporary file, no -wal or -journal left


async def test_backup_op_reports_progress_and_audits(
    open_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await open_gateway()
    await accept(gw)
    lines: list[str] = []
    steps: list[tuple[int, int, str]] = []
    code = await registry.run_in(
        gw.config,
        gw.store,
        gw.store.master_key,
        "backup.create",
        {"out": str(tmp_path / "out"), "step_pages": 8},
        actor="console",
        out=lines.append,
        progress=lambda d, t, w: steps.append((d, t, w)),
        gateway=gw,
    )
    assert code == 0
    (path,) = (tmp_path / "out").glob("*.db")
    assert lines[0] == f"backup: {path}"
    assert any(w == "backup: pages copied" and d == t for d, t, w in steps)
    (entry, *_) = await gw.audit.entries(limit=1)
    assert (entry.action, entry.target_id) == ("backup_created", path.name)
    lines.clear()
    refused = await registry.run_in(
        gw.config,
        gw.store,
        gw.store.master_key,
        "backup.create",
        {"out": str(tmp_path / "x"), "step_pages": 0},
        actor="console",
        out=lines.append,
    )
    assert refused == 2 and lines == [
        "backup: step_pages: expected a positive whole number of pages"
    ]
    blocked = tmp_path / "file"
    blocked.write_text("")  # --out names a file: the directory cannot be made
    lines.clear()
    code = await registry.run_in(
        gw.config,
        gw.store,
        gw.store.master_key,
        "backup.create",
        {"out": str(blocked / "sub")},
        actor="console",
        out=lines.append,
    )
    assert code == 1 and lines[0].startswith("backup: failed: ")
    assert lines[0].endswith("no backup was written")


async def _taken(gw: Gateway, tmp_path: Path) -> Path:
    path, _ = await asyncio.to_thread(
        snapshot.take, gw.store.path, tmp_path / "out", gw.store.master_key
    )
    return path


async def test_verify_finds_damage_tampering_and_a_wrong_key(
    open_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await open_gateway()
    await gw.audit.record("console", "test_entry", "thing", "1")
    path = await _taken(gw, tmp_path)
    key = gw.store.master_key
    assert verify.verify(path, key).code == verify.OK
    assert verify.verify(path, None).code == verify.OK  # what can be checked without it
    assert verify.verify(path, os.urandom(32)).code == verify.WRONG_KEY
    assert verify.verify(tmp_path / "nope.db", key).code == verify.UNREADABLE

    damaged = tmp_path / "damaged.db"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    manifest_path(damaged).write_bytes(manifest_path(path).read_bytes())
    verdict = verify.verify(damaged, key)
    assert verdict.code == verify.BAD and "checksum: MISMATCH" in verdict.lines[-1]

    # An audit row edited by someone holding only the file (and fixing up the checksum).
    edited = tmp_path / "edited.db"
    edited.write_bytes(path.read_bytes())
    conn = sqlite3.connect(edited)
    conn.execute("DROP TRIGGER audit_log_no_update")
    conn.execute("UPDATE audit_log SET actor = 'someone' WHERE action = 'test_entry'")
    conn.commit()
    conn.close()
    manifest = json.loads(manifest_path(path).read_bytes())
    manifest["sha256"] = hashlib.sha256(edited.read_bytes()).hexdigest()
    manifest_path(edited).write_text(json.dumps(manifest))
    verdict = verify.verify(edited, key)
    assert verdict.code == verify.BAD
    assert verdict.lines[-1].startswith("audit chain: BROKEN")

    # A backup from a newer smsgw (its schema version above this code's).
    newer = tmp_path / "newer.db"
    newer.write_bytes(path.read_bytes())
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 2}")
    conn.close()
    manifest = json.loads(manifest_path(path).read_bytes())
    manifest["sha256"] = hashlib.sha256(newer.read_bytes()).hexdigest()
    manifest["schema_version"] = len(MIGRATIONS) + 2
    manifest_path(newer).write_text(json.dumps(manifest))
    verdict = verify.verify(newer, key)
    assert verdict.code == verify.BAD
    assert (
        f"version {len(MIGRATIONS) + 2} is newer than this smsgw ({len(MIGRATIONS)})"
        in (verdict.lines[-1])
    )

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        args = ["backup", "--config", str(_toml(gw, tmp_path)), "--verify"]
        assert main([*args, str(path)]) == 0
        assert main([*args, str(damaged)]) == 1
        assert main([*args, str(tmp_path / "nope.db")]) == 2
        wrong = tmp_path / "wrong.key"
        crypto.generate_master_key(wrong)
        assert main([*args, str(path), "--key", str(wrong)]) == 3
    assert "backup verified" in out.getvalue()


def _toml(gw: Gateway, tmp_path: Path) -> Path:
    conf = tmp_path / "smsgw.toml"
    conf.write_text(
        f'data_dir = "{gw.config.data_dir}"\n[[routes]]\nname = "main"\ntype = "loopback"\n'
    )
    return conf


def _restore(backup: Path, target: Path, key_path: Path | None = None) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = restore(
        backup,
        target,
        target / "smsgw.db",
        key_path or target / "master.key",
        out=lines.append,
        progress=lambda d, t, w: None,
        actor="console",
    )
    return code, lines


async def test_restore_into_an_empty_dir_opens_with_everything(
    open_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await open_gateway()
    ids = [await accept(gw, body=f"{CANARY_BODY} {i}") for i in range(20)]
    path = await _taken(gw, tmp_path)
    head = (await gw.audit.verify()).head_seq
    target = tmp_path / "restored"
    target.mkdir()
    (target / "master.key").write_bytes(gw.config.master_key_path.read_bytes())
    os.chmod(target / "master.key", 0o600)
    steps: list[tuple[int, int, str]] = []
    code = await asyncio.to_thread(
        restore,
        path,
        target,
        target / "smsgw.db",
        target / "master.key",
        out=lambda line: None,
        progress=lambda d, t, w: steps.append((d, t, w)),
        actor="console",
    )
    assert code == 0
    assert steps[-1][2] == "restore: bytes copied" and steps[-1][0] == steps[-1][1]
    assert stat.S_IMODE((target / "smsgw.db").stat().st_mode) == 0o600
    assert not list(target.glob(".*tmp"))
    restored = await Gateway.open(make_config(target))
    try:
        for i, mid in enumerate(ids):
            message = await restored.store.records.message(mid)
            assert message is not None and message.body.open() == f"{CANARY_BODY} {i}"
        verdict = await restored.audit.verify()
        assert verdict.ok and verdict.head_seq == head + 1
        (last,) = await restored.audit.entries(limit=1)
        assert last.action == "store_restored"
    finally:
        await restored.stop()


async def test_restore_refuses_a_live_dir_a_store_a_missing_or_wrong_key(
    open_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await open_gateway()
    path = await _taken(gw, tmp_path)
    target = tmp_path / "t"
    target.mkdir()

    code, lines = _restore(path, target)  # no key there yet
    assert code == REFUSED and "master key" in lines[-1]
    assert sorted(p.name for p in target.iterdir()) == ["smsgw.lock"]

    wrong = target / "master.key"
    crypto.generate_master_key(wrong)
    code, lines = _restore(path, target)
    assert code == verify.WRONG_KEY
    assert any("does NOT fit this backup" in line for line in lines)
    assert not (target / "smsgw.db").exists()

    with DataDirLock(target):  # a gateway running there (the lock `smsgw run` holds)
        code, lines = await asyncio.to_thread(_restore, path, target, gw.config.master_key_path)
    assert code == REFUSED and "in use by another smsgw" in lines[-1]
    assert not (target / "smsgw.db").exists()

    (target / "smsgw.db-wal").write_bytes(b"")
    code, lines = _restore(path, target, gw.config.master_key_path)
    assert code == REFUSED and "already holds a store" in lines[-1]
    assert not (target / "smsgw.db").exists()


def test_restore_command_refuses_a_running_gateway(tmp_path: Path) -> None:
    """Through `main`, with the lock held by another process's open file (as `smsgw run`)."""
    source = tmp_path / "src"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["init", "--data-dir", str(source)]) == 0
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["backup", "--config", str(source / "smsgw.toml"), "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("*.db")
    assert read_manifest(path).schema_version > 0
    elsewhere = tmp_path / "elsewhere.toml"
    elsewhere.write_text(f'data_dir = "{tmp_path / "none"}"\n')
    assert main(["backup", "--config", str(elsewhere)]) == 2  # no store: none made either
    assert not (tmp_path / "none" / "smsgw.db").exists()
    target = tmp_path / "target"
    target.mkdir()
    fd = os.open(target / "smsgw.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["restore", str(path), "--data-dir", str(target)])
        assert code == REFUSED and "in use by another smsgw" in out.getvalue()
    finally:
        os.close(fd)
    assert not (target / "smsgw.db").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="handing files to another user needs root")
async def test_restore_as_root_hands_the_files_to_the_data_dirs_owner(
    open_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await open_gateway()
    path = await _taken(gw, tmp_path)
    target = tmp_path / "owned"
    target.mkdir(mode=0o750)
    service = (65534, 65534)  # nobody: stands for the `smsgw` service user
    os.chown(target, *service)
    code, lines = await asyncio.to_thread(_restore, path, target, gw.config.master_key_path)
    assert code == 0, lines
    owners = {p.name: (p.stat().st_uid, p.stat().st_gid) for p in target.iterdir()}
    assert set(owners) >= {"smsgw.db", "smsgw.lock"}
    assert set(owners.values()) == {service}, owners


async def test_verify_and_restore_ops_run_through_the_registry(
    open_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """What the daemon's socket calls: `backup.verify` with the daemon's key; and
    `backup.restore`, which the registry marks offline only."""
    gw = await open_gateway()
    path = await _taken(gw, tmp_path)
    lines: list[str] = []

    async def run(name: str, args: dict[str, str]) -> int:
        return await registry.run_in(
            gw.config, gw.store, gw.store.master_key, name, args, actor="console",
            out=lines.append,
        )  # fmt: skip

    assert await run("backup.verify", {"file": str(path)}) == 0
    assert lines[-1] == "backup verified"
    assert registry.lookup("backup.restore").offline_only
    target = tmp_path / "t"
    args = {
        "file": str(path),
        "data_dir": str(target),
        "db_path": str(target / "smsgw.db"),
        "key_path": str(gw.config.master_key_path),
    }
    assert await run("backup.restore", args) == 0
    assert lines[-1].startswith(f"restored: {target / 'smsgw.db'}")


def test_restore_that_runs_out_of_room_leaves_nothing_behind(tmp_path: Path) -> None:
    """A file-size limit stands for a full disk: the copy fails part way."""
    source = tmp_path / "src"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["init", "--data-dir", str(source)]) == 0
        assert main(["backup", "--config", str(source / "smsgw.toml"), "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("*.db")
    target = tmp_path / "target"
    target.mkdir()
    shutil.copy(source / "master.key", target / "master.key")

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    done = subprocess.run(
        [*SMSGW, "restore", str(path), "--data-dir", str(target)],
        capture_output=True, text=True, timeout=60, preexec_fn=small_files,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].startswith("restore: failed: File too large")
    assert sorted(p.name for p in target.iterdir()) == ["master.key", "smsgw.lock"]
