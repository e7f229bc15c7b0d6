"""What each unit of a route (a modem of a bank) sent earlier this day and this month.

SIM plans cap messages per calendar day and month (host local time). The modem bank
counts in memory, so at start the gateway hands it these counts, read from the store's
`sent` events: a unit's carrier ids are `<unit>:<reference>`, one per part.
"""

from __future__ import annotations

from datetime import datetime

from gateway.store.store import Store


def day_and_month_start(now: float) -> tuple[float, float]:
    local = datetime.fromtimestamp(now).astimezone()
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return day.timestamp(), day.replace(day=1).timestamp()


async def unit_usage(store: Store, route: str, now: float) -> dict[str, tuple[int, int]]:
    """{unit: (parts sent today, parts sent this month)} for `route`."""
    day_start, month_start = day_and_month_start(now)
    usage: dict[str, tuple[int, int]] = {}
    for at, carrier_ids in await store.event_log.sent_since(route, month_start):
        for carrier_id in carrier_ids.split(","):
            unit, colon, _ = carrier_id.rpartition(":")
            if not colon:
                continue
            today, this_month = usage.get(unit, (0, 0))
            usage[unit] = (today + (at >= day_start), this_month + 1)
    return usage
