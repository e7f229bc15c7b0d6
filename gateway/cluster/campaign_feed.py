"""A cluster node's campaign passes: the runner's `SharedFeed` on the shared PostgreSQL.

Every node runs the campaign runner (`gateway/campaigns/runner.py`: the live
campaigns, their start and end times, a token bucket each); what differs is the pass.
One pass is one PostgreSQL transaction on the shared queue's pool:

1. the campaign's row read `FOR SHARE`: nothing happens unless it is `running`, and a
   pause or cancel on any node (an `UPDATE` of that row) waits for the passes holding
   it and is seen by every pass after it;
2. up to `limit` of its open recipients (`outcome IS NULL`, written when it started
   running: `campaigns.move`) claimed in index order with `FOR UPDATE SKIP LOCKED`,
   so passes on several nodes at once take disjoint batches;
3. their numbers and languages read from the shared contacts, their messages accepted
   through `Messages.accept_many_within_shared`: judged as `accept` judges (an
   opt-out or missing consent recorded on any node blocks, with its reason), inserted
   into the shared queue;
4. each recipient's outcome and message, each message's campaign, written.

It commits as a whole, then the messages go to this node's scheduler (`hand_over`, by
the runner). A node killed mid-pass commits nothing and its row locks go with its
connection: the recipients stay open for the other nodes' passes. Each recipient gets
one message, whichever node handled it, because its outcome commits with its message
and a claimed row is never claimed again.

A pass that found fewer open recipients than it asked for tries, in a transaction of
its own after its commit, to finish the campaign: only when no recipient is open any
more (another node's pass still holding some leaves that to the last of them).
Each node feeds a campaign at its share of the campaign's rate (`live`). A campaign
naming a template renders each recipient's message as the SQLite runner does
(`runner.campaign_text`: the variant split by weight, the recipient's language and its
fallback chain, the values), from the shared templates' active versions read once per
pass in its transaction; a recipient without one is skipped with the same outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from gateway.campaigns import store as sql
from gateway.campaigns.model import Campaign, CampaignState
from gateway.campaigns.runner import (
    PassResult,
    RenderFor,
    campaign_request,
    campaign_text,
    system_caller,
)
from gateway.clinical.rendering import Rendered, TemplateMissing
from gateway.cluster import campaigns as shared
from gateway.cluster import seal_guard
from gateway.cluster.lease import Pool
from gateway.consent.ledger import contact_row_id
from gateway.errors import ApiError
from gateway.intake import SendRequest
from gateway.store.crypto import FieldCipher
from gateway.templates import store as templates
from gateway.templates.renderer import RenderRefused, TemplateRenderer
from gateway.templates.store import Version
from gateway.usecases.messages import Messages

if TYPE_CHECKING:
    from gateway.cluster.shared_keys import KeyringWatch

CLAIM_RECIPIENTS = (
    "SELECT contact_idx FROM campaign_recipients WHERE campaign_id = %s AND outcome IS NULL"
    " ORDER BY contact_idx LIMIT %s FOR UPDATE SKIP LOCKED"
)
_RECORD = (
    "UPDATE campaign_recipients r SET outcome = v.outcome, message_id = v.message_id,"
    " at = %s, node_id = %s"
    " FROM unnest(%s::bytea[], %s::text[], %s::text[]) AS v(idx, outcome, message_id)"
    " WHERE r.campaign_id = %s AND r.contact_idx = v.idx"
)
_CONTACTS = "SELECT idx, number_ct, language FROM contacts WHERE idx = ANY(%s)"
_ACTIVE_VERSIONS = (
    f"SELECT {templates.COLUMNS}{templates.FROM} WHERE t.name = %s AND h.active = t.version"
)
_ALIVE = (
    "SELECT count(DISTINCT node_id) FROM nodes WHERE recovered_at IS NULL"
    " AND lease_until > clock_timestamp()"
)
_FINISH = (
    "UPDATE campaigns SET state = 'finished', updated_at = %s, done_at = %s"
    " WHERE id = %s AND state = 'running' AND NOT EXISTS (SELECT 1 FROM campaign_recipients"
    " WHERE campaign_id = %s AND outcome IS NULL) RETURNING id"
)


class ClusterCampaignFeed:
    """`SharedFeed` for one node: `node_id` is recorded with the recipients it handled."""

    def __init__(
        self,
        pool: Pool,
        cipher: FieldCipher,
        messages: Messages,
        node_id: str,
        renderer: TemplateRenderer,
        *,
        horizon: float,
        keys: KeyringWatch | None = None,
    ) -> None:
        self._pool = pool
        self._keys = keys  # a pass the seal guard refused runs again under the key taken up
        self._renderer = renderer
        self._cipher = cipher
        self._messages = messages
        self._node_id = node_id
        self._horizon = horizon

    async def live(self) -> list[Campaign]:
        """The live campaigns, each at this node's share of its rate: every live node
        runs them, so together they feed a campaign at its rate (a dead node's share
        goes to the others once its lease has lapsed)."""
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(shared.LIVE_SQL)).fetchall()
            alive = await (await conn.execute(_ALIVE)).fetchone()
        nodes = max(1, int(alive[0]) if alive else 1)
        return [
            replace(c, rate=c.rate / nodes)
            for c in (shared.campaign_of(self._cipher, r) for r in rows)
        ]

    async def move(
        self, campaign_id: str, source: CampaignState, target: CampaignState, now: float
    ) -> bool:
        async with self._pool.connection() as conn, conn.transaction():
            return await shared.move(conn, campaign_id, (source,), target, now)

    async def run_pass(self, campaign: Campaign, limit: int, now: float) -> PassResult:
        """One pass (its messages sealed in its transaction: refused under a retired key,
        it runs again under the current one)."""
        return await seal_guard.retried(self._keys, lambda: self._pass(campaign, limit, now))

    async def _pass(self, campaign: Campaign, limit: int, now: float) -> PassResult:
        result = PassResult()
        async with self._pool.connection() as conn, conn.transaction():
            row = await (
                await conn.execute(
                    "SELECT state FROM campaigns WHERE id = %s FOR SHARE", (campaign.id,)
                )
            ).fetchone()
            result.state = None if row is None else CampaignState(row[0])
            if result.state is not CampaignState.RUNNING:
                return result
            rows = await (await conn.execute(CLAIM_RECIPIENTS, (campaign.id, limit))).fetchall()
            idxs = [bytes(r[0]) for r in rows]
            await self._feed(conn, campaign, idxs, now, result)
        result.read = len(idxs)
        if len(idxs) < limit:
            result.state = await self._finish(campaign.id, now)
        return result

    async def _feed(
        self, conn: Any, campaign: Campaign, idxs: Sequence[bytes], now: float, result: PassResult
    ) -> None:
        """The claimed recipients' messages and outcomes, in the pass's transaction."""
        contacts = await self._contacts(conn, idxs)
        render = await self._render_for(conn, campaign)
        handled: list[sql.Handled] = []
        asked: list[tuple[bytes, SendRequest, str | None]] = []
        for idx in idxs:
            contact = contacts.get(idx)
            if contact is None:  # the contact erased since the campaign started
                handled.append(sql.Handled(idx, "skipped:no_number"))
                continue
            number, language = contact
            try:
                body, variant = campaign_text(campaign, idx, language, render)
            except RenderRefused:
                handled.append(sql.Handled(idx, "skipped:render_refused"))
                continue
            except TemplateMissing:
                handled.append(sql.Handled(idx, "skipped:template_missing"))
                continue
            request = campaign_request(campaign, number, body, now, self._horizon)
            asked.append((idx, request, variant))
        accepted = await self._messages.accept_many_within_shared(
            conn, system_caller(campaign.id), [(request, idx) for idx, request, _ in asked]
        )
        for (idx, _, variant), got in zip(asked, accepted, strict=True):
            if isinstance(got, ApiError):
                handled.append(sql.Handled(idx, f"skipped:{got.code}"))
                continue
            answer = got.answer()
            outcome = answer.status if answer.reason is None else f"{answer.status}:{answer.reason}"
            handled.append(sql.Handled(idx, outcome, answer.id, variant))
            result.prepared.append(got)
        result.outcomes.update(h.outcome for h in handled)
        if not handled:
            return
        await conn.execute(
            _RECORD,
            (
                now,
                self._node_id,
                [h.idx for h in handled],
                [h.outcome for h in handled],
                [h.message_id for h in handled],
                campaign.id,
            ),
        )
        sent = [h for h in handled if h.message_id is not None]
        if sent:
            await conn.execute(
                "UPDATE messages m SET campaign_id = %s, variant = v.variant"
                " FROM unnest(%s::text[], %s::text[]) AS v(id, variant) WHERE m.id = v.id",
                (campaign.id, [h.message_id for h in sent], [h.variant for h in sent]),
            )

    async def _contacts(
        self, conn: Any, idxs: Sequence[bytes]
    ) -> dict[bytes, tuple[str, str | None]]:
        """The shared contacts' numbers and languages by index (an erased one has none)."""
        if not idxs:
            return {}
        rows = await (await conn.execute(_CONTACTS, (list(idxs),))).fetchall()
        return {
            bytes(r[0]): (
                self._cipher.decrypt(bytes(r[1]), contact_row_id(bytes(r[0])), "number"),
                r[2],
            )
            for r in rows
        }

    async def _render_for(self, conn: Any, campaign: Campaign) -> RenderFor:
        """Renders the campaign's template from its active versions as this pass's
        transaction sees them (a campaign with a text never calls it)."""
        name = campaign.spec.template or ""
        versions: dict[str, Version] = {}
        if campaign.spec.template is not None:
            rows = await (await conn.execute(_ACTIVE_VERSIONS, (name,))).fetchall()
            versions = {v.draft.language: v for v in map(templates.version_of, rows)}

        def render(language: str | None, values: Any, variant: str | None) -> Rendered:
            return self._renderer.render_found(
                versions.get, name, language, values, variant=variant
            )

        return render

    async def _finish(self, campaign_id: str, now: float) -> CampaignState | None:
        """`finished` once no recipient is open; None while another node's pass holds
        the last ones (this node has nothing left to do for it: that pass finishes it)."""
        async with self._pool.connection() as conn, conn.transaction():
            done = await (
                await conn.execute(_FINISH, (now, now, campaign_id, campaign_id))
            ).fetchone()
        return None if done is None else CampaignState.FINISHED
