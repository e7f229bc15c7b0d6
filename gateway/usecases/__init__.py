"""The application layer: what smsgw does, once, under every front end.

The HTTP API (`gateway/api/`), the panel (`gateway/admin/`) and the other front ends
translate their requests into calls here, with a `Caller`, and the typed records back
into their answers. None of them reads or writes the store for these operations.

- `messages.Messages`: accept one (`accept`) or a batch, cancel, retry, get, search,
  reveal.
- `inbound.Inbound`: get, newest-first pages, polling (`after`), reveal.
- `status.Status`: the queue's counts, and what each route is sending.
- `consent.Consent`: look a number up, record decisions, contacts, the review queue,
  CSV import and export of the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.usecases.caller import Caller
from gateway.usecases.consent import Consent
from gateway.usecases.inbound import Inbound
from gateway.usecases.messages import Messages
from gateway.usecases.status import Status

__all__ = ["Caller", "Consent", "Inbound", "Messages", "Status", "UseCases"]


@dataclass(frozen=True, slots=True)
class UseCases:
    messages: Messages
    inbound: Inbound
    status: Status
    consent: Consent
