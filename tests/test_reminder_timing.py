"""Due times of reminder rules (research §I, planner properties): due before the start
for every lead, the delivery time kept in the clinic's zone, calendar days across DST
changes, the spring-forward gap and the autumn repeat."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.reminders import planner
from gateway.reminders.planner import Appointment
from gateway.reminders.rules import Rule, RuleSpec
from gateway.reminders.timing import Lead, due_at, parse_clock, parse_duration

ZONES = [
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",  # a 30-minute DST shift
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "Pacific/Chatham",
    "UTC",
]
T2026 = datetime(2026, 1, 1).timestamp()
T2029 = datetime(2029, 1, 1).timestamp()
NY = ZoneInfo("America/New_York")

starts = st.floats(min_value=T2026, max_value=T2029).map(lambda f: float(int(f) // 60 * 60))
leads = st.builds(
    Lead,
    st.integers(min_value=1, max_value=90),
    st.sampled_from(["m", "h", "d", "w"]),
).filter(lambda lead: lead.nominal <= 90 * 86400)
clocks = st.none() | st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45]))


def _exists(day: datetime, at: time, tz: ZoneInfo) -> bool:
    naive = datetime.combine(day.date(), at)
    back = datetime.fromtimestamp(naive.replace(tzinfo=tz).timestamp(), tz)
    return back.replace(tzinfo=None) == naive


def _appt(start: float, zone: str, booked_at: float = 0.0) -> Appointment:
    return Appointment(
        "apt_1", "pat_1", b"i", "en", "booked", start, 1, zone,
        "CARDIO", "NORTH", "FOLLOWUP", booked_at, "1234", None, None, None,
    )  # fmt: skip


def _rule(lead: Lead, at: time | None, skip: str | None = None) -> Rule:
    spec = RuleSpec(
        "r",
        str(lead),
        "reminder",
        None if at is None else at.strftime("%H:%M"),
        skip_if_booked_within=skip,
    )
    return Rule("rul_1", 1, spec, "test", 0.0)


@settings(max_examples=400, deadline=None)
@given(start=starts, zone=st.sampled_from(ZONES), lead=leads, at=clocks, now=starts)
def test_a_planned_reminder_is_due_after_now_and_before_the_start(
    start: float, zone: str, lead: Lead, at: time | None, now: float
) -> None:
    outcome, due = planner.verdict(_rule(lead, at), _appt(start, zone), now)
    assert due is not None
    if outcome == planner.PLANNED:
        assert now < due < start
    elif outcome == planner.PAST:
        assert due <= now
    else:
        assert outcome == planner.NOT_BEFORE_START and due >= start
    if at is None:
        assert due < start  # a lead alone always lands before the start


@settings(max_examples=400, deadline=None)
@given(start=starts, zone=st.sampled_from(ZONES), lead=leads, at=clocks)
def test_the_delivery_time_and_calendar_days_hold_in_the_clinics_zone(
    start: float, zone: str, lead: Lead, at: time | None
) -> None:
    tz = ZoneInfo(zone)
    due = due_at(start, tz, lead, at)
    local = datetime.fromtimestamp(due, tz)
    begins = datetime.fromtimestamp(start, tz)
    if lead.unit in ("m", "h"):
        day = datetime.fromtimestamp(start - lead.nominal, tz)
        if at is None:
            assert due == start - lead.nominal  # an exact duration, whatever DST does
    else:
        days = lead.count * (7 if lead.unit == "w" else 1)
        day = begins - timedelta(days=days)  # the calendar day (wall arithmetic)
        assert local.date() == day.date() or not _exists(day, at or begins.time(), tz)
        if at is None and _exists(day, begins.time(), tz):
            assert local.time() == begins.time()
    if at is not None:
        if _exists(day, at, tz):
            assert local.time() == at and local.date() == day.date()
        else:  # in the spring-forward gap: moved forward by the gap, never back
            assert local.replace(tzinfo=None) > datetime.combine(day.date(), at)


def test_a_day_before_across_spring_forward_is_23_hours() -> None:
    start = datetime(2026, 3, 8, 15, 0, tzinfo=NY).timestamp()  # EDT, the change day
    due = due_at(start, NY, Lead.parse("-1d"))
    assert datetime.fromtimestamp(due, NY) == datetime(2026, 3, 7, 15, 0, tzinfo=NY)
    assert start - due == 23 * 3600
    autumn = datetime(2026, 11, 1, 15, 0, tzinfo=NY).timestamp()
    assert autumn - due_at(autumn, NY, Lead.parse("-1d")) == 25 * 3600
    assert start - due_at(start, NY, Lead.parse("-24h")) == 24 * 3600


def test_a_delivery_time_in_the_gap_moves_forward_and_in_the_repeat_is_the_first() -> None:
    start = datetime(2026, 3, 8, 12, 0, tzinfo=NY).timestamp()
    due = due_at(start, NY, Lead.parse("-1h"), parse_clock("02:30"))  # 02:30 never happens
    assert datetime.fromtimestamp(due, NY).strftime("%H:%M %Z") == "03:30 EDT"
    autumn = datetime(2026, 11, 1, 12, 0, tzinfo=NY).timestamp()
    due = due_at(autumn, NY, Lead.parse("-1h"), parse_clock("01:30"))  # 01:30 happens twice
    assert datetime.fromtimestamp(due, NY).strftime("%H:%M %Z") == "01:30 EDT"


def test_the_evening_before_at_18_is_in_the_clinics_zone() -> None:
    start = datetime(2026, 6, 10, 9, 0, tzinfo=NY).timestamp()
    due = due_at(start, NY, Lead.parse("-1d"), parse_clock("18:00"))
    assert datetime.fromtimestamp(due, NY) == datetime(2026, 6, 9, 18, 0, tzinfo=NY)
    _, later = planner.verdict(_rule(Lead.parse("-2h"), time(18)), _appt(start, NY.key), 0.0)
    assert later is not None and later > start  # 18:00 the same day: after a 09:00 visit
    outcome, _ = planner.verdict(_rule(Lead.parse("-2h"), time(18)), _appt(start, NY.key), 0.0)
    assert outcome == planner.NOT_BEFORE_START


def test_booked_less_than_the_rule_says_before_the_start_is_skipped() -> None:
    start = datetime(2026, 6, 10, 9, 0, tzinfo=NY).timestamp()
    rule = _rule(Lead.parse("-24h"), None, skip="48h")
    early = planner.verdict(rule, _appt(start, NY.key, booked_at=start - 72 * 3600), 0.0)
    late = planner.verdict(rule, _appt(start, NY.key, booked_at=start - 30 * 3600), 0.0)
    assert early[0] == planner.PLANNED and late[0] == planner.BOOKED_LATE


@pytest.mark.parametrize(
    "text", ["24h", "-0h", "+2h", "-2x", "-91d", "-13w", "-2 h", "-\u0661h", "", "-1000000m"]
)
def test_bad_leads_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"write it as|at most"):
        Lead.parse(text)


@pytest.mark.parametrize("text", ["24:00", "7:00", "18:60", "18", ""])
def test_bad_clocks_and_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="HH:MM"):
        parse_clock(text)
    with pytest.raises(ValueError, match=r"write it as|at most"):
        parse_duration(text)
