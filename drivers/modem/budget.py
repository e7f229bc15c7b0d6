"""A SIM's sending budget: parts per minute, per calendar day and per calendar month.

Minutes slide (the last 60 s on the monotonic clock); days and months are calendar
periods in the host's local time on the wall clock, as SIM plans reset. A modem whose
budget has no room for a message is parked until `wait(parts)` seconds from now.
Counts live in memory; at start the gateway `seed`s them from what its store says the
modem sent earlier in the day and month, so a restart does not reset a SIM's plan.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta

from drivers.clock import Clock


class Budget:
    def __init__(
        self,
        clock: Clock,
        *,
        per_minute: int | None = None,
        per_day: int | None = None,
        per_month: int | None = None,
    ) -> None:
        self._clock = clock
        self.per_minute, self.per_day, self.per_month = per_minute, per_day, per_month
        self._minute: deque[float] = deque()
        self._day_key: tuple[int, int, int] | None = None
        self._month_key: tuple[int, int] | None = None
        self._day = 0
        self._month = 0

    @property
    def sent_today(self) -> int:
        self._roll()
        return self._day

    @property
    def sent_this_month(self) -> int:
        self._roll()
        return self._month

    def seed(self, today: int, this_month: int) -> None:
        """Parts already sent today and this month (before a restart)."""
        self._roll()
        self._day, self._month = today, max(this_month, today)

    def spend(self, parts: int) -> None:
        self._roll()
        now = self._clock.monotonic()
        self._minute.extend([now] * parts)
        self._day += parts
        self._month += parts

    def wait(self, parts: int = 1) -> float:
        """0 when `parts` fit now, else seconds until they do (inf if they never can)."""
        self._roll()
        waits = [0.0]
        for cap in (self.per_minute, self.per_day, self.per_month):
            if cap is not None and parts > cap:
                return float("inf")
        if self.per_minute is not None and len(self._minute) + parts > self.per_minute:
            oldest = self._minute[len(self._minute) + parts - self.per_minute - 1]
            waits.append(oldest + 60.0 - self._clock.monotonic())
        local = self._local()
        if self.per_day is not None and self._day + parts > self.per_day:
            tomorrow = (local + timedelta(days=1)).replace(
                hour=0, minute=0, second=0, microsecond=0
            )
            waits.append((tomorrow - local).total_seconds())
        if self.per_month is not None and self._month + parts > self.per_month:
            first = (local.replace(day=28) + timedelta(days=4)).replace(
                day=1, hour=0, minute=0, second=0, microsecond=0
            )
            waits.append((first - local).total_seconds())
        return max(waits)

    def _local(self) -> datetime:
        return datetime.fromtimestamp(self._clock.time()).astimezone()

    def _roll(self) -> None:
        cutoff = self._clock.monotonic() - 60.0
        while self._minute and self._minute[0] <= cutoff:
            self._minute.popleft()
        local = self._local()
        day, month = (local.year, local.month, local.day), (local.year, local.month)
        if day != self._day_key:
            self._day_key, self._day = day, 0
        if month != self._month_key:
            self._month_key, self._month = month, 0
