"""Issue 18: appointments, reminder rules, templates and the notice runner on a cluster.

The same cases run on one SQLite gateway and on two gateways sharing one PostgreSQL
(on SQLite both "nodes" are the one gateway), through the use cases every front end
calls: an appointment posted on one node is read, moved and cancelled on the other;
both nodes' runners passing at once send each reminder once; a cancelled
appointment's reminder is not sent; a template activated on one node renders on the
other; an opted-out patient's reminder is stored blocked, and its notice says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import shutil
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from drivers.clock import FakeClock
from gateway.app import Gateway
from gateway.appointments.usecase import AppointmentRequest
from gateway.cli import main
from gateway.clinical import outbound
from gateway.clinical.notices import NoticeKind, NoticeRow, NoticeState
from gateway.cluster import consent_store, keyring
from gateway.cluster.clinical_db import ClusterClinicalDb, run_bridged
from gateway.cluster.lease import Pool
from gateway.config import from_mapping
from gateway.consent.ledger import Entry
from gateway.consent.purposes import appointment_scope
from gateway.errors import ApiError
from gateway.reminders import rules
from gateway.reminders.rules import RuleSpec
from gateway.templates.usecase import DraftRequest
from gateway.usecases import Caller
from gateway.usecases.consent import DecisionRequest
from gateway.usecases.consent_csv import Options
from gateway.usecases.messages import IdempotencyKey
from tests.conftest import CANARY_NUMBER, LOOPBACK_TEST, TEST_CONSENT, GatewayFactory
from tests.pg.migrate_source import init
from tests.pg.two_nodes import in_process_nodes
from tests.test_consent_import import _chunks
from tests.test_consent_policy import caller

H = 3600.0
ANY_HOUR = {"window": "", "caps": []}
CONSENT = {**TEST_CONSENT, "purposes": {**TEST_CONSENT["purposes"], "appointment": ANY_HOUR}}
APPOINTMENTS = {"time_zone": "UTC", "cancel_debounce": 60.0}


@dataclass
class Nodes:
    kind: str
    a: Gateway
    b: Gateway

    async def staff(self, gw: Gateway) -> Caller:
        return await caller(gw, "admin", "send", "read", "consent")

    async def book(
        self, gw: Gateway, key: str, start_in: float = 26 * H, number: str = CANARY_NUMBER
    ) -> str:
        start = datetime.fromtimestamp(gw.clock.time() + start_in, UTC)
        request = AppointmentRequest(key, f"MRN-{key}", start, number=number, language="en")
        saved = await gw.usecases.appointments.upsert(await self.staff(gw), request)
        return saved.id

    async def reminder_rule(self) -> None:
        spec = RuleSpec("day before", "-2h", "reminder")
        await self.a.reminder_rules.create(await self.staff(self.a), spec)

    async def notices(self, gw: Gateway, appointment_id: str) -> list[NoticeRow]:
        detail = await gw.usecases.appointments.get(await self.staff(gw), appointment_id)
        return list(detail.notices)


def _cluster_config(data: Path, name: str, dsn: str) -> Any:
    data.mkdir(exist_ok=True)
    return from_mapping(
        {
            "data_dir": str(data),
            "routes": [{"name": "main", "type": "loopback", **LOOPBACK_TEST}],
            "http": {"shutdown_grace": 1.0},
            "consent": CONSENT,
            "appointments": APPOINTMENTS,
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
        gw = await open_gateway(consent=CONSENT, appointments=APPOINTMENTS)
        yield Nodes("sqlite", gw, gw)
        return
    dsn: str = request.getfixturevalue("migrated_dsn")
    async with in_process_nodes(
        tmp_path, clock, lambda data, name: _cluster_config(data, name, dsn)
    ) as opened:
        yield Nodes("postgresql", opened[0], opened[1])


def _states(rows: list[NoticeRow]) -> list[tuple[str, str, str | None]]:
    return [(r.notice.kind.value, r.state.value, r.reason) for r in rows]


async def test_an_appointment_posted_on_one_node_is_moved_and_cancelled_on_the_other(
    nodes: Nodes,
) -> None:
    await nodes.reminder_rule()
    appt = await nodes.book(nodes.a, "ehr-1")
    staff_b = await nodes.staff(nodes.b)
    seen = await nodes.b.usecases.appointments.get(staff_b, appt)
    assert (seen.view.record.status, seen.view.record.version) == ("booked", 1)
    assert seen.view.number_masked is not None and seen.view.number_masked.endswith("47")
    assert _states(list(seen.notices)) == [("reminder", "pending", None)]

    moved = await nodes.book(nodes.b, "ehr-1", start_in=50 * H)  # the same external key
    assert moved == appt
    cancelled = await nodes.b.usecases.appointments.cancel(staff_b, appt)
    assert (cancelled.status, cancelled.version) == ("cancelled", 3)

    detail = await nodes.a.usecases.appointments.get(await nodes.staff(nodes.a), appt)
    assert [e.event for e in detail.events] == ["booked", "moved", "cancelled"]
    assert sorted(_states(list(detail.notices))) == [
        ("appointment_cancelled", "pending", None),  # held for the debounce
        ("reminder", "cancelled", "appointment_cancelled"),
        ("reminder", "superseded", "replanned"),
    ]
    listed = await nodes.a.usecases.appointments.search(await nodes.staff(nodes.a), _all())
    assert [v.record.id for v in listed] == [appt]


async def test_one_key_upserted_on_both_nodes_at_once_is_one_appointment(nodes: Nodes) -> None:
    """The writes take turns across nodes (SQLite's one writer; the cluster's advisory
    lock), and the idempotent answer stored on one node is replayed on the other."""
    staff = await nodes.staff(nodes.a)
    start = datetime.fromtimestamp(nodes.a.clock.time() + 26 * H, UTC)
    request = AppointmentRequest("ehr-1", "MRN-1", start, number=CANARY_NUMBER)
    key = IdempotencyKey(b"k" * 32, b"r" * 32, 201)
    first, second = await asyncio.gather(
        nodes.a.usecases.appointments.upsert(staff, request, key),
        nodes.b.usecases.appointments.upsert(staff, request),
    )
    assert first.id == second.id and sorted([first.created, second.created]) == [False, True]
    replayed = await nodes.b.usecases.messages.replay(staff, key)
    assert replayed is not None and json.loads(replayed.body)["id"] == first.id
    listed = await nodes.b.usecases.appointments.search(staff, _all())
    assert [v.record.id for v in listed] == [first.id]


async def test_a_failed_pass_leaves_its_notices_and_parallel_passes_send_each_once(
    nodes: Nodes, clock: FakeClock
) -> None:
    """A node shutting down mid-pass (its accept refused 503) rolls its whole pass back,
    claims and skips included: the notices are pending, unlocked, for the next pass;
    then both nodes' runners passing at once send each reminder once."""
    await nodes.reminder_rule()
    appts = [
        await nodes.book(gw, f"ehr-{i}", number=f"+1202555{i:04d}")
        for i, gw in enumerate([nodes.a, nodes.b] * 4)
    ]
    clock.advance(24 * H)  # every reminder is due
    a, b = nodes.a.notice_runner(nodes.a.renderer), nodes.b.notice_runner(nodes.b.renderer)
    nodes.a.accepting = False
    with pytest.raises(ApiError) as refused:
        await a.run_once()
    assert refused.value.status == 503
    for appt in appts:
        assert [r.state for r in await nodes.notices(nodes.b, appt)] == [NoticeState.PENDING]
    nodes.a.accepting = True

    results = await asyncio.gather(a.run_once(), b.run_once(), a.run_once(), b.run_once())
    assert sum(r.queued for r in results) == len(appts)
    sent = {m for r in results for m in r.messages}
    assert len(sent) == len(appts)
    staff = await nodes.staff(nodes.b)
    for appt in appts:
        [row] = await nodes.notices(nodes.b, appt)
        assert row.state is NoticeState.QUEUED and row.message_id in sent
        message = await nodes.b.usecases.messages.get(staff, row.message_id)
        assert (message.category, message.purpose) == ("reminder", "appointment")
    assert sum(r.queued for r in [await a.run_once(), await b.run_once()]) == 0


async def test_a_cancelled_appointments_reminder_is_not_sent(
    nodes: Nodes, clock: FakeClock
) -> None:
    await nodes.reminder_rule()
    cancelled = await nodes.book(nodes.a, "ehr-cancelled")
    raced = await nodes.book(nodes.a, "ehr-raced", number="+12025550199")
    await nodes.b.usecases.appointments.cancel(await nodes.staff(nodes.b), cancelled)
    # A cancellation that left the reminder pending (a node's change racing the plan):
    # the send-time recheck skips it.
    await nodes.a.clinical_db.run(
        lambda conn: conn.execute(
            "UPDATE appointments SET status = 'cancelled' WHERE id = ?", (raced,)
        )
    )
    clock.advance(24 * H)
    result = await nodes.b.notice_runner(nodes.b.renderer).run_once()
    # Only the cancellation's own notice (after its debounce) is sent.
    assert dict(result.outcomes) == {"skipped:not_booked": 1, "queued": 1}
    by_kind = {r.notice.kind: r for r in await nodes.notices(nodes.a, cancelled)}
    reminder = by_kind[NoticeKind.REMINDER]
    assert (reminder.state, reminder.message_id) == (NoticeState.CANCELLED, None)
    assert by_kind[NoticeKind.APPOINTMENT_CANCELLED].state is NoticeState.QUEUED
    [skipped] = await nodes.notices(nodes.a, raced)
    assert (skipped.state, skipped.reason) == (NoticeState.SKIPPED, "not_booked")


async def test_a_template_activated_on_one_node_renders_on_the_other(
    nodes: Nodes, clock: FakeClock
) -> None:
    staff_a = await nodes.staff(nodes.a)
    body = "Reminder: {clinic} sees you {start}. Reply C {short_code}, STOP to opt out"
    variables = {
        "clinic": {"type": "provider", "max_length": 24},
        "start": {"type": "datetime"},
        "short_code": {"type": "short_code", "max_length": 4},
    }
    draft = DraftRequest("en", "appointment", variables, body=body, kind="reminder")
    saved = await nodes.a.templates.save(staff_a, _named(draft, "reminder"))
    assert saved.version == 2  # the built-in default, seeded once for every node, is 1
    heads = await nodes.b.templates.heads(await nodes.staff(nodes.b))
    assert [v.version for v in heads if (v.draft.name, v.draft.language) == ("reminder", "en")] == [
        2
    ]

    await nodes.reminder_rule()
    appt = await nodes.book(nodes.a, "ehr-1")
    clock.advance(24 * H)
    assert (await nodes.b.notice_runner(nodes.b.renderer).run_once()).queued == 1
    [row] = await nodes.notices(nodes.b, appt)
    source, renderer = nodes.b.templates.source, nodes.b.templates.renderer
    rendered = await renderer.render_from(source, "reminder", "en", row.notice.variables)
    assert rendered.text.startswith("Reminder: ") and rendered.version == 2

    await nodes.a.templates.activate(staff_a, "reminder", "en", 1)
    again = await renderer.render_from(source, "reminder", "en", row.notice.variables)
    assert again.version == 1 and not again.text.startswith("Reminder: ")


async def test_an_opted_out_patients_reminder_is_blocked(nodes: Nodes, clock: FakeClock) -> None:
    await nodes.reminder_rule()
    appt = await nodes.book(nodes.a, "ehr-1")
    staff_b = await nodes.staff(nodes.b)
    await nodes.b.usecases.consent.record(
        staff_b, DecisionRequest(CANARY_NUMBER, "opt_out", "api", "all")
    )
    clock.advance(24 * H)
    assert (await nodes.a.notice_runner(nodes.a.renderer).run_once()).queued == 1
    [row] = await nodes.notices(nodes.b, appt)
    assert row.notice.kind is NoticeKind.REMINDER
    assert (row.state, row.reason) == (NoticeState.QUEUED, "blocked:opted_out")
    assert row.message_id is not None
    message = await nodes.b.usecases.messages.get(staff_b, row.message_id)
    assert (message.status.value, message.error_code) == ("blocked", "opted_out")


async def test_erasing_a_number_on_one_node_reaches_its_appointments_on_every_node(
    nodes: Nodes,
) -> None:
    await nodes.reminder_rule()
    appt = await nodes.book(nodes.a, "ehr-1")
    other = await nodes.book(nodes.a, "ehr-2", number="+12025550199")
    erased = await nodes.b.erasures.erase(CANARY_NUMBER, "console")
    shared = "" if nodes.kind == "sqlite" else "shared_"
    assert erased.counts[f"{shared}appointments"] == 1
    assert erased.counts[f"{shared}notices_cancelled"] == 1
    staff = await nodes.staff(nodes.a)
    detail = await nodes.a.usecases.appointments.get(staff, appt)
    assert detail.view.number_masked is None
    assert _states(list(detail.notices)) == [("reminder", "cancelled", "erased")]
    assert detail.notices[0].notice.variables == {}
    with pytest.raises(ApiError) as gone:  # its external key is gone with it
        await nodes.a.usecases.appointments.cancel(staff, appt)
    assert gone.value.code == "erased"
    assert _states(await nodes.notices(nodes.a, other)) == [("reminder", "pending", None)]


async def test_an_appointment_opt_out_imported_on_one_node_cancels_its_reminder_at_once(
    nodes: Nodes,
) -> None:
    """Imported (a CSV of opt-outs, with the appointment's scope) on B: the
    appointment's pending reminder reads cancelled on A in that commit; the same
    patient's other appointment keeps its reminder."""
    await nodes.reminder_rule()
    appt = await nodes.book(nodes.a, "ehr-1")
    other = await nodes.book(nodes.a, "ehr-2", start_in=27 * H)
    staff = await caller(nodes.b, "admin", "send", "read", "consent")
    csv = f"number,decision,scope\n{CANARY_NUMBER},opt_out,{appointment_scope(appt)}\n"
    report = await nodes.b.usecases.consent.import_csv(staff, _chunks(csv.encode()), Options())
    assert (report.appended, report.failed) == (1, 0)
    assert _states(await nodes.notices(nodes.a, appt)) == [("reminder", "cancelled", "opted_out")]
    assert _states(await nodes.notices(nodes.a, other)) == [("reminder", "pending", None)]


async def test_an_opt_out_of_one_appointment_skips_its_reminder_only(
    nodes: Nodes, clock: FakeClock
) -> None:
    """`appointment:<id>` appended to the shared ledger without its withdrawal (which
    cancels the notices at once: test_replies_cluster.py): the shared runner still
    skips them when they fall due, until an opt-in of everything is newer."""
    if nodes.a.cluster is None:
        pytest.skip("SQLite withdraws them at the opt-out (test_appointment_scope_consent)")
    await nodes.reminder_rule()
    appt = await nodes.book(nodes.a, "ehr-1")
    other = await nodes.book(nodes.a, "ehr-2", start_in=27 * H)  # the same patient's
    entry = Entry(
        nodes.b.store.blind_index(CANARY_NUMBER),
        CANARY_NUMBER,
        "opt_out",
        appointment_scope(appt),
        "*",
        "import",
        clock.time(),
    )
    async with nodes.b.cluster.queue.pool.connection() as conn, conn.transaction():
        await consent_store.append(conn, nodes.b.cluster.queue.cipher, entry, "gw2")
    clock.advance(25 * H)
    result = await nodes.a.notice_runner(nodes.a.renderer).run_once()
    assert dict(result.outcomes) == {"skipped:opted_out": 1, "queued": 1}
    assert _states(await nodes.notices(nodes.b, appt)) == [("reminder", "skipped", "opted_out")]
    assert _states(await nodes.notices(nodes.b, other)) == [("reminder", "queued", None)]


async def test_a_key_rotation_on_the_shared_store_is_taken_up_by_every_node(
    nodes: Nodes, clock: FakeClock
) -> None:
    """The rotation re-encrypts the clinical twins too; a node reading or sending one
    before its heartbeat saw the new generation takes it up then."""
    if nodes.a.cluster is None:
        pytest.skip("SQLite's rotation: tests/test_key_rotation.py")
    await nodes.reminder_rule()
    appt = await nodes.book(nodes.a, "ehr-1")
    async with nodes.a.cluster.queue.pool.connection() as conn:
        generation, rows = await keyring.rotate(conn, nodes.a.store.master_key)
    assert rows >= 3  # the patient, the appointment, the notice (and the contact)
    assert generation not in nodes.b.cluster.queue.cipher.generations
    [row] = await nodes.notices(nodes.b, appt)  # a read: its variables open
    assert row.notice.variables["short_code"]
    clock.advance(24 * H)
    assert generation not in nodes.a.cluster.queue.cipher.generations
    assert (await nodes.a.notice_runner(nodes.a.renderer).run_once()).queued == 1


async def test_a_sent_notices_variables_are_swept_after_their_period(
    nodes: Nodes, clock: FakeClock
) -> None:
    await nodes.reminder_rule()
    appt = await nodes.book(nodes.a, "ehr-1")
    clock.advance(24 * H)
    assert (await nodes.a.notice_runner(nodes.a.renderer).run_once()).queued == 1
    [row] = await nodes.notices(nodes.b, appt)
    assert row.notice.variables["short_code"]
    clock.advance(91 * 86400.0)  # past `retention.body_days`
    outcome = await nodes.b.retention.run("console")
    step = "notice_variables" if nodes.kind == "sqlite" else "shared_notice_variables"
    assert outcome.removed[step] == 1
    [row] = await nodes.notices(nodes.a, appt)
    assert row.state is NoticeState.QUEUED and row.notice.variables == {}


async def test_store_migrate_carries_a_gateways_appointments_to_the_cluster(
    tmp_path: Path, clock: FakeClock, pg_dsn: str
) -> None:
    """`smsgw store migrate`: the patients, appointments and their trail, notices, rules,
    templates and HL7 write-backs copied with their ids and ciphertexts (verified by
    decrypted samples); the cluster node then reads, moves and reminds as the one gateway
    would have, and lists the write-back still to send."""
    source = await asyncio.to_thread(init, tmp_path / "one")  # `smsgw init` runs its own loop
    one = await Gateway.open(_config(source.data_dir), clock)
    await one.start(dispatch=False)
    try:
        single = Nodes("sqlite", one, one)
        await single.reminder_rule()
        appt = await single.book(one, "ehr-1")
        cipher = one.clinical_db.cipher
        written = await one.store.writer.run(  # a write-back still to send (migration 23)
            lambda c: outbound.enqueue(
                c, cipher, "ehr-out", "MSH|^~\\&|SMSGW\r", "R1", clock.time(), kind="test"
            )
        )
    finally:
        await one.stop()
    assert await asyncio.to_thread(_migrate, source.conf, pg_dsn) == 0

    shutil.copytree(source.data_dir, tmp_path / "gw1")  # the same keyring
    node = await Gateway.open(_cluster_config(tmp_path / "gw1", "gw1", pg_dsn), clock)
    await node.start(dispatch=False)
    try:
        nodes = Nodes("postgresql", node, node)
        assert await nodes.book(node, "ehr-1", start_in=30 * H) == appt  # moved
        detail = await node.usecases.appointments.get(await nodes.staff(node), appt)
        assert [(e.event, e.version) for e in detail.events] == [("booked", 1), ("moved", 2)]
        clock.advance(28 * H)
        assert (await node.notice_runner(node.renderer).run_once()).queued == 1
        assert node.hl7 is not None
        assert [(r.id, r.state) for r in await node.hl7.outbound()] == [(written, "pending")]
    finally:
        await node.stop()


def _config(data: Path) -> Any:
    return from_mapping(
        {
            "data_dir": str(data),
            "routes": [{"name": "main", "type": "loopback", **LOOPBACK_TEST}],
            "consent": CONSENT,
            "appointments": APPOINTMENTS,
            "source": str(data / "smsgw.toml"),
        }
    )


def _migrate(conf: Path, dsn: str) -> int:
    with contextlib.redirect_stdout(io.StringIO()):
        return main(["store", "migrate", "--config", str(conf), "--to", dsn, "--node-id", "gw1"])


async def test_a_shared_reminder_rule_version_is_never_changed_only_retired(pool: Pool) -> None:
    """Cluster migration 17 keeps SQLite's guard: a notice's (rule, version) always
    names what planned it."""
    spec = RuleSpec("day before", "-2h", "reminder")
    async with pool.connection() as conn:
        rule = await run_bridged(conn, lambda c: rules.save(c, None, spec, "t", 1.0))
        assert rule is not None
        for change in (
            "UPDATE reminder_rules SET lead = '-1h'",
            "UPDATE reminder_rules SET current = 2",
            "DELETE FROM reminder_rules",
        ):
            with pytest.raises(psycopg.errors.RaiseException):
                async with conn.transaction():
                    await conn.execute(change.encode())
        newer = await run_bridged(conn, lambda c: rules.save(c, rule.id, spec, "t", 2.0))
        assert newer is not None and newer.version == 2


def _all() -> Any:
    from gateway.appointments.queries import Search

    return Search()


def _named(draft: DraftRequest, name: str) -> DraftRequest:
    from dataclasses import replace

    return replace(draft, name=name)


async def test_a_cancelled_bridged_job_runs_no_statement_after_it_and_leaves_nothing(
    pool: Pool,
) -> None:
    """The gateway stopping mid-job: the bridge refuses the job's next statement and
    the cancellation waits for its thread, so nothing of it runs on a connection the
    pool has lent on; its transaction is rolled back."""
    started, refused = threading.Event(), threading.Event()

    def job(conn: Any) -> None:
        conn.execute("INSERT INTO template_heads VALUES ('a', 'en', 1, 0)")
        started.set()
        conn.abandoned.wait(10)
        try:
            conn.execute("INSERT INTO template_heads VALUES ('b', 'en', 1, 0)")
        except RuntimeError:
            refused.set()
            raise

    db = ClusterClinicalDb(pool, lambda: None)  # type: ignore[arg-type,return-value]  # no cipher used
    task = asyncio.create_task(db.run(job))
    await asyncio.to_thread(started.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert refused.is_set()
    assert await db.all("SELECT name FROM template_heads") == []
