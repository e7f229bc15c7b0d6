"""`[analytics]`: the days reports are counted in, and how often the rollup runs."""

from __future__ import annotations

import zoneinfo
from typing import Annotated

import msgspec


class AnalyticsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """`time_zone`: the IANA zone whose calendar days the sums are kept by (empty: the
    appointments' `time_zone`). Changing it later leaves days already counted as they
    were. `interval`: seconds between two rollup rounds (new rows are counted then)."""

    time_zone: str = ""
    interval: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 15.0

    def zone(self, fallback: str) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.time_zone or fallback)

    def problems(self) -> str | None:
        if not self.time_zone:
            return None
        try:
            zoneinfo.ZoneInfo(self.time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            return f'analytics.time_zone: "{self.time_zone}" is not an IANA time zone'
        return None
