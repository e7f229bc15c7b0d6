"""Issue 18: HL7 inbound feeds on a cluster, over real MLLP on loopback.

The same cases run on one SQLite gateway and on two gateways sharing one PostgreSQL,
each node running its own MLLP listener (on SQLite both "nodes" are the one gateway,
and "both nodes" are two connections to its listener): an SIU^S12 sent to node A
books an appointment read on node B, its reminder planned in the shared notices, and
B's HL7 log lists what A received; the same message (one control id) sent to A and B
at once is mapped once, the second answered with the stored ACK and counted as a
duplicate (an erasure on B then blanks its text for A); a message that cannot be
mapped is quarantined and answered AE, one with a header the gateway refuses is stored
rejected and answered AR, as on SQLite. The log's texts go after their retention
period, and `smsgw store migrate` carries the log (and so its dedupe) to the cluster.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from drivers.clock import FakeClock
from gateway.app import Gateway
from gateway.appointments.queries import Search
from gateway.cluster import keyring
from gateway.config import from_mapping
from gateway.hl7 import framing
from gateway.hl7.messages_sql import Listed
from gateway.reminders.rules import RuleSpec
from gateway.store.crypto import header_generation
from gateway.usecases import Caller
from tests.appointment_rig import siu
from tests.conftest import LOOPBACK_TEST, GatewayFactory
from tests.hl7_rig import Peer, err3, msa
from tests.hl7_samples import text as sample_text
from tests.pg.migrate_source import init
from tests.pg.test_appointments_cluster import APPOINTMENTS, CONSENT, _migrate
from tests.pg.two_nodes import in_process_nodes
from tests.test_consent_policy import caller

H = 3600.0
HL7 = {"interfaces": [{"name": "ehr", "listen": "127.0.0.1:0"}]}


@dataclass
class Nodes:
    kind: str
    a: Gateway
    b: Gateway

    async def staff(self, gw: Gateway) -> Caller:
        return await caller(gw, "admin", "send", "read", "consent")

    async def send(self, gw: Gateway, *messages: str) -> list[bytes]:
        """`messages` on one MLLP connection to `gw`'s listener: their ACKs."""
        assert gw.hl7 is not None
        peer = await Peer.open(gw.hl7.listeners["ehr"].port)
        try:
            await peer.send(b"".join(framing.encode(m.encode()) for m in messages))
            return await peer.frames(len(messages))
        finally:
            await peer.aclose()

    async def log(self, gw: Gateway, state: str | None = None) -> list[Listed]:
        assert gw.hl7 is not None
        return await gw.hl7.messages(state, "ehr")


def _cluster_config(data: Path, name: str, *, dsn: str) -> Any:
    data.mkdir(exist_ok=True)
    return from_mapping(
        {
            "data_dir": str(data),
            "routes": [{"name": "main", "type": "loopback", **LOOPBACK_TEST}],
            "http": {"shutdown_grace": 1.0},
            "consent": CONSENT,
            "appointments": APPOINTMENTS,
            "hl7": HL7,
            "source": str(data / "smsgw.toml"),
            # A fake clock never renews the lease: long enough for any test here.
            "cluster": {"enabled": True, "node_id": name, "conninfo": dsn, "lease_seconds": 600},
        }
    )


@pytest.fixture(params=["sqlite", "postgresql"])
async def nodes(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    clock: FakeClock,
    open_gateway: GatewayFactory,
) -> AsyncIterator[Nodes]:
    if request.param == "sqlite":
        gw = await open_gateway(consent=CONSENT, appointments=APPOINTMENTS, hl7=HL7)
        yield Nodes("sqlite", gw, gw)
        return
    dsn: str = request.getfixturevalue("migrated_dsn")
    config_of = functools.partial(_cluster_config, dsn=dsn)
    async with in_process_nodes(tmp_path, clock, config_of) as (a, b):
        yield Nodes("postgresql", a, b)


async def test_an_s12_sent_to_a_books_on_b_with_its_reminder_and_b_logs_it(
    nodes: Nodes, clock: FakeClock
) -> None:
    await nodes.a.reminder_rules.create(
        await nodes.staff(nodes.a), RuleSpec("day before", "-2h", "reminder")
    )
    now = clock.time()
    [ack] = await nodes.send(nodes.a, siu("S12", key="A1", sent=now, start=now + 26 * H))
    assert msa(ack)[0] == "AA"

    staff_b = await nodes.staff(nodes.b)
    [view] = await nodes.b.usecases.appointments.search(staff_b, Search())
    assert (view.record.status, view.record.version, view.record.source) == ("booked", 1, "ehr")
    detail = await nodes.b.usecases.appointments.get(staff_b, view.record.id)
    assert [(n.notice.kind.value, n.state.value) for n in detail.notices] == [
        ("reminder", "pending")
    ]
    [logged] = await nodes.log(nodes.b)
    assert (logged.msg_type, logged.event, logged.state, logged.duplicates) == (
        "SIU",
        "S12",
        "mapped",
        0,
    )
    assert nodes.b.hl7 is not None
    [summary] = await nodes.b.hl7.interfaces()
    assert summary.counters["mapped"] == 1
    phi = await caller(nodes.b, "read", "phi")
    raw = await nodes.b.hl7.raw(logged.id, phi)
    assert raw is not None and "SIU^S12" in raw  # sealed by A, opened by B
    if nodes.a.cluster is not None and nodes.b.cluster is not None:
        # A rotation re-encrypts the log too; B takes the new generation up at its read.
        async with nodes.a.cluster.queue.pool.connection() as conn:
            generation, _ = await keyring.rotate(conn, nodes.a.store.master_key)
            cur = await conn.execute("SELECT raw_ct FROM hl7_messages")
            assert [header_generation(r[0]) for r in await cur.fetchall()] == [generation]
        assert generation not in nodes.b.cluster.queue.cipher.generations
        assert await nodes.b.hl7.raw(logged.id, phi) == raw

    clock.advance(91 * 86400.0)  # past `retention.body_days`: the text goes, the row stays
    outcome = await nodes.b.retention.run("console")
    step = "hl7_messages" if nodes.kind == "sqlite" else "shared_hl7_messages"
    assert outcome.removed[step] == 1
    assert nodes.a.hl7 is not None
    assert await nodes.a.hl7.raw(logged.id, phi) == ""
    assert [m.id for m in await nodes.log(nodes.a)] == [logged.id]


async def test_one_control_id_sent_to_both_nodes_at_once_is_mapped_once(
    nodes: Nodes, clock: FakeClock
) -> None:
    now = clock.time()
    text = siu("S12", key="A2", sent=now, start=now + 26 * H)
    [first], [second] = await asyncio.gather(nodes.send(nodes.a, text), nodes.send(nodes.b, text))
    assert first == second and msa(first)[0] == "AA"  # the duplicate gets the stored ACK

    staff = await nodes.staff(nodes.a)
    [view] = await nodes.a.usecases.appointments.search(staff, Search())
    detail = await nodes.a.usecases.appointments.get(staff, view.record.id)
    assert [e.event for e in detail.events] == ["booked"]
    [logged] = await nodes.log(nodes.b)
    assert (logged.state, logged.duplicates) == ("mapped", 1)

    # Erasing the patient's number on B blanks the stored text that names it, A reads.
    erased = await nodes.b.erasures.erase("+12025550123", "console")
    shared = "" if nodes.kind == "sqlite" else "shared_"
    assert erased.counts[f"{shared}hl7_messages"] == 1
    assert nodes.a.hl7 is not None
    assert await nodes.a.hl7.raw(logged.id, await caller(nodes.a, "read", "phi")) == ""


async def test_one_patients_bookings_on_both_nodes_at_once_make_one_patient(
    nodes: Nodes, clock: FakeClock
) -> None:
    """Two appointments of one patient sent to A and B at once (their jobs lock the
    same patient and number, and take turns; `tests/pg/test_clinical_keys.py`), and a
    third patient's beside them: all AA, one patient row for the two, and the two
    appointments with different short codes."""
    now = clock.time()
    ours = [siu("S12", key=k, sent=now, start=now + 26 * H) for k in ("P1", "P2")]
    theirs = siu("S12", key="P3", sent=now, start=now + 26 * H, mrn="MRN7",
                 phone="^PRN^CP^^1^202^5550177")  # fmt: skip
    acks = await asyncio.gather(
        nodes.send(nodes.a, ours[0]), nodes.send(nodes.b, ours[1]), nodes.send(nodes.a, theirs)
    )
    assert [msa(a)[0] for [a] in acks] == ["AA"] * 3
    staff = await nodes.staff(nodes.b)
    views = await nodes.b.usecases.appointments.search(staff, Search())
    patients = await nodes.b.clinical_db.all("SELECT count(*) FROM patients")
    assert (len(views), patients[0][0]) == (3, 2)
    codes = {v.record.short_code for v in views if (v.number_masked or "").endswith("23")}
    assert len(codes) == 2


async def test_what_cannot_be_mapped_is_quarantined_ae_and_a_refused_header_ar(
    nodes: Nodes, clock: FakeClock
) -> None:
    now = clock.time()
    good = siu("S12", key="A3", sent=now, start=now + 26 * H)
    # An S14 for an unknown key without a PID: mapped, then refused by the state machine
    # inside the job (its savepoint rolled back, the message row kept).
    modify = siu("S14", key="A5", sent=now, start=now + 26 * H)
    no_patient = _control("\r".join(s for s in modify.split("\r") if not s.startswith("PID")), "Q")
    bad_version = _control(good.replace("|P|2.5.1", "|P|9.9", 1), "R")
    quarantined, rejected = await nodes.send(nodes.a, no_patient, bad_version)
    assert msa(quarantined)[0] == "AE" and msa(rejected)[0] == "AR"
    assert err3(rejected) == "203"  # unsupported version id

    [q] = await nodes.log(nodes.b, "quarantined")
    assert (q.error_code, q.error_location) == (101, "PID")
    assert q.error_text == "a new appointment needs its patient (PID)"
    [r] = await nodes.log(nodes.b, "rejected")
    assert r.error_code == 203
    assert nodes.b.hl7 is not None
    again = await nodes.b.hl7.reprocess(q.id, await nodes.staff(nodes.b))
    assert again == "quarantined"  # the message itself is wrong: still
    staff = await nodes.staff(nodes.b)
    assert await nodes.b.usecases.appointments.search(staff, Search()) == []


async def test_a_results_message_is_recorded_once_for_every_node(
    nodes: Nodes, clock: FakeClock
) -> None:
    """ORU^R01 on any node: its event in the shared tables (cluster migration 22), a
    resend to the other node a duplicate."""
    msh = siu("S12", key="A3", sent=clock.time(), start=clock.time() + 26 * H).split("\r")[0]
    body = sample_text("ORU-R01-01.hl7").split("\r", 1)[1]  # the sample's, after its MSH
    oru = _control(msh.replace("SIU^S12^SIU_S12", "ORU^R01^ORU_R01"), "O1") + body
    [first] = await nodes.send(nodes.a, oru)
    [again] = await nodes.send(nodes.b, oru)
    assert msa(first)[0] == "AA" and msa(again)[0] == "AA"
    [logged] = await nodes.log(nodes.b, "mapped")
    assert (logged.msg_type, logged.duplicates) == ("ORU", 1)
    events = await nodes.b.clinical_db.all("SELECT kind, status, outcome FROM clinical_events")
    assert [tuple(e) for e in events] == [("result_available", "F", "no_contact")]


async def test_store_migrate_carries_the_hl7_log_and_its_dedupe_to_the_cluster(
    tmp_path: Path, clock: FakeClock, pg_dsn: str
) -> None:
    """`smsgw store migrate` copies `hl7_messages` (ids and ciphertexts kept, verified
    by a decrypted sample): the cluster node lists it, opens it, and answers its resend
    as a duplicate instead of booking twice."""
    source = await asyncio.to_thread(init, tmp_path / "one")  # `smsgw init` runs its own loop
    config = from_mapping(
        {
            "data_dir": str(source.data_dir),
            "routes": [{"name": "main", "type": "loopback", **LOOPBACK_TEST}],
            "consent": CONSENT,
            "appointments": APPOINTMENTS,
            "hl7": HL7,
            "source": str(source.data_dir / "smsgw.toml"),
        }
    )
    one = await Gateway.open(config, clock)
    await one.start(dispatch=False)
    now = clock.time()
    text = siu("S12", key="A4", sent=now, start=now + 26 * H)
    try:
        [ack] = await Nodes("sqlite", one, one).send(one, text)
    finally:
        await one.stop()
    assert await asyncio.to_thread(_migrate, source.conf, pg_dsn) == 0

    shutil.copytree(source.data_dir, tmp_path / "gw1")  # the same keyring
    node = await Gateway.open(_cluster_config(tmp_path / "gw1", "gw1", dsn=pg_dsn), clock)
    await node.start(dispatch=False)
    try:
        nodes = Nodes("postgresql", node, node)
        assert await nodes.send(node, text) == [ack]
        [logged] = await nodes.log(node)
        assert (logged.state, logged.duplicates) == ("mapped", 1)
        assert node.hl7 is not None
        raw = await node.hl7.raw(logged.id, await caller(node, "read", "phi"))
        assert raw is not None and "SIU^S12" in raw
        staff = await nodes.staff(node)
        assert len(await node.usecases.appointments.search(staff, Search())) == 1
    finally:
        await node.stop()


def _control(text: str, control_id: str) -> str:
    """`text` with MSH-10 (its control id) replaced."""
    msh, _, rest = text.partition("\r")
    fields = msh.split("|")
    fields[9] = control_id
    return "|".join(fields) + "\r" + rest
