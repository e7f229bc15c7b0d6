"""Erasure of one person by number (MSG-11, R-DEL-1): through the API (admin scope)
and the console op, every stored trace removed (the database and its WAL scanned for
the ciphertexts that held it), waiting messages cancelled, the erasure audited without
the number, and only the suppression entry kept: a later send is refused by consent."""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from drivers.clock import FakeClock
from gateway.app import Gateway
from gateway.cli import main
from gateway.clinical import notices
from gateway.clinical.notices import Notice, NoticeKind
from gateway.tokens import create_token
from tests.appointment_rows import book
from tests.conftest import (
    CANARY_BODY,
    CANARY_DIGITS,
    CANARY_NUMBER,
    LOOPBACK_TEST,
    TEST_CONSENT_TOML,
    GatewayFactory,
    accept,
    make_config,
    record_decision,
    settle_receipts,
    state_of,
)
from tests.test_api import start_client

OTHER = "+12025550148"
MRN = "MRN-CANARY-77"
# The columns that held P's data, by table: (id column, encrypted column, its AAD name).
ENCRYPTED = {
    "messages": [("to_ct", "to"), ("body_ct", "body")],
    "inbound": [("sender_ct", "sender"), ("body_ct", "body")],
    "patients": [("mrn_ct", "mrn")],
    "appointments": [("ext_key_ct", "ext_key")],
    "clinical_notices": [("variables_ct", "variables")],
    "hl7_messages": [("raw_ct", "raw")],
}


@dataclass
class Site:
    gw: Gateway
    client: TestClient[Any, Any]
    admin: str
    sender: str

    async def post(self, path: str, body: Any, token: str) -> tuple[int, dict[str, Any]]:
        resp = await self.client.post(
            path, data=json.dumps(body), headers={"Authorization": f"Bearer {token}"}
        )
        return resp.status, await resp.json()


@pytest.fixture
async def site(open_gateway: GatewayFactory) -> AsyncIterator[Site]:
    gw = await open_gateway()
    admin = await create_token(gw.store, "admin", frozenset({"admin", "read"}), gw.clock)
    sender = await create_token(gw.store, "ehr", frozenset({"send", "read"}), gw.clock)
    client = await start_client(gw)
    try:
        yield Site(gw, client, admin.text, sender.text)
    finally:
        await client.close()


async def _hl7(gw: Gateway, phone: str, mrn: str) -> str:
    raw = (
        "MSH|^~\\&|EHR|HOSP|SMSGW|HOSP|20260101120000||SIU^S12|C1|P|2.5\r"
        f"PID|1||{mrn}^^^HOSP^MR||DOE^JANE||19800101|F|||||{phone}^PRN^CP\r"
    )
    hid = "hl7_" + secrets.token_hex(8)
    cipher = gw.store.cipher
    assert cipher is not None
    now = gw.clock.time()

    def job(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO hl7_messages (id, interface, sending_app, sending_facility,"
            " control_id, msg_type, event, version, msg_time, charset, raw_ct, state, ack,"
            " received_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                hid,
                "ehr",
                "EHR",
                "HOSP",
                hid,
                "SIU",
                "S12",
                "2.5",
                "20260101120000",
                "ascii",
                cipher.encrypt(raw, hid, "raw"),
                "mapped",
                "MSA|AA|C1",
                now,
                now,
            ),
        )

    await gw.store.writer.run(job)
    return hid


async def _pending_notice(gw: Gateway, patient_id: str) -> str:
    cipher = gw.store.cipher
    assert cipher is not None
    idx, now = gw.store.blind_index(CANARY_NUMBER), gw.clock.time()
    notice = Notice(
        NoticeKind.REMINDER,
        idx,
        "reminder",
        "appointment",
        now + 3600,
        variables={"clinic": "Ward 7B canary clinic"},
        patient_id=patient_id,
    )
    return await gw.store.writer.run(lambda conn: notices.schedule(conn, cipher, notice, now))


async def _rows_of(gw: Gateway) -> dict[str, list[str]]:
    """Ids of P's rows in each table (found while P's data is still there)."""
    idx = gw.store.blind_index(CANARY_NUMBER)

    async def ids(sql: str, *params: Any) -> list[str]:
        cur = await gw.store.reader.execute(sql, params)
        return [r[0] for r in await cur.fetchall()]

    patients = await ids("SELECT id FROM patients WHERE contact_idx = ?", idx)
    marks = ",".join("?" * len(patients))
    return {
        "messages": await ids("SELECT id FROM messages WHERE to_index = ?", idx),
        "inbound": await ids("SELECT id FROM inbound WHERE sender_index = ?", idx),
        "patients": patients,
        "appointments": await ids(
            f"SELECT id FROM appointments WHERE patient_id IN ({marks})",  # noqa: S608
            *patients,
        ),
        "clinical_notices": await ids(
            "SELECT id FROM clinical_notices WHERE contact_idx = ? AND variables_ct IS NOT NULL",
            idx,
        ),
    }


async def _ciphertexts(gw: Gateway, rows: dict[str, list[str]]) -> list[bytes]:
    found = []
    for table, ids in rows.items():
        for column, _ in ENCRYPTED[table]:
            for row_id in ids:
                cur = await gw.store.reader.execute(
                    f"SELECT {column} FROM {table} WHERE id = ?",  # noqa: S608  # test's names
                    (row_id,),
                )
                (blob,) = await cur.fetchone()
                assert blob, (table, column, row_id)
                found.append(bytes(blob))
    return found


def _store_bytes(gw: Gateway) -> bytes:
    db = gw.config.db_path
    return b"".join(p.read_bytes() for p in (db, Path(f"{db}-wal")) if p.exists())


async def _person_everywhere(gw: Gateway) -> dict[str, list[str]]:
    """P's sent and waiting messages, an inbound reply, a consent decision with its
    disclosure, a booked appointment with a reminder and a pending notice, and an HL7
    message naming P's number and MRN; and the same kinds of rows for someone else."""
    clock = gw.clock
    assert isinstance(clock, FakeClock)
    await accept(gw, body=CANARY_BODY)
    await gw.scheduler.run_until_idle()
    clock.advance(LOOPBACK_TEST["receipt_delay"])
    await settle_receipts(gw)
    await accept(gw, body="later " + CANARY_BODY)  # waiting
    await gw.store.insert_inbound(
        "inb_p1", "main", CANARY_NUMBER, "YES " + CANARY_BODY, None, None, clock.time()
    )
    await gw.store.insert_inbound("inb_q1", "main", OTHER, "hello", None, None, clock.time())
    await record_decision(gw, CANARY_NUMBER, "opt_in", "marketing", disclosure="CANARY I agree")
    booked = await book(gw, CANARY_NUMBER, mrn=MRN)
    await _pending_notice(gw, booked.patient_id)
    await accept(gw, to=OTHER, body="for someone else")
    hl7_p = await _hl7(gw, "(202) 555-0147", MRN)
    rows = await _rows_of(gw)
    rows["hl7_messages"] = [hl7_p]
    await _hl7(gw, "(202) 555-0148", "MRN-OTHER")
    return rows


async def test_erasure_by_api_leaves_only_the_suppression_entry(site: Site) -> None:
    gw = site.gw
    rows = await _person_everywhere(gw)
    waiting = [m for m in rows["messages"] if await state_of(gw, m) == "queued"]
    assert len(waiting) == 2  # the reminder and the second send
    secrets_before = await _ciphertexts(gw, rows)
    assert all(ct in _store_bytes(gw) for ct in secrets_before)

    status, body = await site.post("/api/v1/erasures", {"number": "(202) 555-0147"}, site.admin)
    assert status == 200, body
    assert CANARY_DIGITS[-7:] not in json.dumps(body)
    assert body["counts"]["messages"] == len(rows["messages"])
    assert body["counts"]["messages_cancelled"] == 2
    assert body["counts"]["hl7_messages"] == 1

    disk = _store_bytes(gw)
    leaked = [i for i, ct in enumerate(secrets_before) if ct in disk]
    assert leaked == [], "ciphertexts still in the database or its WAL"
    for m in waiting:
        assert await state_of(gw, m) == "cancelled"
    assert sum(gw.scheduler.depths()["queued"].values()) == 1  # someone else's only
    idx = gw.store.blind_index(CANARY_NUMBER)
    for table, column in (
        ("messages", "to_index"),
        ("inbound", "sender_index"),
        ("contacts", "idx"),
        ("patients", "contact_idx"),
        ("clinical_notices", "contact_idx"),
        ("appointment_replies", "contact_idx"),
    ):
        sql = f"SELECT count(*) FROM {table} WHERE {column} = ?"  # noqa: S608  # test's names
        cur = await gw.store.reader.execute(sql, (idx,))
        assert (await cur.fetchone())[0] == 0, table
    # Someone else's data is untouched.
    cur = await gw.store.reader.execute("SELECT id, body_ct FROM inbound WHERE id = 'inb_q1'")
    (qid, qbody) = await cur.fetchone()
    assert gw.store.decrypt(qbody, qid, "body") == "hello"

    (entry,) = [e for e in await gw.audit.entries() if e.action == "erasure"]
    assert entry.target_id == body["reference"] and CANARY_DIGITS[-7:] not in entry.detail
    assert (await gw.audit.verify()).ok

    # The suppression entry: a later send to the number is refused by consent.
    send = {"to": CANARY_NUMBER, "body": "are you there?"}
    status, sent = await site.post("/api/v1/messages", send, site.sender)
    assert status == 202 and (sent["status"], sent["reason"]) == ("blocked", "opted_out")


async def test_erasure_needs_admin_and_never_echoes_the_number(site: Site) -> None:
    status, body = await site.post("/api/v1/erasures", {"number": CANARY_NUMBER}, site.sender)
    assert status == 403 and body["error"]["code"] == "forbidden"
    status, body = await site.post("/api/v1/erasures", {"number": "202-555-CANARY"}, site.admin)
    assert status == 422 and body["error"] == {
        "code": "invalid_number",
        "message": "number: not a valid phone number",
        "field": "number",
    }
    assert [e for e in await site.gw.audit.entries() if e.action == "erasure"] == []


async def test_erase_from_the_console_offline(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(tmp_path)
    gw = await Gateway.open(config, clock)
    await gw.start(dispatch=False)
    mid = await accept(gw, body=CANARY_BODY)
    await gw.stop()
    conf = tmp_path / "smsgw.toml"
    conf.write_text(f'data_dir = "{tmp_path}"\n{TEST_CONSENT_TOML}')
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["erase", "--number", "12345", "--config", str(conf)]) == 2
    assert "not a valid phone number" in capsys.readouterr().out
    code = await asyncio.to_thread(
        main, ["erase", "--number", CANARY_NUMBER, "--config", str(conf)]
    )
    out = capsys.readouterr().out
    assert code == 0 and "reference era_" in out and CANARY_DIGITS not in out
    gw = await Gateway.open(config, clock)
    try:
        assert await state_of(gw, mid) == "cancelled"
        (entry,) = [e for e in await gw.audit.entries() if e.action == "erasure"]
        assert entry.actor == "console"
    finally:
        await gw.store.close()


async def test_a_message_sending_during_the_erasure_never_leaves_again(
    open_gateway: GatewayFactory,
) -> None:
    from gateway.models import State
    from gateway.store.transitions import Transition

    gw = await open_gateway()
    mid = await accept(gw, body=CANARY_BODY)
    now = gw.clock.time()
    assert await gw.store.claim(mid, "main", now) is not None  # on its way to the carrier
    erased = await gw.erasures.erase(CANARY_NUMBER, "test")
    assert erased.counts["messages"] == 1 and erased.counts["messages_cancelled"] == 0
    # The carrier did not take it: a retry puts it back in the queue...
    await gw.store.transition(Transition(mid, State.QUEUED, error_code="retry"), now)
    # ...and the claim refuses it: there is no number to send to any more.
    assert await gw.store.claim(mid, "main", now) is None
    assert await state_of(gw, mid) == "blocked"


async def test_sends_racing_the_erasure_are_erased_or_blocked(site: Site) -> None:
    gw = site.gw
    send = {"to": CANARY_NUMBER, "body": CANARY_BODY}
    sends = [site.post("/api/v1/messages", send, site.sender) for _ in range(20)]
    erasure = site.post("/api/v1/erasures", {"number": CANARY_NUMBER}, site.admin)
    answers = await asyncio.gather(*sends[:10], erasure, *sends[10:])
    assert all(status in (200, 202) for status, _ in answers), answers
    # Each message is either one the erasure found (cancelled, number gone) or one
    # accepted after it (blocked by the suppression entry): none waits to go out.
    cur = await gw.store.reader.execute("SELECT id, state, error_code, to_ct FROM messages")
    rows = await cur.fetchall()
    assert len(rows) == 20
    for mid, state, code, to_ct in rows:
        number = gw.store.decrypt(to_ct, mid, "to")
        assert (state, code, number) in {
            ("cancelled", "erased", ""),
            ("blocked", "opted_out", CANARY_NUMBER),
        }, (state, code)
