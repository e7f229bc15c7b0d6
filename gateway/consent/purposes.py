"""What a message is for, and the policy each purpose carries (MSG-1).

A purpose belongs to one kind — clinical (the FCC's exempt healthcare messages),
informational, marketing, emergency — and the kind decides how an opt-out reaches
it. `compliance` is the gateway's own: keyword confirmations and HELP answers, which
must reach a number that has just opted out; no front end may name it.
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass
from typing import Literal

ConsentRule = Literal["none", "not_opted_out", "written"]
OptOutRule = Literal["honour", "stop_all_only", "ignore"]
OverCap = Literal["defer", "block"]
ClassName = Literal["critical", "high", "normal", "bulk"]


class Kind(enum.StrEnum):
    CLINICAL = "clinical"
    INFORMATIONAL = "informational"
    MARKETING = "marketing"
    EMERGENCY = "emergency"
    COMPLIANCE = "compliance"


class Purpose(enum.StrEnum):
    APPOINTMENT = "appointment"
    MEDICATION = "medication"
    RESULTS = "results"
    PROCEDURE = "procedure"  # pre- and post-operative instructions
    DISCHARGE = "discharge"
    INFORMATIONAL = "informational"
    MARKETING = "marketing"
    EMERGENCY = "emergency"
    COMPLIANCE = "compliance"

    @property
    def kind(self) -> Kind:
        return KIND_OF[self]


KIND_OF: dict[Purpose, Kind] = {
    Purpose.APPOINTMENT: Kind.CLINICAL,
    Purpose.MEDICATION: Kind.CLINICAL,
    Purpose.RESULTS: Kind.CLINICAL,
    Purpose.PROCEDURE: Kind.CLINICAL,
    Purpose.DISCHARGE: Kind.CLINICAL,
    Purpose.INFORMATIONAL: Kind.INFORMATIONAL,
    Purpose.MARKETING: Kind.MARKETING,
    Purpose.EMERGENCY: Kind.EMERGENCY,
    Purpose.COMPLIANCE: Kind.COMPLIANCE,
}

# What a client may name; `compliance` is the gateway's own.
CLIENT_PURPOSES: tuple[Purpose, ...] = tuple(p for p in Purpose if p is not Purpose.COMPLIANCE)

# Scopes of an opt-out or opt-in as the ledger stores them.
SCOPE_ALL = "all"


def kind_scope(kind: Kind) -> str:
    return f"kind:{kind.value}"


def purpose_scope(purpose: Purpose) -> str:
    return f"purpose:{purpose.value}"


@functools.cache
def covering_scopes(purpose: Purpose) -> tuple[str, str, str]:
    """The ledger scopes whose decisions apply to a message of `purpose`."""
    return (SCOPE_ALL, kind_scope(purpose.kind), purpose_scope(purpose))


# `STOP 1234`: an opt-out of one appointment's texts (gateway/replies). Recorded by
# the replies only, never through the consent API; the CSV export and import carry it.
APPOINTMENT_SCOPE_PREFIX = "appointment:"
_APPOINTMENT_SCOPE = re.compile(r"^appointment:apt_[0-9a-f]{16}$")


def appointment_scope(appointment_id: str) -> str:
    return APPOINTMENT_SCOPE_PREFIX + appointment_id


def appointment_scope_valid(scope: str) -> bool:
    return _APPOINTMENT_SCOPE.match(scope) is not None


def scope_valid(scope: str) -> bool:
    if scope == SCOPE_ALL:
        return True
    what, _, name = scope.partition(":")
    if what == "kind":
        return name in Kind.__members__.values() and name != Kind.COMPLIANCE
    if what == "purpose":
        return name in (p.value for p in CLIENT_PURPOSES)
    return False


_WINDOW = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-4]):([0-5][0-9])$")
_CAP = re.compile(r"^([1-9][0-9]{0,3})/([1-9][0-9]{0,3})([hd])$")


@dataclass(frozen=True, slots=True)
class Window:
    """Local hours in which a purpose may be sent: [start, end) in minutes of the day."""

    start: int
    end: int

    @classmethod
    def parse(cls, text: str) -> Window:
        m = _WINDOW.match(text)
        if m is None:
            raise ValueError(
                f'"{text}": write the sending window as "HH:MM-HH:MM", e.g. "08:00-20:00"'
            )
        start = int(m[1]) * 60 + int(m[2])
        end = int(m[3]) * 60 + int(m[4])
        if end > 24 * 60 or start >= end:
            raise ValueError(f'"{text}": the window must start before it ends, within one day')
        return cls(start, end)

    def __str__(self) -> str:
        return (
            f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"
        )


@dataclass(frozen=True, slots=True)
class Cap:
    """At most `count` messages of a purpose to one recipient in any `seconds`."""

    count: int
    seconds: float

    @classmethod
    def parse(cls, text: str) -> Cap:
        m = _CAP.match(text)
        if m is None:
            raise ValueError(
                f'"{text}": write a cap as COUNT/PERIOD with h or d, e.g. "1/1d" or "3/7d"'
            )
        unit = 3600.0 if m[3] == "h" else 86400.0
        return cls(int(m[1]), int(m[2]) * unit)

    def __str__(self) -> str:
        days, rest = divmod(self.seconds, 86400.0)
        return (
            f"{self.count}/{int(days)}d"
            if not rest
            else f"{self.count}/{int(self.seconds // 3600)}h"
        )


@dataclass(frozen=True, slots=True)
class PurposePolicy:
    """One row of the policy table (config `[consent.purposes.<name>]` over these defaults)."""

    purpose: Purpose
    priority: ClassName  # the class a send of this purpose takes when it names none
    highest: ClassName  # the most urgent class a send of this purpose may ask for
    consent: ConsentRule  # none; not_opted_out (prior express consent); written (MSG-2)
    opt_out: OptOutRule  # honour any covering opt-out; only STOP ALL; ignore
    window: Window | None  # local sending hours; None: any time
    caps: tuple[Cap, ...]
    over_cap: OverCap

    @property
    def kind(self) -> Kind:
        return self.purpose.kind


_CLINICAL_WINDOW = Window(8 * 60, 20 * 60)
_CLINICAL_CAPS = (Cap(1, 86400.0), Cap(3, 7 * 86400.0))  # MSG-3: 1 a day, 3 a week


def _clinical(purpose: Purpose, priority: ClassName = "normal") -> PurposePolicy:
    return PurposePolicy(
        purpose,
        priority,
        "high",
        "not_opted_out",
        "honour",
        _CLINICAL_WINDOW,
        _CLINICAL_CAPS,
        "defer",
    )


DEFAULT_POLICIES: dict[Purpose, PurposePolicy] = {
    Purpose.APPOINTMENT: _clinical(Purpose.APPOINTMENT),
    Purpose.MEDICATION: _clinical(Purpose.MEDICATION),
    Purpose.RESULTS: _clinical(Purpose.RESULTS, "high"),
    Purpose.PROCEDURE: _clinical(Purpose.PROCEDURE),
    Purpose.DISCHARGE: _clinical(Purpose.DISCHARGE),
    Purpose.INFORMATIONAL: PurposePolicy(
        Purpose.INFORMATIONAL,
        "normal",
        "normal",
        "not_opted_out",
        "honour",
        Window(8 * 60, 20 * 60),
        (),
        "defer",
    ),
    # 47 CFR 64.1200(c)(1): 08:00-21:00 federally; Florida's 08:00-20:00 is the strictest.
    Purpose.MARKETING: PurposePolicy(
        Purpose.MARKETING,
        "bulk",
        "bulk",
        "written",
        "honour",
        Window(8 * 60, 20 * 60),
        (Cap(1, 86400.0), Cap(3, 7 * 86400.0)),
        "block",
    ),
    # Emergency purposes need no consent (47 CFR 64.1200(a)(1)); a patient's STOP ALL
    # still holds unless the site sets opt_out = "ignore".
    Purpose.EMERGENCY: PurposePolicy(
        Purpose.EMERGENCY, "critical", "critical", "none", "stop_all_only", None, (), "defer"
    ),
    Purpose.COMPLIANCE: PurposePolicy(
        Purpose.COMPLIANCE, "high", "high", "none", "ignore", None, (), "defer"
    ),
}
