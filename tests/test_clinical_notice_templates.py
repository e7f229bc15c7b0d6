"""Issue 13 glue: every producer of notices against the built-in template of its kind.

The notice runner skips a notice whose render is refused, so a producer storing other
variables than its template needs would silently drop every notice of that kind. Each
test here plans notices with the real producer (SIU mapper and state machine with the
debounce, the reminder planner, the ORU, RDS and RDE mappers) in a real gateway, then
renders them through the gateway's own `TemplateRenderer` over the built-in templates,
in English and Spanish, and checks that nothing of a result, a note or a drug name
reaches the text.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import pytest

from gateway.app import Gateway
from gateway.appointments.debounce import recheck_moved
from gateway.clinical import notices
from gateway.clinical.commands import ApplyContext, Command
from gateway.clinical.notices import Notice, NoticeKind, NoticeRow
from gateway.clinical.profile import InterfaceProfile
from gateway.reminders import rules
from gateway.reminders.rules import RuleSpec
from gateway.results import settings
from tests.appointment_rig import DAY, siu
from tests.conftest import TEST_CONSENT, GatewayFactory
from tests.hl7_samples import parse, text
from tests.test_results_notices import map_message

NUMBER_XTN = "^PRN^CP^^1^202^5550123"
LANGUAGES = ("en", "es")


def _ctx(gw: Gateway, profile: InterfaceProfile) -> ApplyContext:
    now = gw.clock.time()
    return ApplyContext(
        now, profile.name, f"hl7:{profile.name}", profile, gw.store, gw.clinical_hooks
    )


async def _apply(gw: Gateway, commands: Sequence[Command], profile: InterfaceProfile) -> None:
    ctx = _ctx(gw, profile)

    def job(conn: sqlite3.Connection) -> None:
        for c in commands:
            c.apply(conn, ctx)

    await gw.store.writer.run(job)


async def _feed(gw: Gateway, message: str, profile: InterfaceProfile) -> None:
    await _apply(gw, map_message(parse(message), profile), profile)


async def _notices(gw: Gateway, kind: NoticeKind) -> list[NoticeRow]:
    cipher = gw.store.cipher
    assert cipher is not None

    def job(conn: sqlite3.Connection) -> list[NoticeRow]:
        rows = conn.execute(
            "SELECT id, kind, contact_idx, template, purpose, due_at, variables_ct, language,"
            " expires_at, patient_id, appointment_id, appt_version, rule_id, rule_version,"
            " variant, ref, priority, state, reason, message_id FROM clinical_notices"
            " WHERE kind = ? AND state = 'pending' ORDER BY due_at",
            (kind.value,),
        ).fetchall()
        return [notices.row_of(cipher, r) for r in rows]

    return await gw.store.writer.run(job)


async def _render_all(gw: Gateway, rows: list[NoticeRow]) -> list[str]:
    """Each notice through the gateway's renderer, as stored, in every language."""
    assert rows
    renderer = gw.templates.renderer
    out: list[str] = []
    for row in rows:
        n = row.notice
        assert n.template == n.kind.value  # the built-in template of its kind
        for language in LANGUAGES:

            def job(conn: sqlite3.Connection, lang: str = language, n: Notice = n) -> str:
                done = renderer.render(conn, n.template, lang, n.variables, variant=n.variant)
                assert done.language == lang
                return done.text

            out.append(await gw.store.writer.run(job))
    return out


def _clean(texts: list[str], *forbidden: str) -> None:
    for t in texts:
        assert len(t) <= 160, t
        for word in forbidden:
            assert word.lower() not in t.lower(), (word, t)


@pytest.fixture
async def gw(open_gateway: GatewayFactory) -> Gateway:
    return await open_gateway()


async def test_reminders_moved_and_cancelled_render(gw: Gateway) -> None:
    """An S12 planned by a rule (REMINDER); S15 holds a cancellation (CANCELLED); a
    rebooking within the debounce turns it into one MOVED notice."""
    ehr = InterfaceProfile("ehr", time_zone="America/New_York", cancel_debounce=300.0)
    now = gw.clock.time()
    await gw.store.writer.run(
        lambda conn: rules.save(conn, None, RuleSpec("r", "-1d", "reminder"), "t", now)
    )
    start = now + 10 * DAY
    await _feed(gw, siu("S12", key="A1", sent=now, start=start, phone=NUMBER_XTN), ehr)
    reminders = await _render_all(gw, await _notices(gw, NoticeKind.REMINDER))
    assert any("North Clinic" in t for t in reminders)
    _clean(reminders, "House", "Greg")
    gw.clock.advance(60)
    await _feed(gw, siu("S15", key="A1", sent=now + 60, start=start, status="Cancelled"), ehr)
    cancelled = await _notices(gw, NoticeKind.APPOINTMENT_CANCELLED)
    _clean(await _render_all(gw, cancelled))
    gw.clock.advance(60)
    await _feed(gw, siu("S12", key="A2", sent=now + 120, start=start + DAY), ehr)
    assert await _notices(gw, NoticeKind.APPOINTMENT_CANCELLED) == []
    (moved_row,) = await _notices(gw, NoticeKind.APPOINTMENT_MOVED)
    _clean(await _render_all(gw, [moved_row]), "House", "Greg")
    # One builder: the rebooked appointment's reminder and its moved notice say the same,
    # and the moved notice passes its own send-time recheck.
    (reminder,) = [
        r
        for r in await _notices(gw, NoticeKind.REMINDER)
        if r.notice.appointment_id == moved_row.notice.appointment_id
    ]
    assert reminder.notice.variables == moved_row.notice.variables
    assert reminder.notice.variables["start"] == "2027-01-26T03:00:00-05:00"
    now = gw.clock.time()
    assert await gw.store.writer.run(lambda c: recheck_moved(c, moved_row, now)) is None


async def test_results_render_without_any_value_or_note(gw: Gateway) -> None:
    """ORU^R01 (LAB-ORU-1, its patient's number accepted untyped): final -> notice; the
    text has no OBX value, test name or NTE text; a correction renders too."""
    lab = InterfaceProfile("lab", accept_untyped_phone=True)
    message = text("LAB-ORU-1.hl7").replace("\rOBX|2|", "\rNTE|1||SEE PATHOLOGIST NOTE\rOBX|2|", 1)
    await _feed(gw, message, lab)
    rows = await _notices(gw, NoticeKind.RESULT_AVAILABLE)
    forbidden = _obx_and_nte_values(message)
    assert forbidden
    _clean(await _render_all(gw, rows), *forbidden)


async def test_a_ready_prescription_renders_without_the_drug(gw: Gateway) -> None:
    pharmacy = InterfaceProfile("pharmacy", time_zone="America/New_York")
    message = text("RDS-O13-01.hl7").replace("|GL|", "|GL|^PRN^CP^^1^202^5550123~", 1)
    await _feed(gw, message, pharmacy)
    texts = await _render_all(gw, await _notices(gw, NoticeKind.MEDICATION_READY))
    assert any("Unity" in t for t in texts)  # the pharmacy's label
    _clean(texts, "Doxycycline")


@pytest.mark.parametrize("drug_names", [False, True])
async def test_dose_reminders_render_without_the_drug(gw: Gateway, drug_names: bool) -> None:
    """RDE^O11 TID planned as doses; even a site that stores drug names (the label in the
    notice's variables) gets a text without it from the built-in template."""
    settings.configure(
        gw.store,
        settings.Settings(medication=settings.MedicationConfig(allow_drug_names=drug_names)),
    )
    pharmacy = InterfaceProfile("pharmacy", time_zone="America/New_York")
    await _feed(gw, _RDE, pharmacy)
    rows = await _notices(gw, NoticeKind.MEDICATION_DOSE)
    assert ("medication" in rows[0].notice.variables) is drug_names
    _clean(await _render_all(gw, rows[:2]), "Amoxicillin")


ANY_HOUR = {"window": "", "caps": []}
ALL_DAY = dict.fromkeys(("appointment", "results", "medication"), ANY_HOUR)


async def test_the_runner_sends_every_kind_through_the_real_renderer(
    open_gateway: GatewayFactory,
) -> None:
    """Planned by the producers, due, then one pass of the gateway's notice runner with
    the templates' renderer: every notice is queued as a message, none skipped."""
    consent = {**TEST_CONSENT, "purposes": {**TEST_CONSENT["purposes"], **ALL_DAY}}
    gw = await open_gateway(consent=consent)
    ehr = InterfaceProfile("ehr", time_zone="America/New_York", cancel_debounce=300.0)
    now = gw.clock.time()
    await gw.store.writer.run(
        lambda conn: rules.save(conn, None, RuleSpec("r", "-1h", "reminder"), "t", now)
    )
    start = now + 2 * 3600
    await _feed(gw, siu("S12", key="A1", sent=now, start=start, mrn="M1"), ehr)
    await _feed(gw, siu("S12", key="B1", sent=now, start=start + DAY, mrn="M2"), ehr)
    await _feed(gw, siu("S15", key="B1", sent=now + 1, start=start + DAY, mrn="M2"), ehr)
    await _feed(gw, text("LAB-ORU-1.hl7"), InterfaceProfile("lab", accept_untyped_phone=True))
    pharmacy = InterfaceProfile("pharmacy", time_zone="America/New_York")
    rds = text("RDS-O13-01.hl7").replace("|GL|", "|GL|^PRN^CP^^1^202^5550188~", 1)
    await _feed(gw, rds, pharmacy)
    one_dose = "TQ1|1|||0330|||20270115|20270115"  # 03:30 in New York, today
    await _feed(gw, _RDE.replace("TQ1|1||TID|||3^D|20270116", one_dose), pharmacy)
    gw.clock.advance(3600 + 60)
    assert gw.templates.renderer is not None
    result = await gw.notice_runner(gw.templates.renderer).run_once()
    kinds = {kind for kind, _ in result.by_kind}
    assert set(result.outcomes) == {"queued"}, result.outcomes
    assert kinds == {
        "reminder", "appointment_cancelled", "result_available", "medication_ready",
        "medication_dose",
    }  # fmt: skip


_RDE = (
    "MSH|^~\\&|PHARM|HOSP|SMSGW|HOSP|20270110070000||RDE^O11^RDE_O11|C1|P|2.5.1\r"
    "PID|1||MRN7^^^HOSP^MR||Doe^Jane||||||||^PRN^CP^^1^202^5550123||spa\r"
    "ORC|NW|ORD-9^EHR\r"
    "RXE||123^Amoxicillin 500 mg^NDC|1\r"
    "TQ1|1||TID|||3^D|20270116\r"
)


def _obx_and_nte_values(message: str) -> list[str]:
    """OBX-3.2 (test name), OBX-5 (value) and NTE-3 (note) texts of a message."""
    out = []
    for segment in message.split("\r"):
        f = segment.split("|")
        if f[0] == "OBX" and len(f) > 5:
            out += [f[3].split("^")[1] if "^" in f[3] else f[3], f[5]]
        if f[0] == "NTE" and len(f) > 3:
            out.append(f[3])
    return [v for v in out if len(v) >= 3]


async def test_labels_too_long_for_the_templates_give_way_to_the_sites(gw: Gateway) -> None:
    """A facility or place longer than the built-in templates' 24 characters would have
    every reminder, moved and cancelled notice refused (and skipped); the producers
    leave it out, so the text names the site (`clinic`) and the declared default."""
    ehr = InterfaceProfile("ehr", time_zone="America/New_York")
    now = gw.clock.time()
    await gw.store.writer.run(
        lambda conn: rules.save(conn, None, RuleSpec("r", "-1d", "reminder"), "t", now)
    )
    long_ail = (
        "AIL|1||CARDIO&Cardiology Outpatient Wing^Room 12^^Saint Mary Regional Medical Center"
    )
    message = siu("S12", key="A1", sent=now, start=now + 10 * DAY, phone=NUMBER_XTN)
    await _feed(gw, message.replace("AIL|1||ROOM1^^^North Clinic", long_ail), ehr)
    rows = await _notices(gw, NoticeKind.REMINDER)
    assert {"clinic", "location"}.isdisjoint(rows[0].notice.variables)
    texts = await _render_all(gw, rows)
    assert texts[0].startswith("Hospital: appointment") and "at the clinic." in texts[0]
    assert "en la clinica." in texts[1]
    pharmacy = InterfaceProfile("pharmacy", time_zone="America/New_York")
    rds = text("RDS-O13-01.hl7").replace("|GL|", "|GL|^PRN^CP^^1^202^5550123~", 1)
    await _feed(gw, rds.replace("Unity", "Unity Outpatient Pharmacy Building C"), pharmacy)
    texts = await _render_all(gw, await _notices(gw, NoticeKind.MEDICATION_READY))
    assert "pick-up at the pharmacy." in texts[0] and "Building C" not in texts[0]
