"""An appointment's template variables: the one builder every notice about an
appointment uses (the reminder planner, the debounce's moved and cancelled notices).

Values are raw: the templates format `start` in `time_zone` and the patient's
language. Values that are unknown are left out (the templates fill `clinic` from the
site's settings and `location` from the variable's default when the appointment names
none), and so are labels longer than the templates' length for them (`fits`): a
facility called "Saint Mary Regional Medical Center" would otherwise have every
notice of its appointments refused at render and skipped. `split_key` (the
appointment's id) keeps an A/B split stable across re-plans.
"""

from __future__ import annotations

from datetime import datetime

from gateway.consent.zones import zone
from gateway.templates.variables import fits


def start_text(start: float, time_zone: str | None) -> str:
    """`start` as the notices store it: ISO 8601 to the second with the zone's offset
    (a send-time recheck compares it with the appointment's current start)."""
    return datetime.fromtimestamp(start, zone(time_zone)).isoformat(timespec="seconds")


def notice_variables(
    appointment_id: str,
    start: float,
    time_zone: str | None,
    short_code: str,
    *,
    clinic: str | None,
    place: str | None,
    location_code: str | None,
    provider: str | None,
    service: str | None,
) -> dict[str, str]:
    found = {
        "start": start_text(start, time_zone),
        "time_zone": zone(time_zone).key,
        "short_code": short_code,
        "clinic": clinic,
        "location": place or location_code,
        "provider": provider,
        "service": service,
        "split_key": appointment_id,
    }
    return {k: v for k, v in found.items() if v and fits(k, v)}
