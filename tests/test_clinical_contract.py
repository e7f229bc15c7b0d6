"""The clinical parts' shared contract: PID extraction from the shared samples (MRN,
never an SSN; textable numbers only), patients upserted as consent contacts, and the
notice rows' single exit from `pending`."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.clinical import notices, patients
from gateway.clinical.commands import ApplyContext, ClinicalHooks, MappingError
from gateway.clinical.notices import Notice, NoticeKind, NoticeState
from gateway.clinical.profile import InterfaceProfile
from gateway.store.store import Store
from tests.hl7_samples import parse, sample

SIU = (
    "MSH|^~\\&|EHR|CLINIC|SMSGW|HOSP|20261201090000||SIU^S12^SIU_S12|C1|P|2.5.1\r"
    "SCH|A1^EHR|F1^EHR|||||||30|min\r"
    "PID|1||123-45-6789^^^SSA^SS~MRN42^^^HOSP&1.2.3&ISO^MR||Doe^Jane||19800101|F|||"
    "||^PRN^PH^^1^202^5550100~^PRN^CP^^1^202^5550123~^NET^Internet^jane@example.org|"
    "|SPA\r"
)


def test_the_mrn_is_chosen_and_an_ssn_never_is() -> None:
    profile = InterfaceProfile("ehr")
    details = patients.extract(parse(SIU), profile)
    assert details.ref == patients.PatientRef("HOSP", "MRN42")
    assert [p.e164 for p in details.phones] == ["+12025550123"]  # the CP one; PH is a landline
    assert details.phones[0].source_field == "PID-13"
    assert details.language == "es"
    only_ssn = SIU.replace("~MRN42^^^HOSP&1.2.3&ISO^MR", "")
    with pytest.raises(MappingError) as e:
        patients.extract(parse(only_ssn), profile)
    assert e.value.location == "PID-3" and "6789" not in e.value.text


def test_an_untyped_ssn_in_pid3_is_not_an_mrn() -> None:
    with pytest.raises(MappingError):
        patients.extract(sample("ORU-R01-RMGEAD.hl7"), InterfaceProfile("lab"))


def test_the_profile_authority_picks_the_identifier() -> None:
    details = patients.extract(
        sample("SIU-S12-01.hl7"), InterfaceProfile("x", mrn_authority="test1")
    )
    assert details.ref.mrn == "PATID1234"
    with pytest.raises(MappingError):
        patients.extract(sample("SIU-S12-01.hl7"), InterfaceProfile("x", mrn_authority="nobody"))


@pytest.fixture
async def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "gw.db", bytes(32))
    await s.open()
    yield s  # type: ignore[misc]
    await s.close()


async def test_upsert_makes_the_patient_a_contact_and_notices_leave_pending_once(
    store: Store,
) -> None:
    ctx = ApplyContext(1000.0, "ehr", "hl7:ehr", InterfaceProfile("ehr"), store, ClinicalHooks())

    def job(conn: sqlite3.Connection) -> tuple[patients.PatientRow, patients.PatientRow, str]:
        first = patients.upsert(conn, ctx, patients.extract(parse(SIU), ctx.profile))
        again = patients.upsert(
            conn, ctx, patients.PatientDetails(patients.PatientRef("HOSP", "MRN42"))
        )
        nid = notices.schedule(
            conn,
            ctx.cipher,
            Notice(
                NoticeKind.REMINDER,
                first.contact_idx or b"",
                "reminder",
                "appointment",
                2000.0,
                {"clinic": "North"},
                appointment_id="apt1",
                rule_id="r1",
            ),
            ctx.now,
        )
        with pytest.raises(sqlite3.IntegrityError):
            notices.schedule(
                conn,
                ctx.cipher,
                Notice(
                    NoticeKind.REMINDER,
                    b"x",
                    "reminder",
                    "appointment",
                    3000.0,
                    appointment_id="apt1",
                    rule_id="r1",
                ),
                ctx.now,
            )
        return first, again, nid

    first, again, nid = await store.writer.run(job)
    assert first.id == again.id and first.contact_idx == again.contact_idx  # number kept
    assert first.language == "es" and first.time_zone == "UTC"

    def run(conn: sqlite3.Connection) -> tuple[list[notices.NoticeRow], bool, bool]:
        due = notices.due(conn, ctx.cipher, 2000.0, 10)
        return (
            due,
            notices.finish(conn, nid, NoticeState.QUEUED, 2000.0, message_id="m1"),
            notices.finish(conn, nid, NoticeState.SKIPPED, 2000.0, reason="late"),
        )

    due, once, twice = await store.writer.run(run)
    assert [d.id for d in due] == [nid] and due[0].notice.variables == {"clinic": "North"}
    assert once and not twice
    raw = b"".join(p.read_bytes() for p in store.path.parent.glob("gw.db*"))
    assert b"MRN42" not in raw and b"North" not in raw and b"5550123" not in raw
