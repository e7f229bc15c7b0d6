"""The audit trail as the panel's auditors read it: entries newest first, and a check
of the hash chain that is itself audited (`gateway/store/audit_log.py` keeps the chain).
"""

from __future__ import annotations

from gateway.store.audit_log import AuditEntry, AuditTrail, Verification

__all__ = ["AuditEntry", "AuditLog", "Verification"]


class AuditLog:
    def __init__(self, *, trail: AuditTrail) -> None:
        self._trail = trail

    async def entries(self, *, before: int | None = None, limit: int = 100) -> list[AuditEntry]:
        """Newest first; `before` (an entry's seq) pages to older ones."""
        return await self._trail.entries(before=before, limit=limit)

    async def verify(self, actor: str) -> Verification:
        """Check the whole chain; the outcome is appended as an `audit_verified` entry."""
        result = await self._trail.verify()
        await self._trail.record(
            actor,
            "audit_verified",
            "audit_log",
            None,
            ok=result.ok,
            entries=result.entries,
            first_bad_seq=result.first_bad_seq,
        )
        return result
