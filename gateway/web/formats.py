"""Times as both front ends show them."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FIRST = datetime.min.replace(tzinfo=UTC)
_LAST = datetime.max.replace(tzinfo=UTC)


def iso(ts: object) -> str | None:
    """RFC 3339 UTC of stored Unix seconds, for the API and the panel alike.

    Safe for any stored value, including ones older versions accepted: a time beyond
    what a datetime holds shows as its first or last instant, a non-number as None.
    """
    if ts is None or isinstance(ts, bool) or not isinstance(ts, int | float):
        return None
    if math.isnan(ts):
        return None
    try:
        moment = _EPOCH + timedelta(seconds=ts)
    except OverflowError:
        moment = _LAST if ts > 0 else _FIRST
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
