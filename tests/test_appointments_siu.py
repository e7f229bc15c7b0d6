"""Golden extraction over every shared SIU and ADT sample (research §I): trigger, key,
start and end in UTC from both timing sources (the samples disagree: SCH-11 says
2020-10-01, TQ1 2021), status, service, location; routing by MSH-9 alone; and each
missing or malformed piece answered with its table-0357 code and field."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drivers.clock import FakeClock
from gateway.appointments.adt import UpdatePatient
from gateway.appointments.hltime import utc_iso
from gateway.appointments.machine import AppointmentChange
from gateway.appointments.siu import map_siu
from gateway.clinical import mappers
from gateway.clinical.commands import (
    ERR_APPLICATION_INTERNAL,
    ERR_DATA_TYPE,
    ERR_REQUIRED_FIELD_MISSING,
    MappingError,
)
from gateway.clinical.profile import InterfaceProfile, TimingSource
from gateway.store.store import Store
from tests.appointment_rig import DAY, Rig, siu
from tests.hl7_samples import names, parse, sample, text

TQ1 = InterfaceProfile("ehr", timing_source=TimingSource.TQ1)
SCH11 = InterfaceProfile("ehr", timing_source=TimingSource.SCH11)
AIS = InterfaceProfile("ehr", timing_source=TimingSource.AIS)
SCH11_START = "2020-10-01T09:11:00Z"  # SCH-11.4 of every Microsoft SIU sample

# The two families of samples: TQ1 start and end (UTC), service (AIS-3), location (AIL-3).
_ONE = ("2021-09-24T07:15:00Z", "2021-09-24T08:05:00Z", "76164006", "055")
_TWO = ("2021-08-18T09:15:00Z", "2021-08-18T10:15:00Z", "58410-2", "LabUnit101")
_MOVED = ("2021-08-20T09:15:00Z", "2021-08-20T10:15:00Z", "58410-2", "LabUnit101")
_OTHER_ROOM = (*_TWO[:3], "LabUnit102")
_ONE_OLD = ("2020-10-04T09:11:00Z", "2020-10-08T09:11:00Z", "111", "4E")
# sample: trigger, filler status, then start, end, service, location code
GOLDEN = {
    "SIU-S12-01.hl7": ("book", "booked", *_ONE),
    "SIU-S12-02.hl7": ("book", "booked", *_TWO),
    "SIU-S12_1.hl7": ("book", "booked", *_ONE_OLD),
    "SIU-S13-01.hl7": ("reschedule", "booked", *_ONE),
    "SIU-S13-02.hl7": ("reschedule", "booked", *_MOVED),
    "SIU-S14-01.hl7": ("modify", "booked", *_ONE),
    "SIU-S14-02.hl7": ("modify", "booked", *_OTHER_ROOM),
    "SIU-S15-01.hl7": ("cancel", "cancelled", *_ONE),
    "SIU-S15-02.hl7": ("cancel", "cancelled", *_TWO),
    "SIU-S16-01.hl7": ("discontinue", "discontinued", *_ONE),
    "SIU-S16-02.hl7": ("discontinue", "discontinued", *_TWO),
    "SIU-S17-01.hl7": ("delete", "deleted", *_ONE),
    "SIU-S17-02.hl7": ("delete", "deleted", *_TWO),
    "SIU-S26-01.hl7": ("noshow", "noshow", *_ONE),
    "SIU-S26-02.hl7": ("noshow", "noshow", *_TWO),
}


def _facts(name: str, profile: InterfaceProfile) -> AppointmentChange:
    message = sample(name)
    kind, event = str(message.segment("MSH")[9]).split("^")[:2]
    mappers.load()
    mapper = mappers.mapper_for(kind, event)
    assert mapper is map_siu
    [cmd] = mapper(message, profile)
    assert isinstance(cmd, AppointmentChange)
    return cmd


def test_every_siu_sample_is_golden() -> None:
    siu_samples = [n for n in names() if n.startswith("SIU-")]
    assert sorted(siu_samples) == sorted(GOLDEN)
    for name, (trigger, status, start, end, service, code) in GOLDEN.items():
        f = _facts(name, TQ1).facts
        assert f.trigger.value == trigger, name
        assert f.key == "36996", name  # SCH-2, the filler's id (SCH-1 is the placer's 12345)
        assert (utc_iso(f.start or 0), utc_iso(f.end or 0)) == (start, end), name
        assert (f.status.value if f.status else None) == status, name
        assert f.service == service and f.location is not None and f.location.code == code
        assert f.patient is not None and f.patient.ref.mrn == "PATID1234"  # never the SSN


def _without(name: str, segment: str, n: int) -> str:
    """The sample with field `n` of its first `segment` emptied."""
    lines = text(name).split("\r")
    for i, line in enumerate(lines):
        if line.startswith(segment + "|"):
            parts = line.split("|")
            parts[n] = ""
            lines[i] = "|".join(parts)
            break
    return "\r".join(lines)


def test_the_filler_status_is_sch25_else_the_first_ais10() -> None:
    no_sch25 = _without("SIU-S15-01.hl7", "SCH", 25)  # AIS-10 still says Cancelled
    [cmd] = map_siu(parse(no_sch25), TQ1)
    assert isinstance(cmd, AppointmentChange) and cmd.facts.status is not None
    assert cmd.facts.status.value == "cancelled"
    neither = _without("SIU-S15-02.hl7", "SCH", 25)  # its AIS-10 is empty
    [cmd] = map_siu(parse(neither), TQ1)
    assert isinstance(cmd, AppointmentChange) and cmd.facts.status is None
    assert cmd.facts.trigger.value == "cancel"  # the trigger still decides


def test_the_timing_sources_disagree_and_the_profile_decides() -> None:
    for name in GOLDEN:
        tq1, sch11 = _facts(name, TQ1).facts, _facts(name, SCH11).facts
        assert utc_iso(sch11.start or 0) == SCH11_START, name
        assert tq1.start != sch11.start, name
    ais = _facts("SIU-S12-01.hl7", AIS).facts  # AIS-4 plus AIS-7/8 (50 min)
    assert (utc_iso(ais.start or 0), utc_iso(ais.end or 0)) == (
        "2021-09-24T07:15:00Z",
        "2021-09-24T08:05:00Z",
    )
    with pytest.raises(MappingError) as e:  # no AIS-4, AIL-6 or AIP-6 in it
        _facts("SIU-S12-02.hl7", AIS)
    assert (e.value.code, e.value.location) == (ERR_REQUIRED_FIELD_MISSING, "AIS-4")


def test_placer_key_by_profile() -> None:
    placer = InterfaceProfile("ehr", extra={"appointment_key": "placer"})
    assert _facts("SIU-S12-01.hl7", placer).facts.key == "12345"
    with pytest.raises(MappingError) as e:
        _facts("SIU-S12-01.hl7", InterfaceProfile("ehr", extra={"appointment_key": "x"}))
    assert e.value.code == ERR_APPLICATION_INTERNAL and "appointment_key" in e.value.text


def test_location_provider_and_times_without_offsets_in_the_profile_zone() -> None:
    f = _facts("SIU-S12-01.hl7", TQ1).facts
    assert f.location is not None
    assert (f.location.clinic, f.location.place) == ("GH Clinic", "055 Room01")
    assert f.provider == "Robert GE"  # AIP-3: given, family
    zoned = InterfaceProfile("ehr", time_zone="America/Chicago")
    epic = text("SIU-S12-01.hl7").replace("20210924093000+0215", "20210924093000")
    [cmd] = map_siu(parse(epic), zoned)
    assert isinstance(cmd, AppointmentChange)
    assert utc_iso(cmd.facts.start or 0) == "2021-09-24T14:30:00Z"  # 09:30 CDT


def test_siu_12_is_an_a60_and_never_reaches_the_siu_mapper() -> None:
    message = sample("SIU_12.hl7")
    assert str(message.segment("MSH")[9]).startswith("ADT^A60")
    mappers.load()
    assert mappers.mapper_for("ADT", "A60") is None


def test_adt_routes_by_msh9_not_evn1() -> None:
    mappers.load()
    for name in [n for n in names() if n.startswith("ADT-")]:
        message = sample(name)
        kind, event = str(message.segment("MSH")[9]).split("^")[:2]
        mapper = mappers.mapper_for(kind, event)
        assert mapper is not None, name
        [cmd] = mapper(message, TQ1)
        assert isinstance(cmd, UpdatePatient) and cmd.details.ref.mrn == "PATID1234"
    a08 = sample("ADT-A08-01.hl7")
    assert str(a08.segment("EVN")[1]) == "A01"
    assert mappers.mapper_for("ADT", "A01") is None


@pytest.mark.parametrize(
    ("change", "code", "where"),
    [
        (lambda t: t.replace("\rSCH|", "\rXXX|"), ERR_REQUIRED_FIELD_MISSING, "SCH"),
        (lambda t: t.replace("|PA1^EHR|A1^EHR|", "|||"), ERR_REQUIRED_FIELD_MISSING, "SCH-2"),
        (lambda t: t.replace("TQ1|||||||2", "TQ1|||||||x2"), ERR_DATA_TYPE, "TQ1-7"),
        (lambda t: t.replace("\rPID|", "\rXID|"), ERR_REQUIRED_FIELD_MISSING, "PID"),
        (lambda t: re.sub(r"HOSP\|\d+\+0000", "HOSP|", t), ERR_REQUIRED_FIELD_MISSING, "MSH-7"),
    ],
)
def test_missing_pieces_are_mapping_errors_with_their_field(
    change: object, code: int, where: str
) -> None:
    message = siu("S12", sent=1_800_000_000.0, start=1_800_000_000.0 + DAY)
    changed = change(message)  # type: ignore[operator]  # a lambda of the table
    with pytest.raises(MappingError) as e:
        map_siu(parse(changed), TQ1)
    assert (e.value.code, e.value.location) == (code, where)
    assert "5550123" not in e.value.text and "MRN42" not in e.value.text


def test_an_s12_without_a_start_is_refused_but_a_cancel_needs_none() -> None:
    no_start = siu("S12", sent=1_800_000_000.0)
    with pytest.raises(MappingError) as e:
        map_siu(parse(no_start), TQ1)
    assert (e.value.code, e.value.location) == (ERR_REQUIRED_FIELD_MISSING, "TQ1-7")
    [cmd] = map_siu(parse(siu("S15", sent=1_800_000_000.0)), TQ1)
    assert isinstance(cmd, AppointmentChange) and cmd.facts.start is None


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = Store(tmp_path / "gw.db", bytes(32))
    await store.open()
    yield Rig(store, FakeClock())
    await store.close()


async def test_an_adt_with_a_new_number_replans_the_patients_appointments(rig: Rig) -> None:
    now = rig.clock.time()
    await rig.feed(siu("S12", sent=now, start=now + 10 * DAY))
    await rig.feed(siu("S12", key="B1", sent=now, start=now + 20 * DAY))
    await rig.feed(siu("S15", key="B1", sent=now + 1, start=now + 20 * DAY))
    rig.changed.clear()
    adt = (
        "MSH|^~\\&|EHR|CLINIC|SMSGW|HOSP|20270101000000||ADT^A08^ADT_A01|X1|P|2.5.1\r"
        "EVN|A01|20270101000000\r"
        "PID|1||MRN42^^^HOSP^MR||Doe^Jane||19800101|F|||||^PRN^CP^^1^202^5550199||ENG\r"
    )
    await rig.feed(adt)
    live = await rig.rows("SELECT id FROM appointments WHERE status = 'booked'")
    assert rig.changed == [live[0][0]]  # the live one only, not the cancelled one

    def language(conn: sqlite3.Connection) -> list[tuple[str, ...]]:
        return conn.execute(
            "SELECT c.language FROM patients p JOIN contacts c ON c.idx = p.contact_idx"
        ).fetchall()

    assert await rig.store.writer.run(language) == [("en",)]
    await rig.feed(adt.replace("X1", "X2"))  # the same number again: nothing to re-plan
    assert len(rig.changed) == 1
