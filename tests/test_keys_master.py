"""`smsgw keys replace-master` and `recover-master` (issue 14 point 3): every keyring
row re-wrapped under the new key in one transaction, the audit chain and the data
readable after, the old key useless; killed between the commit and the key file's
rename (a real SIGKILL) or before the commit, `recover-master` puts the right key in
place; refused beside a running gateway; a bad --new-key-file refused."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import textwrap
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import Config
from gateway.keys import master
from gateway.ops.registry import run_in
from gateway.startup import DataDirLock
from gateway.store import crypto
from gateway.store.store import Store
from tests.conftest import CANARY_BODY, make_config
from tests.keys_rows import open_every_ciphertext

WAIT = 60.0


def _conf(tmp_path: Path) -> Path:
    conf = tmp_path / "smsgw.toml"
    conf.write_text(f'data_dir = "{tmp_path}"\n')
    return conf


def _smsgw(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


async def _prepare(tmp_path: Path) -> tuple[Config, Path]:
    """A store with messages and audit entries, written by a gateway, then closed."""
    from gateway.app import Gateway
    from tests.conftest import accept

    config = make_config(tmp_path)
    gw = await Gateway.open(config)
    await gw.start(dispatch=False)
    for i in range(5):
        await accept(gw, body=f"{CANARY_BODY} {i}")
    await gw.audit.record("console", "test_entry", "key", "x")
    await gw.stop()
    return config, _conf(tmp_path)


async def _readable(config: Config, key: bytes) -> dict[int, int]:
    store = Store(config.db_path, key)
    await store.open()
    try:
        return await open_every_ciphertext(store)
    finally:
        await store.close()


async def test_replace_master_rewraps_everything_and_the_chain_still_verifies(
    tmp_path: Path,
) -> None:
    config, conf = await _prepare(tmp_path)
    old = crypto.read_master_key(config.master_key_path)
    code, out, _ = await asyncio.to_thread(_smsgw, "keys", "replace-master", "--config", str(conf))
    assert code == 0 and "3 keys re-wrapped" in out
    new = crypto.read_master_key(config.master_key_path)
    assert new != old and config.master_key_path.stat().st_mode & 0o777 == 0o600
    assert not crypto.pending_path(config.master_key_path).exists()
    assert sum((await _readable(config, new)).values()) == 10
    with pytest.raises(crypto.MasterKeyError, match="does not open"):
        await _readable(config, old)
    code, out, _ = await asyncio.to_thread(_smsgw, "audit", "verify", "--config", str(conf))
    assert code == 0 and "intact" in out
    store = Store(config.db_path, new)
    await store.open()
    try:
        assert store.master_key == old  # the chain's and credential MACs' root, kept
        row = await store.reader.one(
            "SELECT detail FROM audit_log WHERE action = 'master_key_replaced'"
        )
        assert row is not None and row[0] == '{"keys_rewrapped":3}'
    finally:
        await store.close()


async def test_replace_master_takes_a_given_key_file_and_refuses_an_open_one(
    tmp_path: Path,
) -> None:
    config, conf = await _prepare(tmp_path)
    given = tmp_path / "elsewhere" / "new.key"
    given.parent.mkdir()
    crypto.generate_master_key(given)
    given.chmod(0o644)
    code, _, err = await asyncio.to_thread(
        _smsgw, "keys", "replace-master", "--new-key-file", str(given), "--config", str(conf)
    )
    assert code == 2 and "readable by others" in err
    given.chmod(0o600)
    code, _, _ = await asyncio.to_thread(
        _smsgw, "keys", "replace-master", "--new-key-file", str(given), "--config", str(conf)
    )
    assert code == 0
    assert crypto.read_master_key(config.master_key_path) == crypto.read_key_file(given)


async def test_replace_master_is_refused_beside_a_running_gateway(tmp_path: Path) -> None:
    config, _ = await _prepare(tmp_path)
    key = crypto.read_master_key(config.master_key_path)
    store = Store(config.db_path, key)
    await store.open()
    lines: list[str] = []
    try:
        with DataDirLock(config.data_dir):
            code = await run_in(
                config, store, key, "keys.replace-master", {}, actor="console", out=lines.append
            )
    finally:
        await store.close()
    assert code == 2 and "stop it first" in lines[0]
    assert crypto.read_master_key(config.master_key_path) == key


KILL_AFTER_COMMIT = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from pathlib import Path
    from gateway.keys import master
    from gateway.store import crypto
    from gateway.store.store import Store

    async def main():
        key_path, db_path = Path(sys.argv[1]), Path(sys.argv[2])
        store = Store(db_path, crypto.read_master_key(key_path))
        await store.open()
        await master.replace(
            store, key_path, os.urandom(32),
            committed=lambda: os.kill(os.getpid(), signal.SIGKILL),
        )

    asyncio.run(main())
    """
)


async def test_killed_between_commit_and_rename_then_recovered(tmp_path: Path) -> None:
    config, conf = await _prepare(tmp_path)
    old = crypto.read_master_key(config.master_key_path)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILL_AFTER_COMMIT, str(config.master_key_path), str(config.db_path)
    )
    assert await asyncio.wait_for(proc.wait(), WAIT) == -9
    pending = crypto.pending_path(config.master_key_path)
    assert pending.exists() and crypto.read_key_file(config.master_key_path) == old
    # Nothing starts on the wrong key: the console (and `smsgw run`) name the way out.
    code, _, err = await asyncio.to_thread(_smsgw, "keys", "status", "--config", str(conf))
    assert code == 2 and "recover-master" in err
    code, out, _ = await asyncio.to_thread(_smsgw, "keys", "recover-master", "--config", str(conf))
    assert code == 0 and "had committed" in out
    new = crypto.read_master_key(config.master_key_path)
    assert new != old and not pending.exists()
    assert sum((await _readable(config, new)).values()) == 10
    code, out, _ = await asyncio.to_thread(_smsgw, "audit", "verify", "--config", str(conf))
    assert code == 0


async def test_killed_before_the_commit_then_recovered_keeps_the_old_key(
    tmp_path: Path,
) -> None:
    config, conf = await _prepare(tmp_path)
    old = crypto.read_master_key(config.master_key_path)
    # The state a kill before the commit leaves: the new key written, the store as it was.
    master.write_key_file(crypto.pending_path(config.master_key_path), os.urandom(32))
    code, out, _ = await asyncio.to_thread(_smsgw, "keys", "recover-master", "--config", str(conf))
    assert code == 0 and "had not committed" in out
    assert crypto.read_master_key(config.master_key_path) == old
    assert sum((await _readable(config, old)).values()) == 10
    code, out, _ = await asyncio.to_thread(_smsgw, "keys", "recover-master", "--config", str(conf))
    assert code == 0 and "nothing to recover" in out


def test_the_daemon_refuses_to_start_on_a_half_replaced_key(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    conf = _conf(tmp_path)
    assert main(["init", "--data-dir", str(tmp_path)]) == 0
    master.write_key_file(crypto.pending_path(config.master_key_path), b"k" * 32)
    run = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(conf)],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert run.returncode != 0 and "recover-master" in run.stderr


async def test_replacing_twice_and_back_to_the_first_key_keeps_the_chain(tmp_path: Path) -> None:
    config, conf = await _prepare(tmp_path)
    first = crypto.read_master_key(config.master_key_path)
    kept = tmp_path / "first.key"
    master.write_key_file(kept, first)
    for args in ([], [], ["--new-key-file", str(kept)]):
        code, out, _ = await asyncio.to_thread(
            _smsgw, "keys", "replace-master", *args, "--config", str(conf)
        )
        assert code == 0, out
        code, out, _ = await asyncio.to_thread(_smsgw, "audit", "verify", "--config", str(conf))
        assert code == 0 and "intact" in out
    assert crypto.read_master_key(config.master_key_path) == first
    store = Store(config.db_path, first)
    await store.open()
    try:
        # Back on the first key, the root is that key again and needs no row of its own.
        rows = await store.reader.all("SELECT purpose FROM keyring ORDER BY 1")
        assert [r[0] for r in rows] == ["blind", "field"]
        assert store.master_key == first
    finally:
        await store.close()
