"""A driver's `EventSink` for tests: records what the driver reports and lets a test wait
for a condition on it (re-checked after every report, no sleeping)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from drivers.base import InboundSms, Receipt, RouteHealth


@dataclass
class RecordingSink:
    receipts: list[Receipt] = field(default_factory=list)
    inbounds: list[InboundSms] = field(default_factory=list)
    healths: list[RouteHealth] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def receipt(self, route: str, receipt: Receipt) -> None:
        self.receipts.append(receipt)
        self.changed.set()

    async def inbound(self, route: str, sms: InboundSms) -> None:
        self.inbounds.append(sms)
        self.changed.set()

    def health_changed(self, route: str, health: RouteHealth) -> None:
        self.healths.append(health)
        self.changed.set()

    async def until(self, predicate: Callable[[], bool], within: float = 10.0) -> None:
        """Return once `predicate()` holds, re-checked after everything the driver reports."""
        async with asyncio.timeout(within):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()
