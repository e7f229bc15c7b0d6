"""Where campaigns are kept: their rows, state changes, progress counts, and the
policy's verdicts on an audience (a preview, a start).

Two implementations of one protocol: the node's own SQLite store (`LocalCampaigns`,
below: a change and its audit entry in one writer job; previews on a read-only
connection of their own) and, on a cluster, the PostgreSQL tables every node shares
(`gateway/cluster/campaigns.py`), so a campaign created on one node is started, paused
or cancelled on any. The use case (`usecase.py`) sees only this interface.
"""

from __future__ import annotations

import sqlite3
from typing import Protocol

from gateway.campaigns import preview as pv
from gateway.campaigns import store as sql
from gateway.campaigns.model import (
    FROM,
    Campaign,
    CampaignSpec,
    CampaignState,
    Judgement,
    Progress,
)
from gateway.contacts.audience import AudienceSpec
from gateway.intake import Intake, SendRequest
from gateway.models import State
from gateway.store.audit_log import AuditTrail
from gateway.store.consent_sql import cipher_of
from gateway.store.store import Store
from gateway.store.transitions import Transition, apply


class CampaignStore(Protocol):
    # True on a cluster: templates are not shared yet, so a campaign here has a text.
    shared: bool

    async def all(self, limit: int) -> list[Campaign]: ...

    async def get(self, campaign_id: str) -> Campaign | None: ...

    async def choices(self) -> tuple[list[tuple[str, str]], list[str]]:
        """The contact groups (id, name) and the template names a form offers."""
        ...

    async def count(self, campaign: Campaign) -> Progress:
        """The campaign's progress counts, read now."""
        ...

    async def create(
        self,
        campaign_id: str,
        spec: CampaignSpec,
        priority: str,
        rate: float,
        actor: str,
        now: float,
    ) -> Campaign:
        """A draft, audited as `campaign_created`."""
        ...

    async def start(
        self, campaign_id: str, target: CampaignState, now: float, size: int, actor: str
    ) -> Campaign | None:
        """Draft → `target` (running or scheduled), audited; None when it is no longer
        a draft (another start, or a cancel, got there first)."""
        ...

    async def act(
        self, campaign_id: str, action: str, target: CampaignState, now: float, actor: str
    ) -> tuple[Campaign | None, bool, list[str]]:
        """`pause`, `resume` (to `scheduled` when its start lies ahead) or `cancel`
        (withdrawing its messages not yet sending) in one step, audited when it
        changed: (the campaign, whether it changed, the messages withdrawn)."""
        ...

    async def judge(
        self,
        intake: Intake,
        request: SendRequest,
        now: float,
        *,
        audience: AudienceSpec | None,
        limit: int,
        until_allowed: bool = False,
    ) -> Judgement:
        """`preview.judge`: the policy's verdicts on `request` sent to the audience
        (None: to `request.to`), nothing stored."""
        ...


class LocalCampaigns:
    """`CampaignStore` on this node's SQLite store."""

    shared = False

    def __init__(self, store: Store, audit: AuditTrail) -> None:
        self._store = store
        self._audit = audit
        self._read = pv.ReadOnly(store.path)

    async def all(self, limit: int) -> list[Campaign]:
        cipher = cipher_of(self._store)
        rows = await self._store.reader.all(sql.LIST_SQL, (limit,))
        return [sql.campaign_of(cipher, r) for r in rows]

    async def get(self, campaign_id: str) -> Campaign | None:
        r = await self._store.reader.one(sql.GET_SQL, (campaign_id,))
        return None if r is None else sql.campaign_of(cipher_of(self._store), r)

    async def choices(self) -> tuple[list[tuple[str, str]], list[str]]:
        groups = await self._store.reader.all(sql.GROUPS_SQL)
        names = await self._store.reader.all(sql.TEMPLATE_NAMES_SQL)
        return [(r[0], r[1]) for r in groups], [r[0] for r in names]

    async def count(self, campaign: Campaign) -> Progress:
        reader, args = self._store.reader, (campaign.id,)
        since = (campaign.id, campaign.created_at)
        states = await reader.all(sql.STATES_SQL, args)
        # Reasons are read from each blocked row: only when there are some.
        blocked = await reader.all(sql.BLOCKED_SQL, args) if sql.any_blocked(states) else []
        return sql.progress_of(
            states,
            blocked,
            await reader.all(sql.SKIPPED_SQL, args),
            await reader.all(sql.REPLIES_SQL, since),
            await reader.all(sql.OPT_OUTS_SQL, since),
            campaign.audience_size,
        )

    async def create(
        self,
        campaign_id: str,
        spec: CampaignSpec,
        priority: str,
        rate: float,
        actor: str,
        now: float,
    ) -> Campaign:
        cipher = cipher_of(self._store)

        def job(conn: sqlite3.Connection) -> Campaign:
            sql.insert(conn, cipher, campaign_id, spec, priority, rate, actor, now)
            self._audit.append_in(
                conn,
                now,
                actor,
                "campaign_created",
                "campaign",
                campaign_id,
                purpose=spec.purpose,
                priority=priority,
            )
            found = sql.get(conn, cipher, campaign_id)
            assert found is not None
            return found

        return await self._store.writer.run(job)

    async def start(
        self, campaign_id: str, target: CampaignState, now: float, size: int, actor: str
    ) -> Campaign | None:
        cipher = cipher_of(self._store)

        def job(conn: sqlite3.Connection) -> Campaign | None:
            if not sql.move(conn, campaign_id, FROM["start"], target, now, audience_size=size):
                return None
            self._audit.append_in(conn, now, actor, "campaign_started", "campaign", campaign_id)
            return sql.get(conn, cipher, campaign_id)

        return await self._store.writer.run(job)

    async def act(
        self, campaign_id: str, action: str, target: CampaignState, now: float, actor: str
    ) -> tuple[Campaign | None, bool, list[str]]:
        cipher = cipher_of(self._store)

        def job(conn: sqlite3.Connection) -> tuple[Campaign | None, bool, list[str]]:
            moved_to = target
            if action == "resume":
                before = sql.get(conn, cipher, campaign_id)
                starts = None if before is None else before.spec.starts_at
                if starts is not None and starts > now:
                    moved_to = CampaignState.SCHEDULED
            changed = sql.move(conn, campaign_id, FROM[action], moved_to, now)
            withdrawn: list[str] = []
            if changed:
                if action == "cancel":
                    withdrawn = _withdraw(conn, campaign_id, now)
                self._audit.append_in(
                    conn,
                    now,
                    actor,
                    f"campaign_{action}d" if action != "cancel" else "campaign_cancelled",
                    "campaign",
                    campaign_id,
                    withdrawn=len(withdrawn),
                )
            return sql.get(conn, cipher, campaign_id), changed, withdrawn

        return await self._store.writer.run(job)

    async def judge(
        self,
        intake: Intake,
        request: SendRequest,
        now: float,
        *,
        audience: AudienceSpec | None,
        limit: int,
        until_allowed: bool = False,
    ) -> Judgement:
        cipher = cipher_of(self._store)
        return await self._read.run(
            lambda conn: pv.judge(
                conn,
                intake,
                cipher,
                request,
                now,
                audience=audience,
                limit=limit,
                until_allowed=until_allowed,
            )
        )


def _withdraw(conn: sqlite3.Connection, campaign_id: str, now: float) -> list[str]:
    ids = sql.waiting_messages(conn, campaign_id)
    for message_id in ids:
        apply(conn, Transition(message_id, State.CANCELLED), now)
    return ids
