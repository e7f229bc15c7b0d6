"""How appointments are read and announced: `[appointments]` for the JSON API, and the
same choices per HL7 interface through its profile's `extra` keys.

`extra` keys of an interface profile read here (all optional):
- `appointment_key`: `filler` (SCH-2, the default; SCH-1 when SCH-2 is empty) or
  `placer` (SCH-1; SCH-2 when SCH-1 is empty): which id names the appointment.
- `notify_cancellation`: `true` (default) or `false`: whether an S15 (or an S14 whose
  filler status is Cancelled) sends a "cancelled" notice after the debounce. An S17
  (deletion) never does; an S16 (discontinuation) closes notices silently.
- `rebook_window_days`: how far (either way, in days) a new booking's start may be
  from the cancelled one's for the pair to count as a move (default 30).
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from typing import Literal

import msgspec

from gateway.clinical.commands import ERR_APPLICATION_INTERNAL, MappingError
from gateway.clinical.profile import API_SOURCE, InterfaceProfile

KeyChoice = Literal["filler", "placer"]
DEFAULT_REBOOK_WINDOW_DAYS = 30.0
MAX_REBOOK_WINDOW_DAYS = 366.0


class AppointmentsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """`[appointments]`: how appointments posted to the JSON API are read and announced.

    `time_zone`: the clinic's IANA zone (times without an offset, the panel's times,
    the notices' `time_zone`). `cancel_debounce`: seconds a cancellation notice waits
    for a rebooking. `rebook_window_days`: a rebooking's start at most this many days
    from the cancelled one's turns the pair into one "moved" notice.
    `notify_cancellation`: whether a cancellation is announced at all.
    `default_language`: the language of a patient posted without one."""

    time_zone: str = "UTC"
    cancel_debounce: float = 300.0
    rebook_window_days: float = DEFAULT_REBOOK_WINDOW_DAYS
    notify_cancellation: bool = True
    default_language: str = "en"

    def problems(self) -> str | None:
        try:
            zoneinfo.ZoneInfo(self.time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            return f'appointments.time_zone: "{self.time_zone}" is not an IANA time zone'
        if not 0 <= self.cancel_debounce <= 7 * 86400:
            return "appointments.cancel_debounce: seconds from 0 to 604800 (a week)"
        if not 0 <= self.rebook_window_days <= MAX_REBOOK_WINDOW_DAYS:
            return f"appointments.rebook_window_days: days from 0 to {MAX_REBOOK_WINDOW_DAYS:g}"
        lang = self.default_language
        if not (2 <= len(lang) <= 3 and lang.isascii() and lang.isalpha() and lang.islower()):
            return "appointments.default_language: a 2- or 3-letter language code, e.g. en"
        return None

    def profile(self, region: str) -> InterfaceProfile:
        """The profile JSON requests are applied under (source `api`)."""
        return InterfaceProfile(
            API_SOURCE,
            time_zone=self.time_zone,
            cancel_debounce=self.cancel_debounce,
            default_language=self.default_language,
            region=region,
            extra={
                "notify_cancellation": "true" if self.notify_cancellation else "false",
                "rebook_window_days": f"{self.rebook_window_days:g}",
            },
        )


@dataclass(frozen=True, slots=True)
class Settings:
    key: KeyChoice
    notify_cancellation: bool
    rebook_window: float  # seconds

    @classmethod
    def of(cls, profile: InterfaceProfile) -> Settings:
        """The profile's choices; a bad `extra` value raises `MappingError` naming the key
        (the message is answered AE and kept for reprocessing once the profile is fixed)."""
        extra = profile.extra
        key = extra.get("appointment_key", "filler")
        if key not in ("filler", "placer"):
            raise _bad(profile, "appointment_key", "filler or placer")
        notify = extra.get("notify_cancellation", "true").lower()
        if notify not in ("true", "false"):
            raise _bad(profile, "notify_cancellation", "true or false")
        try:
            days = float(extra.get("rebook_window_days", DEFAULT_REBOOK_WINDOW_DAYS))
        except ValueError:
            days = -1.0
        if not 0 <= days <= MAX_REBOOK_WINDOW_DAYS:
            raise _bad(profile, "rebook_window_days", f"days from 0 to {MAX_REBOOK_WINDOW_DAYS:g}")
        return cls("placer" if key == "placer" else "filler", notify == "true", days * 86400)


def _bad(profile: InterfaceProfile, key: str, expected: str) -> MappingError:
    return MappingError(
        ERR_APPLICATION_INTERNAL,
        f"interface {profile.name}: profile key {key} must be {expected}",
        None,
    )
