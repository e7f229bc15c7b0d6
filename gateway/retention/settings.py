"""`[retention]`: how long message contents and numbers are kept (MSG-12).

Two periods, each in days, per purpose (`[retention.purposes.<purpose>]`) over the
section's own defaults: `body_days` (a message's text, its client reference and
callback URL; template variables; raw HL7) and `number_days` (the phone number and
its blind index). Metadata (state, times, route, segments, purpose) is kept, so counts
stay right. Tables without a purpose (inbound, HL7, quarantine) take the defaults.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from gateway.consent.purposes import Purpose

Days = Annotated[float, msgspec.Meta(gt=0)]


class PurposeRetention(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """`[retention.purposes.<purpose>]`: a key left out takes the section's default."""

    body_days: Days | None = None
    number_days: Days | None = None


class RetentionConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True  # the hourly job; `smsgw retention run` works either way
    body_days: Days = 90.0
    number_days: Days = 6 * 365.0
    batch: Annotated[int, msgspec.Meta(ge=10, le=10_000)] = 500  # rows per transaction
    purposes: dict[str, PurposeRetention] = msgspec.field(default_factory=dict)

    def periods(self, purpose: str | None) -> tuple[float, float]:
        """(body days, number days) for messages of `purpose` (None: no purpose)."""
        o = self.purposes.get(purpose or "")
        if o is None:
            return self.body_days, self.number_days
        return o.body_days or self.body_days, o.number_days or self.number_days

    def problems(self) -> str | None:
        known = [p.value for p in Purpose]
        for name in self.purposes:
            if name not in known:
                return f"retention.purposes.{name}: no such purpose (one of {', '.join(known)})"
        names: list[str | None] = [None, *self.purposes]
        for each in names:
            body, number = self.periods(each)
            if number < body:
                where = "retention" if each is None else f"retention.purposes.{each}"
                return (
                    f"{where}.number_days: must not be shorter than body_days ({body:g}):"
                    " a text is removed before or with its number"
                )
        return None
