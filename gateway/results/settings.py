"""`[results]` and `[medication]`: the site's settings for results and medication notices,
and where the commands applied in the writer find them.

Mappers are pure functions of a message and its interface profile, and commands apply
with an `ApplyContext` that carries no configuration; so the gateway registers the
site's settings against its store once (`configure`), and a command reads them with
`of(ctx.store)`. A store nobody configured (a test, a tool) gets the defaults.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec

_HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
TimeOfDay = Annotated[str, msgspec.Meta(pattern=_HHMM)]
# Local times of day per repeat-pattern code (HL7 table 0335) when a TQ1 names a
# pattern but no explicit times. Institutions differ; `[medication.pattern_times]`
# replaces any of these.
DEFAULT_PATTERN_TIMES: dict[str, tuple[str, ...]] = {
    "QD": ("09:00",),
    "QAM": ("08:00",),
    "QPM": ("18:00",),
    "QHS": ("21:00",),
    "BID": ("08:00", "20:00"),
    "TID": ("08:00", "14:00", "20:00"),
    "QID": ("08:00", "12:00", "16:00", "20:00"),
    "Q12H": ("08:00", "20:00"),
    "Q8H": ("06:00", "14:00", "22:00"),
    "Q6H": ("00:00", "06:00", "12:00", "18:00"),
}


class ResultsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """`notify_delay_hours`: how long after a final (or corrected) result its "your
    results are available" notice waits, so that the patient's clinician (or the
    patient, in the portal first, as the 21st Century Cures Act practice allows) sees
    it before the SMS; 0 sends at once."""

    notify_delay_hours: Annotated[float, msgspec.Meta(ge=0, le=24 * 30)] = 0.0


class MedicationConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """`allow_drug_names`: a schedule's label (a drug name is PHI) is stored and given to
    the template only if true. `plan_ahead_hours`: dose notices are planned this far
    ahead, and topped up every `top_up_minutes`. `dose_grace_minutes`: a dose notice
    that could not go out within this long of its time is skipped, not sent late.
    `pattern_times`: local times per TQ1 repeat-pattern code (BID, TID, ...)."""

    allow_drug_names: bool = False
    plan_ahead_hours: Annotated[float, msgspec.Meta(ge=1, le=24 * 14)] = 48.0
    top_up_minutes: Annotated[float, msgspec.Meta(gt=0, le=24 * 60)] = 60.0
    dose_grace_minutes: Annotated[float, msgspec.Meta(gt=0, le=24 * 60)] = 60.0
    pattern_times: dict[str, tuple[str, ...]] = msgspec.field(default_factory=dict)


def pattern_problems(config: MedicationConfig) -> list[str]:
    """Keys of `[medication.pattern_times]` that are no pattern code, or list no time."""
    problems = []
    for code, times in config.pattern_times.items():
        if not re.fullmatch(r"[A-Z0-9]{1,12}", code):
            problems.append(f"medication.pattern_times.{code}: a code such as BID or Q8H")
        elif not times:
            problems.append(f"medication.pattern_times.{code}: list at least one time")
        elif not all(re.fullmatch(_HHMM, t) for t in times):
            problems.append(
                f'medication.pattern_times.{code}: write times as "HH:MM", e.g. "08:00"'
            )
    return problems


@dataclass(frozen=True, slots=True)
class Settings:
    results: ResultsConfig = field(default_factory=ResultsConfig)
    medication: MedicationConfig = field(default_factory=MedicationConfig)

    def pattern_times(self, code: str) -> tuple[str, ...] | None:
        found = self.medication.pattern_times.get(code)
        return found if found is not None else DEFAULT_PATTERN_TIMES.get(code)


_BY_STORE: weakref.WeakKeyDictionary[Any, Settings] = weakref.WeakKeyDictionary()


def configure(store: object, settings: Settings) -> None:
    _BY_STORE[store] = settings


def of(store: object) -> Settings:
    return _BY_STORE.get(store) or Settings()
