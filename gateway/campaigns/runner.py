"""The campaign runner: feeds each running campaign's audience into the queue at its rate.

Theory of operation. One background task (started by `Gateway.start` with the other
loops, cancelled at stop) runs steps. A step reads the live campaigns; one whose start
time has come goes `scheduled → running`, one whose end time has passed goes
`running → ended`, and each running one gets a pass if its token bucket (its `rate`
a second, at most one second's worth saved up) holds a pass's worth: one message for
a new campaign, then a tenth of a second of its rate (`PASS_PERIOD`, at most
`MAX_BATCH`), so a fast campaign goes in passes of a few milliseconds of the writer's
CPU rather than a commit per step; and no more than its recent passes show to cost
about `PASS_CPU` of the writer's CPU (thread time measured around each pass), so
whatever the rate and the content, a clinical accept or claim waits behind at most
that much bulk work. More passes in a step keep the rate.

A pass is one writer job, run after the interactive work pending and in a transaction
of its own (`run_after_others`: a clinical accept or claim never commits together with
a pass, nor queues behind more than the one running). It reads the campaign's state
and cursor in that transaction and does nothing unless the campaign is `running`: so
a pause, resume or cancel (each one `UPDATE` on the same writer) lands wholly before
or after a pass, and once a pause has answered nothing more is queued. It takes the
next contacts of the audience after the cursor (`audience_query`, in index order),
drops those that already have their `campaign_recipients` row (`handled_before`: the
guard against a second runner or a lost cursor, read in the same transaction on the one
writer), reads the rest's numbers and languages in one query, and for each:

1. no contact row any more: skipped `no_number`;
2. the text: the template in the contact's language (its fallback chain), the variant
   chosen by the campaign's split (or the template's own weights) deterministically
   from the campaign and contact, so a re-run picks the same one; or the free text;
3. accepted, all of the pass's messages together, through `Messages.accept_many_within`
   as the system caller `campaign:<id>` with the campaign's purpose and class: the send
   policy judges them in this transaction from one read of their recipients, as it
   judges a batch; a blocked message is stored `blocked` with its reason. The contact's
   number is taken as stored (E.164, its index the contact's), not parsed again.

Then every recipient's row (`queued`, `scheduled`, `blocked:<reason>`, or
`skipped:<reason>` with no message) and each message's campaign and variant tag are
written together. A pass costs per recipient its row, the message and its tag (each
statement once per pass, with all the rows), the policy's read once per pass, and no
savepoint of its own: any exception fails the writer's job, whose savepoint takes the
whole pass back.

The cursor moves in the same transaction, so a restart resumes after the last contact
committed; fewer contacts than asked for means the audience is exhausted and the
campaign is `finished`. After the commit the messages go to the scheduler. Messages
not blocked draw on the bucket. Between steps the task sleeps on the gateway's clock
until the next bucket can pay for a pass, a campaign's start or end, or a wake-up
(start, resume).

On a cluster node the steps and buckets are the same, but the campaigns, their state
changes and the passes are the shared PostgreSQL's (`SharedFeed`,
`gateway/cluster/campaign_feed.py`): every node runs the runner, passes claim
recipients with `FOR UPDATE SKIP LOCKED` and accept their messages in the same
transaction (`Messages.accept_many_within_shared`), each node at its share of the rate.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import structlog

from drivers.clock import Clock, wait_event
from gateway.campaigns import store as sql
from gateway.campaigns.model import Campaign, CampaignState
from gateway.clinical.rendering import Rendered, Renderer, TemplateMissing
from gateway.consent.ledger import contact_row_id
from gateway.contacts.audience import audience_query
from gateway.errors import ApiError
from gateway.intake import Prepared, SendRequest
from gateway.logs import exception_summary
from gateway.store.consent_sql import cipher_of
from gateway.store.store import Store
from gateway.templates.renderer import RenderRefused, choose
from gateway.templates.store import Variant
from gateway.usecases.caller import Caller
from gateway.usecases.messages import Messages

log = structlog.get_logger("smsgw.campaigns")

MAX_BATCH = 200  # recipients per pass (one transaction)
# A fast campaign waits until its bucket holds this many seconds of its rate before a
# pass: a pass a message or two long at every step would cost a commit each (pages
# written whole) and a step of the loop; a tenth of a second at 700/s is a pass of 70,
# about 5 ms of the writer's CPU, short enough for a clinical accept to wait behind.
PASS_PERIOD = 0.1
# And a pass holds no more recipients than cost this much of the writer's CPU, as the
# campaign's last passes measured (a template rendered per contact costs more than a
# free text): what a clinical accept or claim may have to wait behind.
PASS_CPU = 0.005
MEASURED_FROM = 20  # contacts: a smaller pass's cost is mostly its fixed part
MAX_PASSES = 20  # per campaign and step
MAX_SLEEP = 5.0
MIN_SLEEP = 0.02
RETRY = 10.0  # after a step failed (the store struggling)
BURST = 1.0  # seconds of a campaign's rate its bucket may save up
CATEGORY = "campaign"


def system_caller(campaign_id: str) -> Caller:
    return Caller(
        actor=f"campaign:{campaign_id}",
        token_id=None,
        sees_all=True,
        may_send=True,
        may_read_phi=False,
    )


@dataclass(slots=True)
class PassResult:
    """What one pass did: recipients by outcome, the messages it stored, and whether
    the campaign left `running` (finished, ended) or was not running at all (None; on
    a cluster also: its last recipients are another node's pass's, which finishes it)."""

    outcomes: Counter[str] = field(default_factory=Counter)
    prepared: list[Prepared] = field(default_factory=list)
    state: CampaignState | None = None
    read: int = 0  # contacts taken from the audience
    cpu: float = 0.0  # the writer's CPU seconds for the pass

    @property
    def allowed(self) -> int:
        """Messages stored that may go (what the rate counts)."""
        return sum(1 for p in self.prepared if p.message.blocked is None)


class SharedFeed(Protocol):
    """Where a cluster node's runner finds and feeds the campaigns every node shares
    (`gateway/cluster/campaign_feed.py`); the embedded default's are in its store."""

    async def live(self) -> list[Campaign]: ...

    async def move(
        self, campaign_id: str, source: CampaignState, target: CampaignState, now: float
    ) -> bool: ...

    async def run_pass(self, campaign: Campaign, limit: int, now: float) -> PassResult:
        """Up to `limit` recipients in one transaction, committed (`hand_over` after)."""
        ...


def campaign_request(
    campaign: Campaign, number: str, body: str, now: float, horizon: float
) -> SendRequest:
    """The message to one recipient: the campaign's class and purpose; not sent after
    the campaign's end (the policy then blocks one its quiet hours would hold past it)."""
    ends_at = campaign.spec.ends_at
    expires = None
    if ends_at is not None and ends_at > now:
        expires = datetime.fromtimestamp(min(ends_at, now + horizon), UTC)
    return SendRequest(
        to=number,
        body=body,
        priority=campaign.priority,  # type: ignore[arg-type]  # a class name, checked at create
        purpose=campaign.spec.purpose,  # type: ignore[arg-type]  # checked at create
        category=CATEGORY,
        expires_at=expires,
    )


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float
    fresh: bool = True  # a new campaign's first message goes at once, not after a pass's worth
    cost: float | None = None  # writer CPU seconds per contact of its passes (smoothed)

    def most(self) -> int:
        """Recipients in a pass of about `PASS_CPU`."""
        if not self.cost:
            return MAX_BATCH
        return max(1, min(MAX_BATCH, int(PASS_CPU / self.cost)))

    def measured(self, result: PassResult) -> None:
        # A new campaign's one first message says little (its cost is mostly the
        # pass's fixed part); a pass as large as the cap allows is always measured, or
        # one costly pass would leave the campaign in passes too small to ever count.
        if result.read >= min(MEASURED_FROM, self.most()):
            cost = result.cpu / result.read
            self.cost = cost if self.cost is None else (self.cost + cost) / 2


class CampaignRunner:
    def __init__(
        self,
        store: Store,
        messages: Messages,
        renderer: Renderer,
        clock: Clock,
        *,
        horizon: float,
        cpu_time: Callable[[], float] = time.thread_time,
        shared: SharedFeed | None = None,
    ) -> None:
        """`horizon`: how far ahead a message may expire (`queue.max_schedule_days`);
        `cpu_time`: the calling thread's CPU clock (the writer's, around a pass);
        `shared`: on a cluster, the campaigns every node shares (None: the store's)."""
        self._shared = shared
        self._cpu_time = cpu_time
        self._store = store
        self._messages = messages
        self._renderer = renderer
        self._clock = clock
        self._horizon = horizon
        self._wake = asyncio.Event()
        self._buckets: dict[str, _Bucket] = {}

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Steps until cancelled (the gateway's stop cancels it with its other loops)."""
        while True:
            self._wake.clear()
            try:
                delay = await self.step()
            except Exception as e:  # the store is struggling: try again, not never
                log.error("campaign_step_failed", error=exception_summary(e))
                delay = RETRY
            await wait_event(self._clock, self._wake, min(max(delay, MIN_SLEEP), MAX_SLEEP))

    async def step(self) -> float:
        """Start, end and feed the live campaigns as of now; seconds until the next step
        has something to do (at most `MAX_SLEEP`)."""
        now = self._clock.time()
        campaigns = await self._live()
        delay = MAX_SLEEP
        for campaign in campaigns:
            delay = min(delay, await self._step_one(campaign, now))
        for gone in set(self._buckets) - {c.id for c in campaigns}:
            del self._buckets[gone]
        return delay

    async def _step_one(self, campaign: Campaign, now: float) -> float:
        spec = campaign.spec
        if campaign.state is CampaignState.SCHEDULED:
            if spec.starts_at is not None and now < spec.starts_at:
                return spec.starts_at - now
            await self._move(campaign, CampaignState.SCHEDULED, CampaignState.RUNNING, now)
        if spec.ends_at is not None and now >= spec.ends_at:
            await self._move(campaign, CampaignState.RUNNING, CampaignState.ENDED, now)
            return MAX_SLEEP
        bucket = self._buckets.get(campaign.id)
        if bucket is None:
            bucket = self._buckets[campaign.id] = _Bucket(1.0, now)
        capacity = max(1.0, campaign.rate * BURST)
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.at) * campaign.rate)
        bucket.at = now
        least = 1.0
        for _ in range(MAX_PASSES):
            if not bucket.fresh:
                least = min(float(bucket.most()), max(1.0, campaign.rate * PASS_PERIOD))
            if bucket.tokens < least:
                break
            result = await self.run_pass(campaign, min(bucket.most(), int(bucket.tokens)))
            if result.allowed:
                bucket.fresh = False  # until one message went: blocked ones do not count
            bucket.measured(result)
            bucket.tokens -= result.allowed
            if result.state is not CampaignState.RUNNING:
                return MAX_SLEEP
        else:
            return 0.0  # blocked recipients cost no tokens: go on after other writes
        wait = (least - bucket.tokens) / campaign.rate
        if spec.ends_at is not None:
            wait = min(wait, spec.ends_at - now)
        return wait

    async def _live(self) -> list[Campaign]:
        if self._shared is not None:
            return await self._shared.live()
        cipher = cipher_of(self._store)
        return [sql.campaign_of(cipher, r) for r in await self._store.reader.all(sql.LIVE_SQL)]

    async def _move(
        self, campaign: Campaign, source: CampaignState, target: CampaignState, now: float
    ) -> None:
        if self._shared is not None:
            moved = await self._shared.move(campaign.id, source, target, now)
        else:
            moved = await self._store.writer.run(
                lambda c: sql.move(c, campaign.id, (source,), target, now)
            )
        if moved:
            log.info("campaign_state", campaign=campaign.id, state=target.value)

    async def run_pass(self, campaign: Campaign, limit: int) -> PassResult:
        """Up to `limit` recipients of a running campaign, in one transaction; the
        messages go to the scheduler once it committed."""
        now = self._clock.time()
        result: PassResult
        if self._shared is not None:
            result = await self._shared.run_pass(campaign, limit, now)
        else:
            result = await self._store.writer.run_after_others(
                lambda conn: self._pass(conn, campaign, limit, now)
            )
        self._messages.hand_over(result.prepared)
        if result.outcomes:
            log.info("campaign_pass", campaign=campaign.id, **dict(result.outcomes))
        if result.state is not None and result.state.done:
            log.info("campaign_state", campaign=campaign.id, state=result.state.value)
        return result

    def _pass(
        self, conn: sqlite3.Connection, campaign: Campaign, limit: int, now: float
    ) -> PassResult:
        # No savepoint per recipient: any exception fails the writer's job, whose own
        # savepoint takes the whole pass back (cursor, rows and messages together).
        started = self._cpu_time()
        result = PassResult()
        found = sql.state_of(conn, campaign.id)
        if found is None or found[0] is not CampaignState.RUNNING:
            result.state = None if found is None else found[0]
            return result
        result.state = CampaignState.RUNNING
        query, params = audience_query(campaign.spec.audience)
        idxs = [bytes(r[0]) for r in conn.execute(query, [*params, found[1], limit]).fetchall()]
        before = sql.handled_before(conn, campaign.id, idxs)
        contacts = sql.contacts_of(conn, [i for i in idxs if i not in before])
        handled: list[sql.Handled] = []
        asked: list[tuple[bytes, SendRequest, str | None]] = []  # idx, request, variant
        for idx in idxs:
            if idx in before:
                result.outcomes["handled_before"] += 1
                continue
            request = self._request(conn, campaign, idx, contacts.get(idx), now)
            if isinstance(request, sql.Handled):
                handled.append(request)
            else:
                asked.append((idx, *request))
        accepted = self._messages.accept_many_within(
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
        sql.record_recipients(conn, campaign.id, handled, now)
        if idxs:
            sql.set_cursor(conn, campaign.id, idxs[-1], now)
        if len(idxs) < limit:
            sql.move(conn, campaign.id, (CampaignState.RUNNING,), CampaignState.FINISHED, now)
            result.state = CampaignState.FINISHED
        result.read, result.cpu = len(idxs), self._cpu_time() - started
        return result

    def _request(
        self,
        conn: sqlite3.Connection,
        campaign: Campaign,
        idx: bytes,
        contact: sqlite3.Row | None,
        now: float,
    ) -> sql.Handled | tuple[SendRequest, str | None]:
        """The message to one contact and its variant, or why it gets none."""
        if contact is None:
            return sql.Handled(idx, "skipped:no_number")
        number = cipher_of(self._store).decrypt(contact[1], contact_row_id(idx), "number")
        try:
            body, variant = self._text(conn, campaign, idx, contact[2])
        except RenderRefused:
            return sql.Handled(idx, "skipped:render_refused")
        except TemplateMissing:
            return sql.Handled(idx, "skipped:template_missing")
        return campaign_request(campaign, number, body, now, self._horizon), variant

    def _text(
        self, conn: sqlite3.Connection, campaign: Campaign, idx: bytes, language: str | None
    ) -> tuple[str, str | None]:
        template = campaign.spec.template or ""

        def render(lang: str | None, values: Mapping[str, str], variant: str | None) -> Rendered:
            return self._renderer.render(conn, template, lang, values, variant=variant)

        return campaign_text(campaign, idx, language, render)


# A recipient's language, the campaign's values and the chosen variant: its rendering
# (`TemplateMissing` when there is none).
RenderFor = Callable[[str | None, Mapping[str, str], str | None], Rendered]


def campaign_text(
    campaign: Campaign, idx: bytes, language: str | None, render: RenderFor
) -> tuple[str, str | None]:
    """One recipient's text and variant: the campaign's text, or its template rendered
    in the recipient's language, the variant chosen by the split on the campaign and
    recipient. The same on either backend (a cluster's pass renders from the shared
    templates)."""
    spec = campaign.spec
    if spec.template is None:
        return spec.text or "", None
    key = f"{campaign.id}:{idx.hex()}"
    chosen = None
    if spec.split:
        weights = [Variant(s.name, "", s.weight) for s in spec.split]
        chosen = choose(spec.template, weights, key).name
    rendered = render(language, {**dict(spec.variables), "split_key": key}, chosen)
    return rendered.text, rendered.variant
