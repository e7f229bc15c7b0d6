"""`smsgw store repage`: an older store gets the smaller pages new stores have (the write
budget, issue 16 point 3), offline, its content intact."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.models import Priority, new_message_id
from gateway.startup import DataDirLock
from gateway.store import writer as writer_mod
from gateway.store.repage import repage
from gateway.store.store import NewMessage, Store
from tests.test_cli import _init


def pragmas(path: Path) -> tuple[int, str, int]:
    conn = sqlite3.connect(path)
    try:
        return (
            int(conn.execute("PRAGMA page_size").fetchone()[0]),
            str(conn.execute("PRAGMA journal_mode").fetchone()[0]),
            int(conn.execute("PRAGMA auto_vacuum").fetchone()[0]),
        )
    finally:
        conn.close()


def journal_left(path: Path) -> bool:
    return Path(f"{path}-journal").exists()


async def test_an_older_store_gets_the_new_page_size_and_keeps_its_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, key = tmp_path / "smsgw.db", os.urandom(32)
    monkeypatch.setattr(writer_mod, "PAGE_SIZE", 4096)  # as stores were made before
    store = Store(path, key)
    await store.open()
    ids = [new_message_id() for _ in range(3)]
    for i, mid in enumerate(ids):
        m = NewMessage(
            id=mid,
            token_id=None,
            priority=Priority.NORMAL,
            to=f"+1202555{i:04d}",
            body=f"reminder {i}",
            encoding="gsm7",
            segments=1,
            created_at=1.0e9,
            expires_at=2.0e9,
        )
        await store.insert(store.insert_statements(m))
    await store.close()
    monkeypatch.undo()
    assert pragmas(path) == (4096, "wal", 2)

    done = repage(path)

    assert (done.before, done.after) == (4096, writer_mod.PAGE_SIZE)
    assert pragmas(path) == (2048, "wal", 2)  # WAL again, incremental auto-vacuum kept
    assert journal_left(path) is False
    store = Store(path, key)
    await store.open()
    try:
        for i, mid in enumerate(ids):
            record = await store.message(mid)
            assert record is not None and record.body.open() == f"reminder {i}"
    finally:
        await store.close()
    again = repage(path)
    assert (again.before, again.after) == (2048, 2048)


def test_the_command_refuses_while_a_gateway_holds_the_data_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf, _ = _init(tmp_path, capsys)
    with DataDirLock(tmp_path):
        assert main(["store", "repage", "--config", str(conf)]) == 4
    assert "refused" in capsys.readouterr().out
    assert main(["store", "repage", "--config", str(conf)]) == 0
    assert "already has 2048-byte pages" in capsys.readouterr().out
