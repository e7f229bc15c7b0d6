"""Issue 12 point 5 (MSG-10, R-CLK-1): quiet hours in the recipient's local time.

Held messages are `scheduled` at the next opening with the event code `quiet_hours`
and released when the window opens, on a fake clock moved across the US spring-forward
(14 March 2027) and fall-back (7 November 2027) days; a property test over random
zones, windows and instants: the release instant is inside the window in every zone.
"""

from __future__ import annotations

import zoneinfo
from datetime import datetime
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from drivers.clock import FakeClock
from gateway.consent.purposes import Window
from gateway.consent.zones import local_minutes, next_open, recipient_zones, zones_for_number
from gateway.errors import ApiError
from gateway.intake import QuietHoursOverride
from tests.conftest import CANARY_NUMBER, GatewayFactory, record_decision, set_time_zone, state_of
from tests.test_consent_policy import caller, send

NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
CLINICAL_DAY = Window(8 * 60, 20 * 60)
# Windows only: no caps, so the sending hours alone decide here.
WINDOWS: dict[str, Any] = {
    "purposes": {
        "appointment": {"caps": []},
        "marketing": {"caps": [], "consent": "not_opted_out", "window": "08:00-21:00"},
    }
}


def utc(zone: zoneinfo.ZoneInfo, *fields: int) -> float:
    return datetime(*fields, tzinfo=zone).timestamp()  # type: ignore[misc]


def move_to(clock: FakeClock, at: float) -> None:
    clock.advance(at - clock.time())


# -- the zone arithmetic ---------------------------------------------------------------


def test_a_window_opens_at_local_eight_on_both_dst_days() -> None:
    """Spring forward: 00:00 EST on 14 March is 05:00 UTC; 08:00 that day is EDT, so
    12:00 UTC (a fixed offset would say 13:00). Fall back: 08:00 EST is 13:00 UTC."""
    spring_midnight = utc(NEW_YORK, 2027, 3, 14, 0, 0)
    assert next_open(CLINICAL_DAY, ("America/New_York",), spring_midnight) == utc(
        NEW_YORK, 2027, 3, 14, 8, 0
    )
    assert utc(NEW_YORK, 2027, 3, 14, 8, 0) - spring_midnight == 7 * 3600  # a 23-hour day
    autumn_midnight = utc(NEW_YORK, 2027, 11, 7, 0, 0)
    assert next_open(CLINICAL_DAY, ("America/New_York",), autumn_midnight) - autumn_midnight == (
        9 * 3600
    )  # a 25-hour day: 01:00 comes twice
    inside = utc(NEW_YORK, 2027, 11, 7, 19, 59)
    assert next_open(CLINICAL_DAY, ("America/New_York",), inside) == inside


def test_the_window_is_closed_at_its_end_and_open_at_its_start() -> None:
    ny = ("America/New_York",)
    last = utc(NEW_YORK, 2027, 6, 1, 19, 59) + 59.999
    assert next_open(CLINICAL_DAY, ny, last) == last
    closing = utc(NEW_YORK, 2027, 6, 1, 20, 0)
    assert next_open(CLINICAL_DAY, ny, closing) == utc(NEW_YORK, 2027, 6, 2, 8, 0)
    opening = utc(NEW_YORK, 2027, 6, 2, 8, 0)
    assert next_open(CLINICAL_DAY, ny, opening - 0.001) == opening
    assert next_open(CLINICAL_DAY, ny, opening) == opening
    assert next_open(None, ny, closing) == closing


def test_unknown_zone_takes_the_intersection_of_the_countrys_windows() -> None:
    """A toll-free +1 800 number has no area: every US zone, Hawaii to Maine. The
    window opens when it is 08:00 in Honolulu (18:00 UTC) and closes at 20:00 in
    New York (00:00 UTC in summer)."""
    zones = zones_for_number("+18005550100")
    assert "America/New_York" in zones and "Pacific/Honolulu" in zones
    assert "Pacific/Guam" not in zones  # shares +1, but another country
    morning = utc(NEW_YORK, 2027, 7, 1, 9, 0)  # 13:00 UTC
    opening = next_open(CLINICAL_DAY, zones, morning)
    assert datetime.fromtimestamp(opening, zoneinfo.ZoneInfo("UTC")).hour == 18
    assert all(CLINICAL_DAY.start <= local_minutes(z, opening) < CLINICAL_DAY.end for z in zones)
    assert recipient_zones("+18005550100", "Europe/Madrid") == ("Europe/Madrid",)
    assert recipient_zones(CANARY_NUMBER, "Not/AZone") == ("America/New_York",)


ZONES = ["America/New_York", "America/Los_Angeles", "Europe/London", "Australia/Lord_Howe"]
ZONES += ["Asia/Kathmandu", "Pacific/Chatham", "America/St_Johns", "Europe/Moscow"]


@settings(max_examples=400, deadline=None)
@given(
    zones=st.lists(st.sampled_from(ZONES), min_size=1, max_size=3, unique=True),
    start=st.integers(0, 23 * 60),
    length=st.integers(60, 16 * 60),
    at=st.floats(1_798_761_600.0, 1_830_297_600.0),  # 2027 and 2028, every DST day
)
# A fraction of a microsecond before a window's end at midnight: still inside it.
@example(zones=["Europe/London"], start=480, length=960, at=1_830_297_599.9999998)
def test_a_released_message_is_always_inside_its_window(
    zones: list[str], start: int, length: int, at: float
) -> None:
    window = Window(start, min(start + length, 24 * 60))
    released = next_open(window, tuple(zones), at)
    assert released >= at
    inside = [window.start <= local_minutes(z, released) < window.end for z in zones]
    if all(inside):
        return
    # Only zones whose windows never overlap fall back to the first zone's window.
    assert window.start <= local_minutes(zones[0], released) < window.end
    assert len(zones) > 1


# -- through the gateway, on a fake clock ----------------------------------------------


async def test_a_marketing_send_at_night_waits_for_morning_across_spring_forward(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(consent=WINDOWS)
    who = await caller(gw, "send", "read")
    move_to(clock, utc(NEW_YORK, 2027, 3, 13, 23, 0))  # 23:00 EST, the night before
    held = await send(gw, who, purpose="marketing")
    assert (held.status, held.reason) == ("scheduled", "quiet_hours")
    record = await gw.usecases.messages.get(who, held.id)
    opening = utc(NEW_YORK, 2027, 3, 14, 8, 0)  # 08:00 EDT: 8 hours later, not 9
    assert record.send_at == opening
    assert [(e.state, e.error_code) for e in record.events or ()] == [("scheduled", "quiet_hours")]
    clock.advance(opening - 1 - clock.time())
    await gw.scheduler.run_until_idle()
    assert await state_of(gw, held.id) == "scheduled"
    clock.advance(1)
    await gw.scheduler.run_until_idle()
    assert await state_of(gw, held.id) == "sent"
    assert local_minutes("America/New_York", clock.time()) == 8 * 60


async def test_a_clinical_send_before_dawn_on_fall_back_day_waits_until_eight_est(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(consent=WINDOWS)
    who = await caller(gw, "send")
    move_to(clock, utc(NEW_YORK, 2027, 11, 7, 1, 30))  # the first 01:30 (EDT)
    held = await send(gw, who, purpose="appointment")
    assert (held.status, held.reason) == ("scheduled", "quiet_hours")
    opening = utc(NEW_YORK, 2027, 11, 7, 8, 0)  # EST: 6.5 hours on the clock, 7.5 real
    assert opening - clock.time() == 7.5 * 3600
    clock.advance(opening - clock.time())
    await gw.scheduler.run_until_idle()
    assert await state_of(gw, held.id) == "sent"


async def test_the_contacts_time_zone_wins_over_the_numbers(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(consent=WINDOWS)
    who = await caller(gw, "send")
    move_to(clock, utc(NEW_YORK, 2027, 6, 1, 9, 0))  # 09:00 in New York, 06:00 in LA
    assert (await send(gw, who, purpose="appointment")).status == "queued"
    await set_time_zone(gw, CANARY_NUMBER, "America/Los_Angeles")
    held = await send(gw, who, purpose="appointment")
    assert (held.status, held.reason) == ("scheduled", "quiet_hours")
    record = await gw.usecases.messages.get(who, held.id)
    assert record.send_at == utc(zoneinfo.ZoneInfo("America/Los_Angeles"), 2027, 6, 1, 8, 0)


async def test_emergency_and_critical_messages_ignore_quiet_hours(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    allowed = {"purposes": {**WINDOWS["purposes"], "results": {"highest": "critical", "caps": []}}}
    gw = await open_gateway(consent=allowed)
    who = await caller(gw, "send")
    move_to(clock, utc(NEW_YORK, 2027, 6, 1, 3, 0))
    assert (await send(gw, who, purpose="emergency")).status == "queued"
    assert (await send(gw, who, purpose="results", priority="critical")).status == "queued"
    assert (await send(gw, who, purpose="results")).status == "scheduled"


async def test_the_override_needs_the_urgent_scope_and_its_reason_is_audited(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(consent=WINDOWS)
    move_to(clock, utc(NEW_YORK, 2027, 6, 1, 3, 0))
    plain = await caller(gw, "send")
    urgent = await caller(gw, "send", "urgent")
    override = QuietHoursOverride(reason="surgery moved to 06:00")
    with pytest.raises(ApiError) as refused:
        await send(gw, plain, purpose="procedure", quiet_hours_override=override)
    assert (refused.value.status, refused.value.field) == (403, "quiet_hours_override")
    sent = await send(gw, urgent, purpose="procedure", quiet_hours_override=override)
    assert sent.status == "queued"
    entry = (await gw.audit.entries(limit=1))[0]
    assert (entry.action, entry.target_id, entry.actor) == (
        "quiet_hours_override",
        sent.id,
        f"token:{urgent.token_id}",
    )
    assert "surgery moved" in str(entry.detail)


async def test_an_opt_out_still_blocks_a_message_held_for_quiet_hours(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(consent=WINDOWS)
    who = await caller(gw, "send")
    move_to(clock, utc(NEW_YORK, 2027, 6, 1, 23, 0))
    held = await send(gw, who, purpose="appointment")
    await record_decision(gw, CANARY_NUMBER, "opt_out", "kind:clinical")
    clock.advance(10 * 3600)
    await gw.scheduler.run_until_idle()
    assert await state_of(gw, held.id) == "blocked"


async def test_a_message_that_waited_past_the_windows_end_is_held_at_claim(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    """Accepted at 19:59 (inside the window), not claimed before 20:05: the claim keeps
    it `queued` until 08:00 (event `quiet_hours`), then it goes; an overridden one
    goes at once."""
    gw = await open_gateway(consent=WINDOWS)
    who = await caller(gw, "send", "read")
    urgent = await caller(gw, "send", "urgent")
    move_to(clock, utc(NEW_YORK, 2027, 6, 1, 19, 59))
    late = await send(gw, who, purpose="appointment")
    override = QuietHoursOverride(reason="ward moved")
    overridden = await send(
        gw, urgent, purpose="procedure", to="+12025550123", quiet_hours_override=override
    )
    assert (late.status, overridden.status) == ("queued", "queued")
    clock.advance(6 * 60)
    await gw.scheduler.run_until_idle()
    assert await state_of(gw, late.id) == "queued"
    assert await state_of(gw, overridden.id) == "sent"
    record = await gw.usecases.messages.get(who, late.id)
    assert [(e.state, e.error_code) for e in record.events or ()][-1] == ("queued", "quiet_hours")
    clock.advance(utc(NEW_YORK, 2027, 6, 2, 8, 0) - clock.time() - 1)
    await gw.scheduler.run_until_idle()
    assert await state_of(gw, late.id) == "queued"
    clock.advance(1)
    await gw.scheduler.run_until_idle()
    assert await state_of(gw, late.id) == "sent"
