"""The appointment state machine on a fast-forwarded clock: research §I scenarios 1-8 and
11 (9 and 10, duplicate control ids and a crash before the ACK, are the listener's),
with the reminder planner absent: what it would be told (`clinical_hooks`) and the rows."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drivers.clock import FakeClock
from gateway.appointments import debounce
from gateway.appointments.machine import AppointmentChange, confirm, ignored
from gateway.clinical import notices
from gateway.clinical.notices import Notice, NoticeKind, NoticeState
from gateway.clinical.profile import InterfaceProfile
from gateway.store.store import Store
from tests.appointment_rig import DAY, Rig, siu


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = Store(tmp_path / "gw.db", bytes(32))
    await store.open()
    yield Rig(store, FakeClock())
    await store.close()


async def appointment(rig: Rig, index: int = 0) -> tuple[object, ...]:
    """The `index`-th appointment stored: id, status, start, version, short code,
    created_from_update, last event."""
    rows = await rig.rows(
        "SELECT id, status, start_at, version, short_code, created_from_update, last_event"
        " FROM appointments ORDER BY rowid"
    )
    return rows[index]


async def pending(rig: Rig) -> list[tuple[str, str, float]]:
    return await rig.rows(
        "SELECT kind, appointment_id, due_at FROM clinical_notices WHERE state = 'pending'"
        " ORDER BY due_at"
    )


async def plan_reminder(rig: Rig, appt_id: str) -> str:
    """What the reminder planner would leave: one pending reminder."""
    ctx = rig.ctx()

    def job(conn: sqlite3.Connection) -> str:
        idx = conn.execute(
            "SELECT p.contact_idx FROM appointments a JOIN patients p ON p.id = a.patient_id"
            " WHERE a.id = ?",
            (appt_id,),
        ).fetchone()[0]
        notice = Notice(
            NoticeKind.REMINDER, idx, "reminder", "appointment", ctx.now + DAY,
            appointment_id=appt_id, rule_id="r1",
        )  # fmt: skip
        return notices.schedule(conn, ctx.cipher, notice, ctx.now)

    return await rig.store.writer.run(job)


async def test_1_s12_books_with_a_short_code_and_tells_the_planner(rig: Rig) -> None:
    now = rig.clock.time()
    [cmd] = await rig.feed(siu("S12", sent=now, start=now + 10 * DAY, status="Booked"))
    assert isinstance(cmd, AppointmentChange) and cmd.created and cmd.outcome is None
    appt_id, status, start, version, code, flagged, _ = await appointment(rig)
    assert (status, start, version, flagged) == ("booked", now + 10 * DAY, 1, 0)
    assert len(str(code)) == 4 and str(code).isdigit()
    assert rig.changed == [appt_id]
    events = await rig.rows("SELECT event, new_status, version FROM appointment_events")
    assert events == [("booked", "booked", 1)]


async def test_2_s13_moves_it_and_bumps_the_version(rig: Rig) -> None:
    now = rig.clock.time()
    await rig.feed(siu("S12", sent=now, start=now + 10 * DAY))
    rig.clock.advance(3600)
    await rig.feed(siu("S13", sent=now + 3600, start=now + 12 * DAY))
    appt_id, status, start, version, *_ = await appointment(rig)
    assert (status, start, version) == ("booked", now + 12 * DAY, 2)
    assert rig.changed == [appt_id, appt_id]
    events = await rig.rows("SELECT event, old_start, new_start FROM appointment_events")
    assert events[-1] == ("rescheduled", now + 10 * DAY, now + 12 * DAY)


async def test_3_s14_with_a_changed_tq1_is_a_move(rig: Rig) -> None:
    now = rig.clock.time()
    await rig.feed(siu("S12", sent=now, start=now + 10 * DAY))
    await rig.feed(siu("S14", sent=now + 60, start=now + 11 * DAY))
    events = await rig.rows("SELECT event, version FROM appointment_events ORDER BY seq")
    assert events == [("booked", 1), ("moved", 2)]


async def test_4_s15_cancels_pending_notices_at_once_and_holds_the_cancelled_one(
    rig: Rig,
) -> None:
    now = rig.clock.time()
    await rig.feed(siu("S12", sent=now, start=now + 10 * DAY))
    appt_id = str((await appointment(rig))[0])
    reminder = await plan_reminder(rig, appt_id)
    rig.clock.advance(60)
    await rig.feed(siu("S15", sent=now + 60, start=now + 10 * DAY, status="Cancelled"))
    state = await rig.rows("SELECT state, reason FROM clinical_notices WHERE id = ?", (reminder,))
    assert state == [("cancelled", "appointment_cancelled")]
    held = await pending(rig)
    assert held == [("appointment_cancelled", appt_id, now + 60 + 300.0)]
    # Fast-forward past the debounce: it is due, and its recheck lets it go.
    rig.clock.advance(301)
    cipher = rig.ctx().cipher

    def due(conn: sqlite3.Connection) -> list[str | None]:
        rows = notices.due(conn, cipher, rig.clock.time(), 10)
        return [notices.recheck(conn, r, rig.clock.time()) for r in rows]

    assert await rig.store.writer.run(due) == [None]
    rows = await rig.store.writer.run(lambda c: notices.of_appointment(c, cipher, appt_id))
    [row] = [r for r in rows if r.notice.kind is NoticeKind.APPOINTMENT_CANCELLED]
    assert row.notice.variables["clinic"] == "North Clinic"
    assert row.notice.variables["start"].startswith("2027-")
    assert row.notice.language == "es" and row.notice.purpose == "appointment"


async def test_s14_with_filler_status_cancelled_is_a_cancellation(rig: Rig) -> None:
    now = rig.clock.time()
    await rig.feed(siu("S12", sent=now, start=now + 10 * DAY))
    await rig.feed(siu("S14", sent=now + 60, start=now + 10 * DAY, status="Cancelled"))
    assert [k for k, *_ in await pending(rig)] == ["appointment_cancelled"]
    assert (await appointment(rig))[1] == "cancelled"


async def test_5_s15_then_s12_within_the_debounce_is_one_moved_notice(rig: Rig) -> None:
    now = rig.clock.time()
    await rig.feed(siu("S12", key="A1", sent=now, start=now + 10 * DAY))
    rig.clock.advance(60)
    await rig.feed(siu("S15", key="A1", sent=now + 60, start=now + 10 * DAY))
    rig.clock.advance(30)
    await rig.feed(siu("S12", key="B1", sent=now + 90, start=now + 14 * DAY))
    old_id, new_id = (r[0] for r in await rig.rows("SELECT id FROM appointments ORDER BY rowid"))
    assert await pending(rig) == [("appointment_moved", new_id, now + 60 + 300.0)]
    held = await rig.rows(
        "SELECT state, reason FROM clinical_notices WHERE appointment_id = ?", (old_id,)
    )
    assert held == [("superseded", "rebooked")]
    # A third message within the debounce moves the new one again: still one notice.
    await rig.feed(siu("S13", key="B1", sent=now + 120, start=now + 15 * DAY))
    [(kind, appt, due)] = await pending(rig)
    assert (kind, appt, due) == ("appointment_moved", new_id, now + 60 + 300.0)
    cipher = rig.ctx().cipher
    rows = await rig.store.writer.run(lambda c: notices.of_appointment(c, cipher, new_id))
    [moved] = [r for r in rows if r.state is NoticeState.PENDING]
    assert moved.notice.variables["start"].startswith("2027-01-30")
    rig.clock.advance(400)
    assert await rig.store.writer.run(lambda c: notices.recheck(c, moved, rig.clock.time())) is None
    # The new appointment gone before the notice is sent: skipped.
    await rig.feed(siu("S15", key="B1", sent=now + 500, start=now + 15 * DAY))
    assert (
        await rig.store.writer.run(lambda c: debounce.recheck_moved(c, moved, rig.clock.time()))
        == "appointment_gone"
    )


async def test_a_rebooking_far_from_the_cancelled_start_is_no_move(rig: Rig) -> None:
    now = rig.clock.time()
    await rig.feed(siu("S12", key="A1", sent=now, start=now + 10 * DAY))
    await rig.feed(siu("S15", key="A1", sent=now + 60, start=now + 10 * DAY))
    await rig.feed(siu("S12", key="B1", sent=now + 90, start=now + 70 * DAY))
    assert [k for k, *_ in await pending(rig)] == ["appointment_cancelled"]


async def test_cancellation_notices_follow_the_profile_setting(rig: Rig) -> None:
    quiet = InterfaceProfile("ehr", extra={"notify_cancellation": "false"})
    now = rig.clock.time()
    await rig.feed(siu("S12", sent=now, start=now + 10 * DAY), quiet)
    await rig.feed(siu("S15", sent=now + 60, start=now + 10 * DAY), quiet)
    assert await pending(rig) == []


async def test_6_s17_is_silent(rig: Rig) -> None:
    now = rig.clock.time()
    await rig.feed(siu("S12", sent=now, start=now + 10 * DAY))
    appt_id = str((await appointment(rig))[0])
    await plan_reminder(rig, appt_id)
    await rig.feed(siu("S17", sent=now + 60, start=now + 10 * DAY, status="Deleted"))
    assert await pending(rig) == []
    assert (await appointment(rig))[1] == "deleted"
    # An S17 for a key never seen changes nothing.
    [cmd] = await rig.feed(siu("S17", key="ZZ", sent=now + 90, start=now + 10 * DAY))
    assert isinstance(cmd, AppointmentChange) and cmd.outcome == "unknown_appointment"
    assert len(await rig.rows("SELECT id FROM appointments")) == 1


async def test_s17_after_a_cancellation_withdraws_the_held_notice(rig: Rig) -> None:
    now = rig.clock.time()
    await rig.feed(siu("S12", sent=now, start=now + 10 * DAY))
    await rig.feed(siu("S15", sent=now + 60, start=now + 10 * DAY))
    await rig.feed(siu("S17", sent=now + 90, start=now + 10 * DAY))
    assert await pending(rig) == []


async def test_7_s26_marks_a_no_show(rig: Rig) -> None:
    now = rig.clock.time()
    await rig.feed(siu("S12", sent=now, start=now + 10 * DAY))
    rig.clock.advance(10 * DAY + 3600)
    await rig.feed(siu("S26", sent=rig.clock.time(), start=now + 10 * DAY, status="Noshow"))
    assert (await appointment(rig))[1] == "noshow"
    events = await rig.rows("SELECT event FROM appointment_events ORDER BY seq")
    assert events[-1] == ("noshow",)
    assert await pending(rig) == []


async def test_8_an_out_of_order_s13_is_ignored_as_stale(rig: Rig) -> None:
    now = rig.clock.time()
    await rig.feed(siu("S12", sent=now, start=now + 10 * DAY))
    await rig.feed(siu("S13", sent=now + 600, start=now + 12 * DAY))
    [cmd] = await rig.feed(siu("S13", sent=now + 300, start=now + 11 * DAY))
    assert isinstance(cmd, AppointmentChange) and cmd.outcome == "stale"
    _, _, start, version, *_ = await appointment(rig)
    assert (start, version) == (now + 12 * DAY, 2)
    events = await rig.rows("SELECT event, version FROM appointment_events ORDER BY seq")
    assert events[-1] == ("ignored_stale", 2)
    assert len(rig.changed) == 2  # the stale one told the planner nothing


async def test_11_an_unknown_s15_is_upserted_and_flagged(rig: Rig) -> None:
    now = rig.clock.time()
    [cmd] = await rig.feed(siu("S15", sent=now, start=now + 10 * DAY))
    assert isinstance(cmd, AppointmentChange) and cmd.created
    _, status, _, version, _, flagged, _ = await appointment(rig)
    assert (status, version, flagged) == ("cancelled", 1, 1)
    events = await rig.rows("SELECT event FROM appointment_events")
    assert events == [("created_from_update",)]


async def test_an_identical_resend_changes_nothing(rig: Rig) -> None:
    now = rig.clock.time()
    await rig.feed(siu("S12", sent=now, start=now + 10 * DAY))
    [cmd] = await rig.feed(siu("S14", sent=now + 60, start=now + 10 * DAY))
    assert isinstance(cmd, AppointmentChange) and cmd.outcome == "unchanged"
    assert (await appointment(rig))[3] == 1


async def test_reinstated_at_the_same_time_only_withdraws_the_held_notice(rig: Rig) -> None:
    now = rig.clock.time()
    await rig.feed(siu("S12", sent=now, start=now + 10 * DAY))
    await rig.feed(siu("S15", sent=now + 60, start=now + 10 * DAY))
    await rig.feed(siu("S14", sent=now + 90, start=now + 10 * DAY, status="Booked"))
    assert await pending(rig) == []
    events = await rig.rows("SELECT event FROM appointment_events ORDER BY seq")
    assert events[-1] == ("reinstated",)


async def test_short_codes_are_unique_among_the_patients_live_appointments(rig: Rig) -> None:
    now = rig.clock.time()
    for i in range(40):
        await rig.feed(siu("S12", key=f"K{i}", sent=now, start=now + (i + 1) * DAY))
    codes = [r[0] for r in await rig.rows("SELECT short_code FROM appointments")]
    assert len(set(codes)) == 40


async def test_the_cancelled_recheck_skips_a_reinstated_appointment(rig: Rig) -> None:
    now = rig.clock.time()
    await rig.feed(siu("S12", sent=now, start=now + 10 * DAY))
    await rig.feed(siu("S15", sent=now + 60, start=now + 10 * DAY))
    cipher = rig.ctx().cipher

    def check(conn: sqlite3.Connection) -> str | None:
        [row] = notices.due(conn, cipher, now + DAY, 10)
        conn.execute("UPDATE appointments SET status = 'booked'")
        return notices.recheck(conn, row, now + DAY)

    assert await rig.store.writer.run(check) == "appointment_reinstated"


async def test_no_phi_in_the_store_in_clear(rig: Rig) -> None:
    now = rig.clock.time()
    await rig.feed(siu("S12", key="APPT77810", sent=now, start=now + 10 * DAY))
    await rig.feed(siu("S15", key="APPT77810", sent=now + 60, start=now + 10 * DAY))
    raw = b"".join(p.read_bytes() for p in rig.store.path.parent.glob("gw.db*"))
    # The point-of-care code (ROOM1) is kept in clear for rule filters; names are not.
    for secret in (b"MRN42", b"North Clinic", b"House", b"5550123", b"APPT77810"):
        assert secret not in raw


async def test_confirm_bumps_the_version_once_and_only_for_a_live_one(rig: Rig) -> None:
    now = rig.clock.time()
    await rig.feed(siu("S12", sent=now, start=now + 10 * DAY))
    appt_id = str((await appointment(rig))[0])
    ctx = rig.ctx()
    done = [await rig.store.writer.run(lambda c: confirm(c, ctx, appt_id, "sms")) for _ in range(2)]
    assert done == [True, False]
    _, _, _, version, _, _, last = await appointment(rig)
    assert (version, last) == (2, "confirmed")
    assert rig.changed == [appt_id, appt_id]
    await rig.feed(siu("S15", key="B1", sent=now, start=now + 10 * DAY))
    other = str((await appointment(rig, 1))[0])
    assert not await rig.store.writer.run(lambda c: confirm(c, ctx, other, "sms"))


async def test_ignored_tells_the_listener_what_changed_nothing(rig: Rig) -> None:
    now = rig.clock.time()
    applied = await rig.feed(siu("S12", sent=now, start=now + 10 * DAY))
    stale = await rig.feed(siu("S13", sent=now - 60, start=now + 11 * DAY))
    unknown = await rig.feed(siu("S17", key="ZZ", sent=now, start=now + DAY))
    assert [ignored(c) for c in (applied, stale, unknown)] == [
        None,
        "stale",
        "unknown_appointment",
    ]


async def test_moving_another_appointment_is_no_rebooking_of_a_cancelled_one(rig: Rig) -> None:
    now = rig.clock.time()
    await rig.feed(siu("S12", key="A1", sent=now, start=now + 10 * DAY))
    await rig.feed(siu("S12", key="B1", sent=now, start=now + 20 * DAY))
    await rig.feed(siu("S15", key="A1", sent=now + 60, start=now + 10 * DAY))
    await rig.feed(siu("S14", key="B1", sent=now + 90, start=now + 12 * DAY))
    assert [k for k, *_ in await pending(rig)] == ["appointment_cancelled"]
    await rig.feed(siu("S13", key="B1", sent=now + 120, start=now + 11 * DAY))
    assert [k for k, *_ in await pending(rig)] == ["appointment_moved"]  # S13: a rebooking


async def test_the_cancelled_recheck_skips_when_a_rebooking_slipped_past_the_merge(
    rig: Rig,
) -> None:
    """A rebooking the in-transaction merge did not see (the interface's window was
    narrower then) still stops the cancelled notice at send time, judged by the window
    stored with the cancelled appointment."""
    now = rig.clock.time()
    narrow = InterfaceProfile("ehr", extra={"rebook_window_days": "1"})
    await rig.feed(siu("S12", key="A1", sent=now, start=now + 10 * DAY))
    await rig.feed(siu("S15", key="A1", sent=now + 60, start=now + 10 * DAY))
    rig.clock.advance(60)
    await rig.feed(siu("S12", key="B1", sent=now + 120, start=now + 14 * DAY), narrow)
    assert [k for k, *_ in await pending(rig)] == ["appointment_cancelled"]
    cipher = rig.ctx().cipher

    def check(conn: sqlite3.Connection) -> str | None:
        [row] = notices.due(conn, cipher, now + DAY, 10)
        return notices.recheck(conn, row, now + DAY)

    assert await rig.store.writer.run(check) == "rebooked"


async def test_a_move_asks_for_a_new_confirmation(rig: Rig) -> None:
    now = rig.clock.time()
    await rig.feed(siu("S12", sent=now, start=now + 10 * DAY))
    appt_id = str((await appointment(rig))[0])
    ctx = rig.ctx()
    assert await rig.store.writer.run(lambda c: confirm(c, ctx, appt_id, "sms"))
    await rig.feed(siu("S14", sent=now + 60, start=now + 10 * DAY, status="Booked"))
    assert await rig.rows("SELECT confirmed_via FROM appointments") == [("sms",)]
    await rig.feed(siu("S13", sent=now + 90, start=now + 11 * DAY))
    assert await rig.rows("SELECT confirmed_at, confirmed_via FROM appointments") == [(None, None)]
