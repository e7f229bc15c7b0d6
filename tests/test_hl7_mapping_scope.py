"""The cheap mapping path (issue 13 point 9): a mapper that declares the fields it
reads gets a message parsed from those alone (MSH whole, the profile's phone fields,
every other field emptied in place, other segments dropped), with the same result as
from the whole message; and a booking's writer job
reads every row it needs through an index, never by scanning a table that grows."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import hl7
import pytest

from drivers.clock import FakeClock
from gateway.clinical import mappers
from gateway.clinical.commands import ClinicalHooks, Command, Ignore, MappingError
from gateway.clinical.profile import InterfaceProfile, TimingSource
from gateway.hl7 import header
from gateway.hl7.inbound import Hl7Inbound, map_text
from gateway.hl7.settings import Hl7Interface
from gateway.reminders import rules
from gateway.reminders.demo import DEMO_RULES
from gateway.reminders.planner import Planner
from gateway.store.store import Store
from tests.hl7_samples import names, text

SEEN: list[str] = []


@mappers.maps("ZZZ", "Z90", "Z92", segments={"MSH": (9, 10), "PID": (3,), "ZXX": None})
def _scoped(message: hl7.Message, profile: InterfaceProfile) -> Sequence[Command]:
    SEEN.append(str(message))
    return [Ignore("seen")]


@mappers.maps("ZZZ", "Z91")
def _whole(message: hl7.Message, profile: InterfaceProfile) -> Sequence[Command]:
    SEEN.append(str(message))
    return [Ignore("seen")]


def _zzz(event: str) -> str:
    return (
        f"MSH|^~\\&|EHR|CLINIC|SMSGW|HOSP|20261201090000||ZZZ^{event}|C1|P|2.5.1\r"
        "EVN|Z90|20261201090000\r"
        "PID|1||MRN42^^^HOSP^MR||Doe^Jane\r"
        "NK1|1|Doe^John|SPO||^PRN^CP^^1^202^5550123|^WPN^PH\r"
        "ZXX|1|any^thing\r"
    )


def test_a_mapper_is_handed_only_the_fields_it_declares() -> None:
    profile = InterfaceProfile("ehr", phone_fields=("PID-13", "NK1-5"))
    SEEN.clear()
    for event in ("Z90", "Z91"):
        body = _zzz(event)
        assert map_text(body, header.parse(body), profile) == [Ignore("seen")]
    assert SEEN[0].split("\r")[:-1] == [
        "MSH|^~\\&|||||||ZZZ^Z90|C1",  # MSH-1, MSH-2 and the declared MSH-9, MSH-10
        "PID|||MRN42^^^HOSP^MR",  # PID-3; PID-13 (a phone field) is absent here
        "NK1|||||^PRN^CP^^1^202^5550123",  # NK1-5 (a phone field), NK1-6 emptied
        "ZXX|1|any^thing",  # declared whole
    ]
    assert SEEN[1] == _zzz("Z91")  # no declaration: the whole message
    assert mappers.segments_for("ZZZ", "Z92") == {
        "MSH": frozenset({9, 10}),
        "PID": frozenset({3}),
        "ZXX": None,
    }
    assert mappers.segments_for("ZZZ", "Z91") is None


def _outcome(commands: Sequence[Command] | MappingError) -> object:
    if isinstance(commands, MappingError):
        return ("error", commands.code, commands.text, commands.location)
    return [getattr(c, "facts", c) for c in commands]


def _read_in_part(name: str) -> bool:
    """Whether the sample's mapper declares the fields it reads (SIU, ADT)."""
    mappers.load()
    h = header.parse(text(name))
    return mappers.segments_for(h.message_type, h.event) is not None


@pytest.mark.parametrize("name", [n for n in names() if _read_in_part(n)])
def test_the_declared_segments_map_every_shared_sample_as_the_whole_message(name: str) -> None:
    body = text(name)
    h = header.parse(body)
    mapper = mappers.mapper_for(h.message_type, h.event)
    assert mapper is not None
    for source in TimingSource:
        for phones in (("PID-13", "PID-14"), ("NK1-5", "PID-13")):
            profile = InterfaceProfile(
                "ehr", timing_source=source, phone_fields=phones, accept_untyped_phone=True
            )
            try:
                whole: Sequence[Command] | MappingError = list(mapper(hl7.parse(body), profile))
            except MappingError as e:
                whole = e
            assert _outcome(map_text(body, h, profile)) == _outcome(whole), (name, source)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(tmp_path / "gw.db", b"k" * 32)
    await s.open()
    yield s
    await s.close()


def _booking(i: int) -> bytes:
    return (
        f"MSH|^~\\&|EPIC|NORTH|SMSGW|NORTH|20261201090000||SIU^S12|B{i}|P|2.3\r"
        f"SCH|{i}|{i}|||||ROUTINE^Routine||30|MIN|^^30^20301215093000|||||||||||||||Booked\r"
        f"PID|1||MRN{i % 3}^^^HOSP^MR||Doe^Jane||19800101|F|||||^PRN^CP^^1^202^5550123||ENG\r"
        "AIS|1||CARDIO^Cardiology|20301215093000|||30|MIN\r"
    ).encode()


async def test_a_booking_reads_rows_by_index_never_by_scanning(store: Store) -> None:
    hooks = ClinicalHooks()
    Planner().install(hooks)
    mappers.load()
    clock = FakeClock()

    def seed(conn: sqlite3.Connection) -> None:
        for spec in DEMO_RULES:
            rules.save(conn, None, spec, "system:test", clock.time())

    await store.writer.run(seed)
    iface = Hl7Interface(name="bench", accept_untyped_phone=True, timing_source="sch11")
    inbound = Hl7Inbound(iface, store, clock, hooks)
    for i in range(3):
        assert (await inbound.receive(_booking(i))).state == "mapped"
    statements: list[str] = []
    await store.writer.run(lambda conn: conn.set_trace_callback(statements.append))
    assert (await inbound.receive(_booking(3))).state == "mapped"

    def plans(conn: sqlite3.Connection) -> list[tuple[str, str]]:
        conn.set_trace_callback(None)
        found = []
        for sql in statements:
            if re.match(r"\s*(SELECT|UPDATE|DELETE|INSERT)", sql, re.IGNORECASE):
                for row in conn.execute("EXPLAIN QUERY PLAN " + sql):
                    found.append((sql[:120], str(row[-1])))
        return found

    found = await store.writer.run(plans)
    assert any("clinical_notices" in sql for sql, _ in found)
    scans = [(sql, plan) for sql, plan in found if plan.startswith("SCAN")]
    assert all("reminder_rules" in plan for _, plan in scans), scans


async def test_a_booking_reads_and_writes_each_row_once(store: Store) -> None:
    """Issue 13 point 9: the booking's writer job does no redundant work. A new
    appointment of a known patient: the appointment is looked up by its key once (not
    read back after its insert), the patient found by its keyed digest once after the
    upsert, no pending reminder is closed when there is none, and no rejected message
    row is deleted when the dedupe lookup found none. The notices are still planned."""
    hooks = ClinicalHooks()
    Planner().install(hooks)
    mappers.load()
    clock = FakeClock()

    def seed(conn: sqlite3.Connection) -> None:
        for spec in DEMO_RULES:
            rules.save(conn, None, spec, "system:test", clock.time())

    await store.writer.run(seed)
    iface = Hl7Interface(name="bench", accept_untyped_phone=True, timing_source="sch11")
    inbound = Hl7Inbound(iface, store, clock, hooks)
    for i in range(3):
        assert (await inbound.receive(_booking(i))).state == "mapped"
    statements: list[str] = []
    await store.writer.run(lambda conn: conn.set_trace_callback(statements.append))
    assert (await inbound.receive(_booking(3))).state == "mapped"

    def planned(conn: sqlite3.Connection) -> int:
        conn.set_trace_callback(None)
        return int(
            conn.execute(
                "SELECT count(*) FROM clinical_notices WHERE state = 'pending'"
            ).fetchone()[0]
        )

    assert await store.writer.run(planned) == 2 * 4  # every booking, two rules each
    flat = [" ".join(s.split()) for s in statements]

    def count(pattern: str) -> int:
        return sum(1 for s in flat if re.search(pattern, s))

    assert count(r"^SELECT .* FROM appointments WHERE source = .* AND ext_index = ") == 1, flat
    assert count(r"^SELECT p\.id, p\.contact_idx, c\.language") == 1, flat
    assert count(r"^UPDATE clinical_notices SET state = 'superseded'") == 0, flat
    assert count(r"^DELETE FROM hl7_messages") == 0, flat
    assert count(r"^INSERT INTO clinical_notices") >= 2, flat


async def test_a_planned_notice_journals_its_statement_in_memory(store: Store) -> None:
    """Issue 13 point 9: a notice's INSERT fires the opt-out trigger, so SQLite keeps
    a statement journal for it; in a temp file (SQLite's default) that cost some 19
    page writes to an unlinked `etilqs_*` file per notice, and a third of the insert's
    CPU. The writer keeps its temp store in memory: no temp file is open after the
    booking's notices are inserted, within the same transaction."""
    hooks = ClinicalHooks()
    planner = Planner()
    planner.install(hooks)
    mappers.load()
    clock = FakeClock()

    def seed(conn: sqlite3.Connection) -> None:
        for spec in DEMO_RULES:
            rules.save(conn, None, spec, "system:test", clock.time())

    await store.writer.run(seed)
    iface = Hl7Interface(name="bench", accept_untyped_phone=True, timing_source="sch11")
    inbound = Hl7Inbound(iface, store, clock, hooks)
    assert (await inbound.receive(_booking(0))).state == "mapped"

    def replan_and_list_temp_files(conn: sqlite3.Connection) -> tuple[int, list[str]]:
        appointment = conn.execute("SELECT id FROM appointments").fetchone()[0]
        planned = planner.replan_appointment(conn, store.cipher, appointment, clock.time())
        fds = Path("/proc/self/fd")
        links = []
        for fd in fds.iterdir():
            try:
                links.append(str(fd.readlink()))
            except OSError:
                continue
        return len(planned), [link for link in links if "etilqs_" in link]

    planned, temp_files = await store.writer.run(replan_and_list_temp_files)
    assert planned == 2
    assert temp_files == []
