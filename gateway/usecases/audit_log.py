"""The audit trail as the panel's auditors read it: entries newest first, and a check
of the hash chain that is itself audited (`gateway/store/audit_log.py` keeps the chain).

Where the entries are read is the `AuditSource`'s matter: the node's own trail on one
node (`LocalAudit`); on a cluster node every node's chain in the shared store, checked
with the anchors as a set (`gateway/cluster/audit_reads.py`), so an auditor on any node
sees what every node did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gateway.store.audit_log import GENESIS, AuditEntry, AuditTrail, DetailValue, Verification

__all__ = [
    "AuditEntry",
    "AuditLog",
    "AuditSource",
    "ChainState",
    "LocalAudit",
    "TrailCheck",
    "TrailEntry",
    "Verification",
]


@dataclass(frozen=True, slots=True)
class TrailEntry:
    entry: AuditEntry
    node: str  # the node whose chain holds it; "" for the node's own trail
    cursor: str  # `before` for the page of entries older than this one


@dataclass(frozen=True, slots=True)
class ChainState:
    """One node's chain as a check found it: its entries and head."""

    node: str
    entries: int
    head_seq: int
    head_hash: str


@dataclass(frozen=True, slots=True)
class TrailCheck:
    ok: bool
    entries: int  # in every chain checked
    first_bad_seq: int | None = None  # the node's own trail: the first entry that fails
    reason: str | None = None  # what failed (every problem, on a cluster)
    head_seq: int = 0  # the node's own trail's head
    head_hash: str = GENESIS
    chains: tuple[ChainState, ...] = ()  # on a cluster: each node's chain
    anchors: int | None = None  # on a cluster: anchors checked

    def detail(self) -> dict[str, DetailValue]:
        """What its audit entry records."""
        found: dict[str, DetailValue] = {
            "ok": self.ok,
            "entries": self.entries,
            "first_bad_seq": self.first_bad_seq,
        }
        if self.anchors is not None:
            found.update(chains=len(self.chains), anchors=self.anchors)
        return found


class AuditSource(Protocol):
    async def entries(self, *, before: str | None, limit: int) -> list[TrailEntry]:
        """Newest first; `before` (an entry's cursor) pages to older ones."""
        ...

    async def verify(self) -> TrailCheck:
        """Check every chain this source holds from its first entry."""
        ...


class LocalAudit:
    """The node's own trail."""

    def __init__(self, trail: AuditTrail) -> None:
        self._trail = trail

    async def entries(self, *, before: str | None, limit: int) -> list[TrailEntry]:
        seq = int(before) if before and before.isdigit() else None
        found = await self._trail.entries(before=seq, limit=limit)
        return [TrailEntry(e, "", str(e.seq)) for e in found]

    async def verify(self) -> TrailCheck:
        r = await self._trail.verify()
        return TrailCheck(r.ok, r.entries, r.first_bad_seq, r.reason, r.head_seq, r.head_hash)


class AuditLog:
    def __init__(self, *, trail: AuditTrail, source: AuditSource | None = None) -> None:
        self._trail = trail  # where this node records (the verification's own entry too)
        self._source = LocalAudit(trail) if source is None else source

    async def entries(self, *, before: str | None = None, limit: int = 100) -> list[TrailEntry]:
        """Newest first; `before` (an entry's cursor) pages to older ones."""
        return await self._source.entries(before=before, limit=limit)

    async def verify(self, actor: str) -> TrailCheck:
        """Check the whole trail; the outcome is appended as an `audit_verified` entry."""
        result = await self._source.verify()
        await self._trail.record(actor, "audit_verified", "audit_log", None, **result.detail())
        return result
