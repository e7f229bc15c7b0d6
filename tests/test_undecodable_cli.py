"""`smsgw undecodable`: an operator lists, exports and releases the inbound records held
because no codec could read them; the records stay encrypted in the store, appear only
in the owner-only export, and export and release are audited."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import config as config_mod
from gateway.cli import main
from gateway.console import with_store
from gateway.store.quarantine import Quarantine
from tests.test_cli import _init
from tests.test_modem_records import TRUNCATED_UCS2


def _hold(conf: Path, record: str) -> str:
    async def hold() -> str:
        store = await with_store(config_mod.load(str(conf)))
        try:
            held_id = await Quarantine(store).hold("bank", "m1", record, 1_700_000_000.0)
        finally:
            await store.close()
        assert held_id is not None
        return held_id

    return asyncio.run(hold())


def test_operator_lists_exports_and_releases(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf, _ = _init(tmp_path, capsys)
    held_id = _hold(conf, TRUNCATED_UCS2)
    config = ["--config", str(conf)]

    assert main(["undecodable", "list", *config]) == 0
    listed = capsys.readouterr().out
    assert [line.split() for line in listed.splitlines()] == [
        ["ID", "RECEIVED", "(UTC)", "ROUTE", "SOURCE"],
        [held_id, "2023-11-14T22:13:20+00:00", "bank", "m1"],
    ]
    assert TRUNCATED_UCS2[20:44] not in listed

    export = tmp_path / "held.jsonl"
    assert main(["undecodable", "export", str(export), *config]) == 0
    assert stat.S_IMODE(export.stat().st_mode) == 0o600
    (line,) = export.read_text().splitlines()
    assert json.loads(line) == {
        "id": held_id,
        "route": "bank",
        "source": "m1",
        "received_at": 1_700_000_000.0,
        "record": TRUNCATED_UCS2,
    }
    assert TRUNCATED_UCS2[20:44] not in capsys.readouterr().out
    assert main(["undecodable", "export", str(export), *config]) == 1  # never overwritten

    assert main(["undecodable", "release", held_id, *config]) == 0
    assert main(["undecodable", "release", held_id, *config]) == 1
    capsys.readouterr()
    assert main(["undecodable", "list", *config]) == 0
    assert capsys.readouterr().out == ""

    conn = sqlite3.connect(tmp_path / "smsgw.db")
    actions = [row[0] for row in conn.execute("SELECT action FROM audit_log ORDER BY seq")]
    conn.close()
    assert actions[-2:] == ["undecodable_exported", "undecodable_released"]


def test_the_same_record_is_held_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf, _ = _init(tmp_path, capsys)
    _hold(conf, TRUNCATED_UCS2)

    async def again() -> tuple[str | None, int]:
        store = await with_store(config_mod.load(str(conf)))
        try:
            quarantine = Quarantine(store)
            second = await quarantine.hold("bank", "m1", TRUNCATED_UCS2, 1_700_000_100.0)
            other_modem = await quarantine.hold("bank", "m2", TRUNCATED_UCS2, 1_700_000_100.0)
            assert other_modem is not None
            return second, (await quarantine.summary()).held
        finally:
            await store.close()

    assert asyncio.run(again()) == (None, 2)


ALERT = """
import asyncio, sys
from drivers.clock import SystemClock
from gateway import config, logs
from gateway.console import with_store
from gateway.metrics import Metrics
from gateway.sink import GatewaySink

async def hold() -> None:
    store = await with_store(config.load(sys.argv[1]))
    try:
        sink = GatewaySink(store, SystemClock(), Metrics())
        await sink.quarantine("bank", "m1", sys.argv[2])
        await sink.quarantine("bank", "m1", sys.argv[2])
    finally:
        await store.close()

logs.configure("json", "info")
asyncio.run(hold())
"""


def test_the_alert_is_an_error_log_without_the_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In a process of its own, so the JSON log is the one the gateway writes."""
    conf, _ = _init(tmp_path, capsys)
    done = subprocess.run(
        [sys.executable, "-c", ALERT, str(conf), TRUNCATED_UCS2],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    held = [e for e in events if e["event"] == "inbound_undecodable_held"]
    assert [(e["level"], e["route"], e["source"]) for e in held] == [("error", "bank", "m1")]
    assert [e["event"] for e in events if e["event"].startswith("inbound_undecodable")] == [
        "inbound_undecodable_held",
        "inbound_undecodable_again",
    ]
    assert TRUNCATED_UCS2[20:44] not in done.stderr + done.stdout
