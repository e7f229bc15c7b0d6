"""Issue 18 pt 5 (MSG-11, R-DEL-1): erasing a number on a cluster node reaches every
place the nodes share it, and the panel's audit page shows every node's trail.

Two gateways on one PostgreSQL (one keyring: the first's data directory copied). The
number has shared messages (one waiting, one being sent), consent decisions with their
texts, a contact record and an open review; B erases it through its API. PostgreSQL
then holds none of its ciphertexts (each column cleared as SQLite's erasure clears
it), the suppression entry stays and refuses a new send on A, A's reads show the
erased state, A's audit page lists B's erasure and verifies every chain; two nodes
erasing one number at once both finish, suppressing it once.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from drivers.base import InboundSms
from drivers.clock import FakeClock
from gateway.app import Gateway
from gateway.cluster.node import ClusterNode
from gateway.config import from_mapping
from gateway.models import State
from gateway.ops import registry
from gateway.store import crypto
from gateway.store.audit_log import AuditTrail, audit_key
from gateway.store.store import Store
from gateway.tokens import create_token
from gateway.usecases.consent import DecisionRequest
from tests.admin_support import PanelClient
from tests.conftest import (
    CANARY_BODY,
    CANARY_DIGITS,
    CANARY_NUMBER,
    FAST_PASSWORD_HASH,
    LOOPBACK_TEST,
)
from tests.pg.test_cluster_panel import OFFLINE_NAME, _offline_user
from tests.pg.test_consent_cluster import CAPS, OTHER
from tests.test_api import start_client
from tests.test_consent_inbound import SHORT_CODE
from tests.test_consent_policy import caller, send


def _config(data: Path, name: str, dsn: str) -> Any:
    data.mkdir(exist_ok=True)
    return from_mapping(
        {
            "data_dir": str(data),
            "routes": [{"name": "main", "type": "loopback", **LOOPBACK_TEST}],
            "http": {"shutdown_grace": 1.0},
            "admin": FAST_PASSWORD_HASH,
            "consent": CAPS,
            "source": str(data / "smsgw.toml"),
            # A fake clock never renews the lease: long enough for any test here.
            "cluster": {"enabled": True, "node_id": name, "conninfo": dsn, "lease_seconds": 600},
        }
    )


@dataclass
class Pair:
    a: Gateway
    b: Gateway
    panel_a: PanelClient
    client_b: TestClient[Any, Any]


def _node(gw: Gateway) -> ClusterNode:
    assert gw.cluster is not None
    return gw.cluster


@pytest.fixture
async def pair(tmp_path: Path, clock: FakeClock, pg_dsn: str) -> AsyncIterator[Pair]:
    gateways: list[Gateway] = []
    clients: list[TestClient[Any, Any]] = []
    first = tmp_path / "gw1"
    try:
        for name in ("gw1", "gw2"):
            if name == "gw1":
                config = _config(first, name, pg_dsn)
                await _offline_user(config)  # the panel's admin, copied up at start
            else:
                shutil.copytree(first, tmp_path / name)
                config = _config(tmp_path / name, name, pg_dsn)
            gw = await Gateway.open(config, clock)
            gateways.append(gw)
            await gw.start(dispatch=False)
            clients.append(await start_client(gw))
        yield Pair(gateways[0], gateways[1], PanelClient(gateways[0], clients[0]), clients[1])
    finally:
        for client in clients:
            await client.close()
        for gw in gateways:
            if not gw.stopped:
                await gw.stop()


async def _erase_by_api(gw: Gateway, client: TestClient[Any, Any], number: str) -> dict[str, int]:
    token = await create_token(gw.store, "dpo", frozenset({"admin"}), gw.clock)
    await _node(gw).tokens.copy_local(gw.store.reader)
    r = await client.post(
        "/api/v1/erasures",
        data=json.dumps({"number": number}),
        headers={"Authorization": f"Bearer {token.text}"},
    )
    text = await r.text()
    assert r.status == 200, text
    assert number.lstrip("+") not in text
    counts: dict[str, int] = json.loads(text)["counts"]
    return counts


async def _rows(gw: Gateway, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    async with _node(gw).queue.pool.connection() as conn:
        rows = await (await conn.execute(sql.encode(), args)).fetchall()
    return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]


async def test_an_erasure_on_b_clears_the_shared_store_and_every_node_sees_it(
    pair: Pair, clock: FakeClock
) -> None:
    a, b = pair.a, pair.b
    who = await caller(a, "send", "read", "phi")
    waiting = (await send(a, who, reference="chart-canary")).id
    sending = (await send(a, who, body=CANARY_BODY)).id
    (claimed,) = await _node(a).queue.claim_group([sending], "main", clock.time())
    assert claimed is not None
    kept = (await send(a, who, to=OTHER)).id
    staff = await caller(a, "consent", "read", "phi")
    consent = a.usecases.consent
    marketing = "purpose:marketing"
    await consent.record(
        staff, DecisionRequest(CANARY_NUMBER, "opt_in", "api", marketing, disclosure="Texts?")
    )
    await consent.record(
        staff, DecisionRequest(CANARY_NUMBER, "opt_out", "api", marketing, note="by phone")
    )
    await b.sink.inbound("main", InboundSms(CANARY_NUMBER, "stopping by later", SHORT_CODE))

    counts = await _erase_by_api(b, pair.client_b, CANARY_NUMBER)
    assert {k: v for k, v in counts.items() if k.startswith("shared_")} == {
        "shared_messages": 2,
        "shared_messages_cancelled": 1,
        "shared_consent_entries": 3,  # the two above and the erasure's opt-out of all
        "shared_contacts": 1,
        "shared_consent_reviews": 1,
        "shared_campaign_recipients": 0,  # in no campaign (tests/pg/test_campaigns_cluster.py)
        "shared_inbound": 1,  # the look-alike B received, filed in the shared store
        "shared_inbound_parts": 0,
        "shared_kannel_dlr": 0,  # none sent through Kannel (tests/pg/test_kannel_cluster.py)
        # no appointments (tests/pg/test_appointments_cluster.py)
        "shared_patients": 0,
        "shared_appointments": 0,
        "shared_notices_cancelled": 0,
        "shared_notices": 0,
        "shared_medication_schedules": 0,
        "shared_clinical_events": 0,
        "shared_appointment_replies": 0,
        "shared_hl7_messages": 0,  # no HL7 feed (tests/pg/test_hl7_cluster.py)
        "shared_hl7_writebacks": 0,  # no write-back (tests/pg/test_hl7_writeback_cluster.py)
    }

    # PostgreSQL: the number's ciphertexts are "" sealed for their place, or gone.
    cipher = _node(b).queue.cipher
    idx = b.store.blind_index(CANARY_NUMBER)
    rows = await _rows(
        b,
        "SELECT id, state, error_code, to_ct, body_ct, reference_ct, callback_ct, to_index,"
        " redacted FROM messages WHERE id = ANY(%s) ORDER BY id",
        [waiting, sending],
    )
    assert {r[0]: (r[1], r[2]) for r in rows} == {
        waiting: ("cancelled", "erased"),
        sending: ("sending", None),  # in the driver's hands: its outcome still lands
    }
    for mid, _, _, to_ct, body_ct, reference_ct, callback_ct, to_index, redacted in rows:
        assert (cipher.decrypt(to_ct, mid, "to"), cipher.decrypt(body_ct, mid, "body")) == ("", "")
        assert (reference_ct, callback_ct, to_index, redacted) == (None, None, b"", 2)
    assert await _rows(b, "SELECT id FROM messages WHERE to_index = %s", idx) == []
    ((other_ct,),) = await _rows(b, "SELECT to_ct FROM messages WHERE id = %s", kept)
    assert cipher.decrypt(other_ct, kept, "to") == OTHER  # another number's row untouched
    assert await _rows(
        b,
        "SELECT decision, scope, source, disclosure_ct, note_ct FROM consent_ledger"
        " WHERE contact_idx = %s ORDER BY seq",
        idx,
    ) == [
        ("opt_in", marketing, "api", None, None),
        ("opt_out", marketing, "api", None, None),
        ("opt_out", "all", "erasure", None, None),  # the suppression entry
    ]
    assert await _rows(b, "SELECT idx FROM contacts WHERE idx = %s", idx) == []
    assert await _rows(b, "SELECT contact_idx, body_ct FROM consent_reviews") == [(b"", None)]
    digits = CANARY_DIGITS.encode()
    ((iid, sender_ct, text_ct, inbound_index, inbound_redacted),) = await _rows(
        b, "SELECT id, sender_ct, body_ct, sender_index, redacted FROM inbound"
    )
    opened = (cipher.decrypt(sender_ct, iid, "sender"), cipher.decrypt(text_ct, iid, "body"))
    assert (opened, inbound_index, inbound_redacted) == (("", ""), b"", 2)
    tables = ("messages", "contacts", "consent_ledger", "consent_reviews", "audit_log", "inbound")
    for table in tables:
        dump = await _rows(b, f"SELECT t::text FROM {table} t")  # noqa: S608 - fixed names
        assert not any(digits in str(r[0]).encode() for r in dump), table

    # The suppression entry outlives the erasure: A refuses a new send.
    refused = await send(a, who)
    assert (refused.status, refused.reason) == ("blocked", "opted_out")
    # A's reads show the erased state.
    record = await a.usecases.messages.get(who, waiting, phi=True)
    assert (record.status, record.error_code, record.to, record.body) == (
        State.CANCELLED,
        "erased",
        "",
        "",
    )
    view = await consent.lookup(staff, CANARY_NUMBER)
    assert view.contact is None
    assert ("*", "all", "out") in [(s.program, s.scope, s.opted) for s in view.standing]
    assert {(h.disclosure, h.note) for h in view.history} == {(None, None)}
    (review,) = await consent.reviews(staff, texts=True)
    assert CANARY_DIGITS not in repr(review) and "stopping" not in repr(review)

    # A's retention job counts the shared store too (nothing there is due yet).
    due = (await a.retention.status()).due
    assert due["shared_message_texts"] == due["shared_inbound_numbers"] == 0

    # Audited once, on B's own trail (then its chain in PostgreSQL).
    erasures = [e for e in await b.audit.entries(limit=1000) if e.action == "erasure"]
    assert len(erasures) == 1 and json.loads(erasures[0].detail)["shared_messages"] == 2
    reference = erasures[0].target_id
    assert reference is not None
    await _node(b).shipper.ship()  # what B's next heartbeat does

    # A's audit page lists B's entries; its verify checks every node's chain.
    panel = pair.panel_a
    token = await panel.login_ok(OFFLINE_NAME)
    page = await (await panel.client.get("/audit")).text()
    assert reference in page and "<td>gw2</td>" in page and "<td>gw1</td>" in page
    r = await panel.post("/audit/verify", token=token)
    assert r.status == 200
    checked = await r.text()
    assert 'data-ok="true"' in checked
    assert 'data-node="gw1"' in checked and 'data-node="gw2"' in checked
    verified = [e for e in await a.audit.entries(limit=1000) if e.action == "audit_verified"]
    assert json.loads(verified[0].detail)["chains"] == 2

    # Two nodes erasing one number at once both finish, and suppress it once.
    done = await asyncio.gather(
        a.erasures.erase(OTHER, "console"), b.erasures.erase(OTHER, "console")
    )
    assert sorted(d.counts["shared_messages_cancelled"] for d in done) == [0, 1]
    other_idx = a.store.blind_index(OTHER)
    assert await _rows(
        a, "SELECT source FROM consent_ledger WHERE contact_idx = %s", other_idx
    ) == [("erasure",)]
    assert (await a.usecases.messages.get(who, kept)).status is State.CANCELLED


async def test_the_console_offline_on_a_cluster_node_refuses_to_erase_half(
    tmp_path: Path, clock: FakeClock
) -> None:
    """With no node running, `smsgw erase` would reach only the node's own store: it
    refuses, naming where to run it."""
    config = _config(tmp_path / "gw1", "gw1", "postgresql://unused/smsgw")
    crypto.generate_master_key(config.master_key_path)
    store = Store(config.db_path, crypto.read_master_key(config.master_key_path))
    await store.open()
    said: list[str] = []
    try:
        args = {"number": CANARY_NUMBER}
        code = await registry.run_in(
            config, store, store.master_key, "erase.number", args, actor="console",
            out=said.append, err=said.append, clock=clock,
        )  # fmt: skip
        entries = await AuditTrail(store, audit_key(store.master_key), clock).entries()
    finally:
        await store.close()
    assert code == 2 and "/api/v1/erasures" in said[0]
    assert [e.action for e in entries if e.action == "erasure"] == []
