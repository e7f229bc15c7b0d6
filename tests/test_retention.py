"""Retention (MSG-12): texts and numbers removed per purpose after their periods, by the
housekeeping job and by the `retention.run` op, keeping metadata; waiting messages never
touched; deleted content overwritten (secure_delete) and space handed back."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from drivers.clock import FakeClock
from gateway.app import Gateway
from gateway.config import ConfigError, from_mapping
from gateway.ops.registry import run_in, run_local
from gateway.tokens import create_token
from tests.conftest import (
    CANARY_BODY,
    CANARY_NUMBER,
    LOOPBACK_TEST,
    GatewayFactory,
    accept,
    make_config,
    settle_receipts,
)
from tests.test_api import start_client

DAY = 86400.0
RETENTION = {
    "body_days": 90,
    "number_days": 365,
    "purposes": {"emergency": {"body_days": 10}},
}


async def _column(gw: Gateway, table: str, column: str, row_id: str) -> Any:
    cur = await gw.store.reader.execute(
        f"SELECT {column} FROM {table} WHERE id = ?",  # noqa: S608  # test's own names
        (row_id,),
    )
    row = await cur.fetchone()
    return row[0]


async def _plain(gw: Gateway, table: str, column: str, row_id: str, aad: str) -> str:
    return gw.store.decrypt(await _column(gw, table, column, row_id), row_id, aad)


async def _metadata(gw: Gateway) -> list[tuple[Any, ...]]:
    cur = await gw.store.reader.execute(
        "SELECT id, state, purpose, segments, created_at, route, attempts FROM messages ORDER BY id"
    )
    return [tuple(r) for r in await cur.fetchall()]


def _store_bytes(gw: Gateway) -> bytes:
    db = gw.config.db_path
    return b"".join(p.read_bytes() for p in (db, Path(f"{db}-wal")) if p.exists())


async def _delivered(gw: Gateway, **fields: Any) -> str:
    mid = await accept(gw, body=CANARY_BODY, **fields)
    await gw.scheduler.run_until_idle()
    clock = gw.clock
    assert isinstance(clock, FakeClock)
    clock.advance(LOOPBACK_TEST["receipt_delay"])
    await settle_receipts(gw)
    return mid


async def test_texts_then_numbers_go_per_purpose_and_metadata_stays(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(retention=RETENTION)
    info = await _delivered(gw)
    urgent = await _delivered(gw, purpose="emergency")
    later = datetime.fromtimestamp(clock.time() + 300 * DAY, UTC)
    waiting = await accept(gw, body=CANARY_BODY, send_at=later)
    await gw.store.insert_inbound(
        "inb_retention1", "main", CANARY_NUMBER, CANARY_BODY, None, None, clock.time()
    )
    before = await _metadata(gw)
    info_body_ct = await _column(gw, "messages", "body_ct", info)

    clock.advance(11 * DAY)
    await gw.housekeeping_once()
    assert await _plain(gw, "messages", "body_ct", urgent, "body") == ""
    assert await _plain(gw, "messages", "body_ct", info, "body") == CANARY_BODY
    assert await _plain(gw, "messages", "to_ct", urgent, "to") == CANARY_NUMBER

    clock.advance(80 * DAY)  # day 91
    await gw.housekeeping_once()
    assert await _plain(gw, "messages", "body_ct", info, "body") == ""
    assert await _plain(gw, "inbound", "body_ct", "inb_retention1", "body") == ""
    assert await _plain(gw, "inbound", "sender_ct", "inb_retention1", "sender") == CANARY_NUMBER
    assert await _plain(gw, "messages", "to_ct", info, "to") == CANARY_NUMBER
    assert info_body_ct not in _store_bytes(gw)  # overwritten, not left in free space

    clock.advance(275 * DAY)  # day 366
    await gw.housekeeping_once()
    for mid in (info, urgent):
        assert await _plain(gw, "messages", "to_ct", mid, "to") == ""
        assert await _column(gw, "messages", "to_index", mid) == b""
    assert await _plain(gw, "inbound", "sender_ct", "inb_retention1", "sender") == ""
    # Still scheduled: never touched, whatever its age.
    assert await _plain(gw, "messages", "body_ct", waiting, "body") == CANARY_BODY
    assert await _plain(gw, "messages", "to_ct", waiting, "to") == CANARY_NUMBER
    assert await _metadata(gw) == before  # state, purpose, segments, times, route

    runs = [e for e in await gw.audit.entries() if e.action == "retention_run"]
    assert [json.loads(e.detail)["message_texts"] for e in reversed(runs)] == [1, 1, 0]
    assert [json.loads(e.detail)["message_numbers"] for e in reversed(runs)] == [0, 0, 2]
    assert all(CANARY_NUMBER.lstrip("+") not in e.detail for e in runs)


async def test_without_periods_per_purpose_every_purpose_takes_the_sections(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    """A section naming no purpose is the period of every message, not only of one
    stored without a purpose."""
    gw = await open_gateway(retention={"body_days": 90, "number_days": 365})
    mid = await _delivered(gw, purpose="informational")
    clock.advance(91 * DAY)
    outcome = await gw.retention.run("console")
    assert outcome.removed["message_texts"] == 1
    assert await _plain(gw, "messages", "body_ct", mid, "body") == ""


async def test_a_redacted_message_still_reads_through_the_api(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(retention=RETENTION)
    mid = await _delivered(gw)
    clock.advance(400 * DAY)
    await gw.housekeeping_once()
    token = await create_token(gw.store, "t", frozenset({"read", "phi", "admin"}), gw.clock)
    client = await start_client(gw)
    try:
        auth = {"Authorization": f"Bearer {token.text}"}
        for path in (f"/api/v1/messages/{mid}", f"/api/v1/messages/{mid}?include=phi"):
            resp = await client.get(path, headers=auth)
            assert resp.status == 200, await resp.text()
            body = await resp.json()
            assert body["status"] == "delivered", body
            assert body.get("body", "") == "" and CANARY_BODY not in json.dumps(body)
    finally:
        await client.close()


async def test_the_store_overwrites_deletions_and_vacuums_incrementally(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()

    def pragmas(conn: sqlite3.Connection) -> tuple[int, int]:
        return (
            conn.execute("PRAGMA secure_delete").fetchone()[0],
            conn.execute("PRAGMA auto_vacuum").fetchone()[0],
        )

    assert await gw.store.writer.run(pragmas) == (1, 2)


async def test_an_existing_store_is_switched_to_incremental_vacuum_at_open(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(tmp_path)
    gw = await Gateway.open(config, clock)
    await gw.store.close()
    conn = sqlite3.connect(config.db_path)
    conn.execute("PRAGMA auto_vacuum = 0")
    conn.execute("VACUUM")  # as a store made before this change
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    conn.close()
    # Its one VACUUM asks systemd for start-up time in proportion to the store's size.
    systemd_socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    systemd_socket.bind(str(tmp_path / "notify"))
    systemd_socket.settimeout(10)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    gw = await Gateway.open(config, clock)
    try:
        mode = await gw.store.writer.run(lambda c: c.execute("PRAGMA auto_vacuum").fetchone()[0])
        assert mode == 2
        told = systemd_socket.recv(256).decode()
        assert told.startswith("EXTEND_TIMEOUT_USEC=") and int(told.split("=")[1]) >= 60_000_000
    finally:
        systemd_socket.close()
        await gw.store.close()


async def test_the_run_op_and_status_from_the_console(tmp_path: Path, clock: FakeClock) -> None:
    config = make_config(tmp_path, retention=RETENTION)
    gw = await Gateway.open(config, clock)
    await gw.start(dispatch=False)
    mid = await _delivered(gw)
    clock.advance(100 * DAY)
    lines: list[str] = []
    progress: list[tuple[int, int]] = []
    status = await run_in(
        config,
        gw.store,
        gw.store.master_key,
        "retention.status",
        {},
        actor="console",
        out=lines.append,
        clock=clock,
    )
    assert status == 0
    assert any(line.split() == ["message_texts", "1"] for line in lines)
    lines.clear()
    status = await run_in(
        config,
        gw.store,
        gw.store.master_key,
        "retention.run",
        {},
        actor="console",
        out=lines.append,
        clock=clock,
        progress=lambda done, total, what: progress.append((done, total)),
    )
    assert status == 0 and progress[-1] == (1, 1)
    assert any(line.split() == ["message_texts", "1"] for line in lines)
    assert await _plain(gw, "messages", "body_ct", mid, "body") == ""
    (entry,) = [e for e in await gw.audit.entries() if e.action == "retention_run"]
    assert entry.actor == "console"
    await gw.stop()
    # Offline, as `smsgw retention status` runs with no daemon: nothing more is due.
    lines.clear()
    assert await asyncio.to_thread(run_local, config, "retention.status", {}, out=lines.append) == 0
    assert any(line.split() == ["message_texts", "0"] for line in lines)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"purposes": {"gossip": {"body_days": 1}}}, "retention.purposes.gossip"),
        ({"body_days": 30, "number_days": 10}, "retention.number_days"),
        ({"purposes": {"marketing": {"number_days": 5}}}, "retention.purposes.marketing"),
        ({"body_days": 0}, "retention.body_days"),
    ],
)
def test_retention_keys_are_checked_by_name(raw: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(key)):
        from_mapping({"retention": raw})


async def test_notices_hl7_texts_and_quarantined_records_go_after_the_text_period(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    from gateway.store.quarantine import Quarantine
    from tests.appointment_rows import book
    from tests.test_erasure import _hl7

    gw = await open_gateway(retention=RETENTION)
    booked = await book(gw, CANARY_NUMBER)  # a reminder notice, queued, with variables
    hl7_id = await _hl7(gw, "(202) 555-0147", "MRN-R1")
    held = await Quarantine(gw.store).hold("main", "modem1", "07 CANARY RAW PDU", clock.time())
    assert held is not None
    cur = await gw.store.reader.execute(
        "SELECT id FROM clinical_notices WHERE appointment_id = ?", (booked.id,)
    )
    (notice_id,) = await cur.fetchone()
    assert await _column(gw, "clinical_notices", "variables_ct", notice_id) is not None
    hl7_ct = await _column(gw, "hl7_messages", "raw_ct", hl7_id)

    clock.advance(89 * DAY)
    await gw.housekeeping_once()
    assert await _plain(gw, "hl7_messages", "raw_ct", hl7_id, "raw") != ""
    clock.advance(2 * DAY)
    await gw.housekeeping_once()
    assert await _column(gw, "clinical_notices", "variables_ct", notice_id) is None
    assert await _plain(gw, "hl7_messages", "raw_ct", hl7_id, "raw") == ""
    assert await _column(gw, "hl7_messages", "erased_at", hl7_id) == clock.time()
    cur = await gw.store.reader.execute("SELECT count(*) FROM inbound_undecodable")
    assert (await cur.fetchone())[0] == 0
    assert hl7_ct not in _store_bytes(gw)
