"""Campaigns in the cluster's PostgreSQL: the `CampaignStore` of
`gateway/campaigns/backend.py` on a cluster node (cluster migration 18).

Every node reads and changes the same `campaigns`: one created on node A is started,
paused or cancelled on node B. A state change is one `UPDATE ... WHERE state IN (...)`
as on SQLite; a node's pass (`campaign_feed.py`) holds the campaign's row `FOR SHARE`
while it runs, so a pause or cancel (which must lock the row to update it) lands wholly
before or after every node's pass, and once it has answered no node queues more.

When a campaign starts running, its audience is written as its recipients, each
`outcome` NULL until a pass handled it (`move`, in the transaction of the state
change): the audience as it stands then, which the passes of every node share out with
`FOR UPDATE SKIP LOCKED`. A cancel withdraws the campaign's messages still waiting
(any node's) in its own transaction. Changes are audited in the node's own chain once
the shared rows are committed (`gateway/cluster/audit.py` anchors the chains). The
progress counts read the shared queue, inbound and consent ledger: the whole site's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from gateway.campaigns import store as sql
from gateway.campaigns.model import (
    FROM,
    Campaign,
    CampaignSpec,
    CampaignState,
    Judgement,
    Progress,
)
from gateway.campaigns.preview import to_number
from gateway.cluster import queue_sql
from gateway.cluster.audience_sql import audience_query, count_query
from gateway.cluster.consent_accept import judge_within
from gateway.cluster.lease import Pool
from gateway.cluster.nodes import Incarnation
from gateway.consent.ledger import contact_row_id
from gateway.contacts.audience import AudienceSpec
from gateway.errors import ApiError
from gateway.intake import Intake, Prepared, SendRequest
from gateway.models import State
from gateway.store.audit_log import AuditTrail
from gateway.store.crypto import FieldCipher
from gateway.store.transitions import Transition

Conn = Any  # psycopg.AsyncConnection: a pooled connection in its transaction
COLUMNS = (
    "id, name, state, spec, content_ct, audience_size, created_by, created_at, updated_at,"
    " started_at, done_at"
)
LIVE_SQL = (
    f"SELECT {COLUMNS} FROM campaigns"  # noqa: S608 - constant columns
    " WHERE state IN ('scheduled', 'running') ORDER BY created_at, id"
)
JUDGE_BATCH = 500  # recipients judged per transaction (each capped one's lock held in it)

STATES_SQL = (
    "SELECT coalesce(variant, ''), state, count(*) FROM messages"
    " WHERE campaign_id = %(id)s GROUP BY 1, 2"
)
BLOCKED_SQL = (
    "SELECT coalesce(variant, ''), coalesce(error_code, 'blocked'), count(*) FROM messages"
    " WHERE campaign_id = %(id)s AND state = 'blocked' GROUP BY 1, 2"
)
SKIPPED_SQL = (
    "SELECT outcome, count(*) FROM campaign_recipients WHERE campaign_id = %(id)s"
    " AND message_id IS NULL AND outcome IS NOT NULL GROUP BY outcome"
)
# As SQLite's (`campaigns/store.py` says what counts as a reply and an opt-out).
REPLIES_SQL = (
    "SELECT coalesce(m.variant, ''), count(*) FROM messages m WHERE m.campaign_id = %(id)s"
    " AND m.to_index IN (SELECT sender_index FROM inbound WHERE received_at >= %(since)s)"
    " AND EXISTS (SELECT 1 FROM inbound i WHERE i.sender_index = m.to_index"
    " AND i.received_at >= m.created_at"
    " AND NOT EXISTS (SELECT 1 FROM consent_ledger l WHERE l.contact_idx = i.sender_index"
    " AND l.inbound_id = i.id)"
    " AND NOT EXISTS (SELECT 1 FROM messages n WHERE n.to_index = m.to_index"
    " AND n.created_at > m.created_at AND n.created_at < i.received_at"
    " AND coalesce(n.purpose, '') <> 'compliance')) GROUP BY 1"
)
OPT_OUTS_SQL = (
    "SELECT coalesce(m.variant, ''), count(*) FROM messages m WHERE m.campaign_id = %(id)s"
    " AND m.to_index IN (SELECT contact_idx FROM consent_ledger"
    " WHERE decision = 'opt_out' AND at >= %(since)s)"
    " AND EXISTS (SELECT 1 FROM consent_ledger l WHERE l.contact_idx = m.to_index"
    " AND l.decision = 'opt_out' AND (l.message_id = m.id OR l.at >= m.created_at))"
    " GROUP BY 1"
)


def campaign_of(cipher: FieldCipher, r: Sequence[Any]) -> Campaign:
    return sql.campaign_of(cipher, [bytes(v) if isinstance(v, memoryview) else v for v in r])


async def move(
    conn: Conn,
    campaign_id: str,
    allowed: Iterable[CampaignState],
    target: CampaignState,
    now: float,
    *,
    audience_size: int | None = None,
) -> bool:
    """`sql.move` on PostgreSQL; a campaign running for the first time (from a draft,
    from `scheduled`, or resumed from a pause taken while scheduled) gets its audience
    as its recipients, in the same transaction."""
    states = [s.value for s in allowed]
    started = now if target in (CampaignState.SCHEDULED, CampaignState.RUNNING) else None
    done = now if target.done else None
    row = await (
        await conn.execute(
            "UPDATE campaigns SET state = %s, updated_at = %s,"
            " started_at = coalesce(started_at, %s), done_at = coalesce(%s, done_at),"
            " audience_size = coalesce(%s, audience_size)"
            " WHERE id = %s AND state = ANY(%s) RETURNING spec",
            (target.value, now, started, done, audience_size, campaign_id, states),
        )
    ).fetchone()
    if row is None:
        return False
    if target is CampaignState.RUNNING and await _never_enrolled(conn, campaign_id, states):
        spec = sql.audience_of(row[0])
        await _enrol(conn, campaign_id, spec)
    return True


async def _never_enrolled(conn: Conn, campaign_id: str, states: list[str]) -> bool:
    """Whether a campaign now running starts for the first time: from a draft, from
    `scheduled`, or resumed from a pause taken while it was still scheduled (it has no
    recipients yet; one paused while running keeps the audience it started with)."""
    if {CampaignState.DRAFT.value, CampaignState.SCHEDULED.value} & set(states):
        return True
    cur = await conn.execute(
        "SELECT 1 FROM campaign_recipients WHERE campaign_id = %s LIMIT 1", (campaign_id,)
    )
    return await cur.fetchone() is None


async def _enrol(conn: Conn, campaign_id: str, audience: AudienceSpec) -> None:
    """The audience as it stands now, as the campaign's open recipients (those already
    there, from an earlier start, kept as they are)."""
    query, params = audience_query(audience, b"", None)
    await conn.execute(
        "INSERT INTO campaign_recipients (campaign_id, contact_idx)"  # noqa: S608 - placeholders only
        f" SELECT %s, idx FROM ({query}) a ON CONFLICT DO NOTHING".encode(),
        (campaign_id, *params),
    )
    await conn.execute(
        "UPDATE campaigns SET audience_size = (SELECT count(*) FROM campaign_recipients"
        " WHERE campaign_id = %s) WHERE id = %s",
        (campaign_id, campaign_id),
    )


class ClusterCampaigns:
    """`CampaignStore` on the shared tables."""

    shared = True

    def __init__(
        self,
        pool: Pool,
        cipher: FieldCipher,
        audit: AuditTrail,
        me: Callable[[], Incarnation],
    ) -> None:
        self._pool = pool
        self._cipher = cipher
        self._audit = audit
        self._me = me

    async def _all(self, query: str, params: Any = ()) -> list[Any]:
        async with self._pool.connection() as conn:
            return await (await conn.execute(query.encode(), params)).fetchall()

    async def all(self, limit: int) -> list[Campaign]:
        rows = await self._all(
            f"SELECT {COLUMNS} FROM campaigns ORDER BY created_at DESC, id LIMIT %s",  # noqa: S608
            (limit,),
        )
        return [campaign_of(self._cipher, r) for r in rows]

    async def get(self, campaign_id: str) -> Campaign | None:
        rows = await self._all(f"SELECT {COLUMNS} FROM campaigns WHERE id = %s", (campaign_id,))  # noqa: S608
        return campaign_of(self._cipher, rows[0]) if rows else None

    async def live(self) -> list[Campaign]:
        return [campaign_of(self._cipher, r) for r in await self._all(LIVE_SQL)]

    async def choices(self) -> tuple[list[tuple[str, str]], list[str]]:
        """The groups, and the names of the shared templates with an active version."""
        rows = await self._all("SELECT id, name FROM contact_groups ORDER BY name, id LIMIT 500")
        names = await self._all(
            "SELECT DISTINCT name FROM template_heads WHERE active IS NOT NULL ORDER BY name"
        )
        return [(r[0], r[1]) for r in rows], [r[0] for r in names]

    async def count(self, campaign: Campaign) -> Progress:
        args = {"id": campaign.id, "since": campaign.created_at}
        async with self._pool.connection() as conn:

            async def rows(query: str) -> list[Any]:
                return await (await conn.execute(query, args)).fetchall()

            states = await rows(STATES_SQL)
            blocked = await rows(BLOCKED_SQL) if sql.any_blocked(states) else []
            return sql.progress_of(
                states,
                blocked,
                await rows(SKIPPED_SQL),
                await rows(REPLIES_SQL),
                await rows(OPT_OUTS_SQL),
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
        row = sql.insert_row(self._cipher, campaign_id, spec, priority, rate, actor, now)
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO campaigns (id, name, state, spec, content_ct, created_by,"
                " created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                row,
            )
        await self._audit.record(
            actor,
            "campaign_created",
            "campaign",
            campaign_id,
            purpose=spec.purpose,
            priority=priority,
        )
        found = await self.get(campaign_id)
        assert found is not None
        return found

    async def start(
        self, campaign_id: str, target: CampaignState, now: float, size: int, actor: str
    ) -> Campaign | None:
        async with self._pool.connection() as conn, conn.transaction():
            moved = await move(conn, campaign_id, FROM["start"], target, now, audience_size=size)
        if not moved:
            return None
        await self._audit.record(actor, "campaign_started", "campaign", campaign_id)
        return await self.get(campaign_id)

    async def act(
        self, campaign_id: str, action: str, target: CampaignState, now: float, actor: str
    ) -> tuple[Campaign | None, bool, list[str]]:
        withdrawn: list[str] = []
        async with self._pool.connection() as conn, conn.transaction():
            moved_to = target
            if action == "resume":
                row = await (
                    await conn.execute("SELECT spec FROM campaigns WHERE id = %s", (campaign_id,))
                ).fetchone()
                starts = None if row is None else json.loads(row[0])["starts_at"]
                if starts is not None and starts > now:
                    moved_to = CampaignState.SCHEDULED
            changed = await move(conn, campaign_id, FROM[action], moved_to, now)
            if changed and action == "cancel":
                withdrawn = await self._withdraw(conn, campaign_id, now)
        if changed:
            event = "campaign_cancelled" if action == "cancel" else f"campaign_{action}d"
            await self._audit.record(
                actor, event, "campaign", campaign_id, withdrawn=len(withdrawn)
            )
        return await self.get(campaign_id), changed, withdrawn

    async def _withdraw(self, conn: Conn, campaign_id: str, now: float) -> list[str]:
        """The campaign's messages not yet handed to a carrier, cancelled."""
        rows = await (
            await conn.execute(
                "SELECT id FROM messages WHERE campaign_id = %s"
                " AND state IN ('queued', 'scheduled') ORDER BY id FOR UPDATE",
                (campaign_id,),
            )
        ).fetchall()
        me = self._me()
        for (message_id,) in rows:
            await queue_sql.apply(conn, Transition(message_id, State.CANCELLED), now, me)
        return [r[0] for r in rows]

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
        """`preview.judge` on the shared contacts and consent list, a batch a
        transaction (the policy's reads as the accept's: `judge_within`)."""
        verdicts = _Verdicts()
        if audience is None:
            async with self._pool.connection() as conn, conn.transaction():
                await verdicts.judge(conn, intake, request, [request.to], now)
            return verdicts.judgement(1)
        size_sql, size_params = count_query(audience)
        size = int((await self._all(size_sql, size_params))[0][0])
        after = b""
        while verdicts.judged < limit and not (until_allowed and verdicts.allowed):
            query, params = audience_query(
                audience, after, min(JUDGE_BATCH, limit - verdicts.judged)
            )
            async with self._pool.connection() as conn, conn.transaction():
                idxs = [
                    bytes(r[0])
                    for r in await (await conn.execute(query.encode(), params)).fetchall()
                ]
                if not idxs:
                    break
                numbers = await numbers_of(conn, self._cipher, idxs)
                await verdicts.judge(conn, intake, request, [numbers.get(i) for i in idxs], now)
            after = idxs[-1]
        return verdicts.judgement(size)


async def numbers_of(conn: Conn, cipher: FieldCipher, idxs: Sequence[bytes]) -> dict[bytes, str]:
    """The shared contacts' numbers by index (an erased contact has none)."""
    if not idxs:
        return {}
    rows = await (
        await conn.execute("SELECT idx, number_ct FROM contacts WHERE idx = ANY(%s)", (list(idxs),))
    ).fetchall()
    return {
        bytes(r[0]): cipher.decrypt(bytes(r[1]), contact_row_id(bytes(r[0])), "number")
        for r in rows
    }


class _Verdicts:
    """The policy's verdicts on a preview's recipients, counted by reason."""

    def __init__(self) -> None:
        self.blocked: dict[str, int] = {}
        self.skipped: dict[str, int] = {}
        self.waiting: dict[str, int] = {}
        self.allowed = 0
        self.judged = 0

    @staticmethod
    def _add(counts: dict[str, int], key: str) -> None:
        counts[key] = counts.get(key, 0) + 1

    async def judge(
        self,
        conn: Conn,
        intake: Intake,
        request: SendRequest,
        numbers: Sequence[str | None],
        now: float,
    ) -> None:
        prepared: list[Prepared] = []
        for number in numbers:
            self.judged += 1
            if number is None:
                self._add(self.skipped, "no_number")
                continue
            try:
                prepared.append(intake.prepare(to_number(request, number), None, now))
            except ApiError as e:
                self._add(self.skipped, e.code)
        if not intake.policy.enabled:
            self.allowed += len(prepared)
            return
        for p in await judge_within(conn, intake, prepared, now):
            m = p.message
            if m.blocked is not None:
                self._add(self.blocked, m.blocked)
                continue
            self.allowed += 1
            if m.held_for is not None:
                self._add(self.waiting, m.held_for)

    def judgement(self, size: int) -> Judgement:
        return Judgement(size, self.judged, self.allowed, self.blocked, self.skipped, self.waiting)
