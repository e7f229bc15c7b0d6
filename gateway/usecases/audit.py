"""The audit trail as the use cases see it (`gateway.store.audit_log.AuditTrail` is one)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

DetailValue = str | int | bool | None


class AuditSink(Protocol):
    async def record(
        self,
        actor: str,
        action: str,
        target_kind: str | None = None,
        target_id: str | None = None,
        **ids: DetailValue,
    ) -> int:
        """Append one entry; returns once it is committed."""
        ...

    async def record_each(
        self, actor: str, action: str, target_kind: str, target_ids: Sequence[str]
    ) -> None:
        """One entry per target, all committed together."""
        ...
