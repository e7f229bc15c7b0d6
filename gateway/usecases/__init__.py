"""The application layer: what smsgw does, once, under every front end.

The HTTP API (`gateway/api/`), the panel (`gateway/admin/`) and the other front ends
translate their requests into calls here, with a `Caller`, and the typed records back
into their answers. None of them reads or writes the store for these operations.

- `messages.Messages`: accept one (`accept`) or a batch, cancel, retry, get, search,
  reveal.
- `inbound.Inbound`: get, newest-first pages, polling (`after`), reveal.
- `status.Status`: the queue's counts, and what each route is sending.
- `tokens.Tokens`: API tokens: list, create, revoke (audited).
- `activity.Activity`: state changes after a position (the dashboard's live stream).
- `deliveries.Deliveries`: event deliveries and dead letters, redeliver (audited).
- `undecodable.Undecodable`: how many unreadable inbound records are held.
- `audit_log.AuditLog`: the audit trail's entries, and the check of its chain (audited).
- `consent.Consent`: look a number up, record decisions, contacts, the review queue,
  CSV import and export of the ledger.
- `gateway.appointments.usecase.Appointments`: upsert, cancel, list and read appointments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.appointments.usecase import Appointments
from gateway.usecases.activity import Activity
from gateway.usecases.audit_log import AuditLog
from gateway.usecases.caller import Caller
from gateway.usecases.consent import Consent
from gateway.usecases.deliveries import Deliveries
from gateway.usecases.inbound import Inbound
from gateway.usecases.messages import Messages
from gateway.usecases.status import Status
from gateway.usecases.tokens import Tokens
from gateway.usecases.undecodable import Undecodable

if TYPE_CHECKING:
    from gateway.replies.usecase import Replies

__all__ = [
    "Activity",
    "Appointments",
    "AuditLog",
    "Caller",
    "Consent",
    "Deliveries",
    "Inbound",
    "Messages",
    "Status",
    "Tokens",
    "Undecodable",
    "UseCases",
]


@dataclass(frozen=True, slots=True)
class UseCases:
    messages: Messages
    inbound: Inbound
    status: Status
    tokens: Tokens
    activity: Activity
    deliveries: Deliveries
    undecodable: Undecodable
    audit_log: AuditLog
    consent: Consent
    appointments: Appointments
    replies: Replies  # gateway/replies/usecase.py: the worklist
