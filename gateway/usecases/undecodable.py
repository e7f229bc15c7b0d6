"""Inbound records no codec could read, held encrypted for an operator: counts only.

The records themselves are patient data and are never shown here (`smsgw undecodable`
is where an operator reads them, audited).
"""

from __future__ import annotations

from gateway.sink import GatewaySink
from gateway.store.quarantine import HeldUndecodable

__all__ = ["HeldUndecodable", "Undecodable"]


class Undecodable:
    def __init__(self, *, sink: GatewaySink) -> None:
        self._sink = sink

    async def summary(self) -> HeldUndecodable:
        """How many records are held, and since when."""
        return await self._sink.undecodable_summary()
