"""Event deliveries (webhooks, MQTT, Kannel dlr-url): where each stands, redeliver.

For the panel's webhooks page. An `Attempt` carries ids, event types, states and
reason codes only, never a payload. Redelivering a dead letter is audited and queued
once however often it is asked for (`OutboxStore.redeliver` is one UPDATE).
"""

from __future__ import annotations

from gateway.integrations.outbox import Outbox
from gateway.store import outbox_sql
from gateway.store.outbox_sql import Attempt
from gateway.usecases.audit import AuditSink

__all__ = ["Attempt", "Deliveries"]


class Deliveries:
    def __init__(self, *, outbox: Outbox, audit: AuditSink) -> None:
        self._outbox = outbox
        self._audit = audit

    def consumers(self) -> list[str]:
        """The names of the configured consumers (webhook endpoints, MQTT, ...)."""
        return [c.name for c in self._outbox.consumers]

    async def recent(self, limit: int) -> list[Attempt]:
        """The latest attempts of any state, newest first."""
        return await self._outbox.repo.recent(limit)

    async def dead(self, limit: int) -> list[Attempt]:
        """Dead letters (retried for `[outbox] retry_for`, then given up), newest first."""
        return await self._outbox.repo.recent(limit, state=outbox_sql.DEAD)

    async def redeliver(self, actor: str, consumer: str, seq: int) -> bool:
        """Put one dead letter back in line for `consumer`; False (nothing written or
        audited) if that consumer has no dead letter `seq`."""
        if consumer not in self.consumers():
            return False
        done = await self._outbox.redeliver(consumer, seq)
        if done:
            await self._audit.record(
                actor, "webhook_redelivered", "outbox_event", str(seq), consumer=consumer
            )
        return done
