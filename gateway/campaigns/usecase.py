"""Campaigns and compose as the front ends see them: create, list, read with progress,
preview, start, pause, resume, cancel; and compose-and-send (one number or an audience).

The API (`/api/v1/campaigns`), the panel (Campaigns and Compose pages) call these with a
`Caller`. Reading and previewing need a signed-in caller (`read`); creating and every
action need one who may send on behalf of the whole gateway: an `admin` token, or a
panel user who acts (admin, operator). Every change is audited (`backend.py`: the
node's store, or on a cluster the tables every node shares). Messages are only ever
queued by the runner (`gateway.campaigns.runner`) or, for one number, by
`Messages.accept`: both go through the send policy. A template is read from the
templates every node renders from (`templates`: the shared PostgreSQL's on a cluster).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from drivers.clock import Clock
from gateway.campaigns import preview as pv
from gateway.campaigns import store as sql
from gateway.campaigns.backend import CampaignStore, LocalCampaigns
from gateway.campaigns.model import (
    Campaign,
    CampaignSpec,
    CampaignState,
    Judgement,
    Progress,
)
from gateway.campaigns.progress_cache import ProgressCache
from gateway.campaigns.settings import CampaignsConfig
from gateway.consent.purposes import CLIENT_PURPOSES, Purpose
from gateway.contacts.audience import AudienceSpec
from gateway.errors import ApiError
from gateway.intake import Accepted, Intake, SendRequest
from gateway.scheduler import Scheduler
from gateway.store.audit_log import AuditTrail
from gateway.store.store import Store
from gateway.templates import store as templates
from gateway.templates.renderer import TemplateRenderer, fallback_chain
from gateway.templates.store import TemplateSource
from gateway.usecases.caller import Caller
from gateway.usecases.messages import Messages

PREVIEW_LIMIT = 5000  # recipients a preview judges (a start judges until one may go)
MAX_TEXT = 1000
PRIORITIES = ("critical", "high", "normal", "bulk")
TARGETS = {
    "pause": CampaignState.PAUSED,
    "resume": CampaignState.RUNNING,
    "cancel": CampaignState.CANCELLED,
}


@dataclass(frozen=True, slots=True)
class Preview:
    judgement: Judgement
    texts: pv.Texts
    priority: str


@dataclass(frozen=True, slots=True)
class Acted:
    campaign: Campaign
    changed: bool  # False: it was already in the target state


@dataclass(frozen=True, slots=True)
class ComposeRequest:
    """One number (`to`) or an audience; a template or free text. `send_at`: Unix
    seconds, None for now."""

    purpose: str
    to: str | None = None
    audience: AudienceSpec | None = None
    template: str | None = None
    text: str | None = None
    variables: tuple[tuple[str, str], ...] = ()
    priority: str | None = None
    send_at: float | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Composed:
    message: Accepted | None  # one number
    campaign: Campaign | None  # an audience: a campaign started at once


def _invalid(field: str, code: str, what: str) -> ApiError:
    return ApiError(422, code, f"{field}: {what}", field=field)


def not_found() -> ApiError:
    return ApiError(404, "not_found", "no campaign with this id")


class Campaigns:
    def __init__(
        self,
        *,
        config: CampaignsConfig,
        store: Store,
        intake: Intake,
        messages: Messages,
        scheduler: Scheduler,
        renderer: TemplateRenderer,
        clock: Clock,
        audit: AuditTrail,
        max_segments: int,
        horizon: float,
        allow_drug_names: bool,
        wake: Callable[[], None],
        backend: CampaignStore | None = None,
        templates: TemplateSource | None = None,
    ) -> None:
        """`backend`: where campaigns are kept (None: this node's store; on a cluster
        the shared tables, `gateway/cluster/campaigns.py`); `templates`: where a named
        template is read (None: this node's store, on the preview's snapshot)."""
        self._backend = backend or LocalCampaigns(store, audit)
        self._config = config
        self._store = store
        self._intake = intake
        self._messages = messages
        self._scheduler = scheduler
        self._renderer = renderer
        self._clock = clock
        self._audit = audit
        self._max_segments = max_segments
        self._horizon = horizon
        self._allow_drugs = allow_drug_names
        self._wake = wake
        self._templates = templates
        self._read = pv.ReadOnly(store.path)
        self._progress = ProgressCache(clock)

    # -- reading -----------------------------------------------------------------------

    async def all(self, caller: Caller, limit: int = 200) -> list[Campaign]:
        return await self._backend.all(limit)

    async def get(self, caller: Caller, campaign_id: str) -> Campaign:
        found = await self._backend.get(campaign_id)
        if found is None:
            raise not_found()
        return found

    async def choices(self, caller: Caller) -> tuple[list[tuple[str, str]], list[str]]:
        """What a form offers: the contact groups (id, name) and the template names."""
        return await self._backend.choices()

    async def progress(self, caller: Caller, campaign: Campaign) -> Progress:
        """The campaign's counts, at most a second old (longer, up to ten, when counting
        a large campaign is slow: `progress_cache`), and counted again when its state
        has changed."""
        counted = await self._progress.get(
            campaign.id, campaign.state, lambda: self._backend.count(campaign)
        )
        return replace(counted, audience_size=campaign.audience_size)

    # -- creating ----------------------------------------------------------------------

    async def create(self, caller: Caller, spec: CampaignSpec) -> Campaign:
        """Save a campaign as a draft (nothing is queued until it is started)."""
        self._require_act(caller)
        now = self._clock.time()
        priority, rate = await self._check(spec, now)
        campaign_id = sql.new_id()
        return await self._backend.create(campaign_id, spec, priority, rate, caller.actor, now)

    async def _check(self, spec: CampaignSpec, now: float) -> tuple[str, float]:
        """The class and rate the campaign takes; `ApiError` for what cannot be run."""
        if not spec.name.strip() or len(spec.name) > 80:
            raise _invalid("name", "invalid_field", "1 to 80 characters")
        if spec.purpose not in {p.value for p in CLIENT_PURPOSES}:
            raise _invalid("purpose", "invalid_field", "not one of the allowed values")
        purpose = Purpose(spec.purpose)
        named = spec.priority
        if named is None and purpose is not Purpose.EMERGENCY:
            named = "bulk"
        priority = self._intake.policy.priority_of(purpose, named).label
        if (spec.template is None) == (spec.text is None):
            raise _invalid("template", "template_or_text", "give a template or a text, not both")
        if spec.text is not None:
            if not spec.text.strip() or len(spec.text) > MAX_TEXT:
                raise _invalid("text", "invalid_field", f"1 to {MAX_TEXT} characters")
            found = await self._texts(spec.template, spec.text, spec.purpose, spec.variables)
            if found.problems:
                first = found.problems[0]
                raise _invalid("text", f"template_{first.rule}", first.message)
            if found.texts[0].encoding is None:
                raise _invalid("text", "body_too_long", "longer than queue.max_segments allow")
        elif spec.template is not None:
            variants = await self._variants(spec.template)
            for s in spec.split:
                if s.name not in variants:
                    raise _invalid("split", "unknown_variant", "no such variant of the template")
        if spec.split and spec.template is None:
            raise _invalid("split", "invalid_field", "a split needs a template with variants")
        if spec.variables and spec.template is None:
            raise _invalid("variables", "invalid_field", "values fill a template, not a text")
        if spec.starts_at is not None and spec.starts_at < now - 300:
            raise _invalid("starts_at", "invalid_field", "must not lie in the past")
        if spec.ends_at is not None and spec.ends_at <= max(now, spec.starts_at or now):
            raise _invalid("ends_at", "end_before_start", "must be after the start and now")
        rate = self._config.default_rate if spec.rate is None else spec.rate
        if not 0 < rate <= self._config.max_rate or math.isnan(rate):
            raise _invalid(
                "rate",
                "rate_too_high",
                f"from above 0 to campaigns.max_rate ({self._config.max_rate:g}) a second",
            )
        return priority, rate

    async def _variants(self, name: str) -> set[str | None]:
        """The variant names of the template's active versions; 422 if it has none."""
        if self._templates is not None:
            found = [v for v in await self._templates.versions(name) if v.active]
        else:
            rows = await self._store.reader.all(
                f"SELECT {templates.COLUMNS}{templates.FROM}"
                " WHERE t.name = ? AND h.active = t.version",
                (name,),
            )
            found = [templates.version_of(r) for r in rows]
        if not found:
            raise _invalid("template", "unknown_template", "no active template with this name")
        return {v.name for version in found for v in version.draft.variants}

    async def _texts(
        self,
        template: str | None,
        text: str | None,
        purpose: str,
        variables: tuple[tuple[str, str], ...],
    ) -> pv.Texts:
        if template is not None and self._templates is not None:
            return pv.template_texts(
                await self._active_in_site_language(self._templates, template),
                self._renderer,
                dict(variables),
                self._max_segments,
            )
        return await self._read.run(
            lambda conn: pv.texts(
                conn,
                self._renderer,
                template=template,
                text=text,
                purpose=purpose,
                variables=dict(variables),
                max_segments=self._max_segments,
                allow_drug_names=self._allow_drugs,
            )
        )

    # -- preview -----------------------------------------------------------------------

    async def preview(
        self, caller: Caller, spec: CampaignSpec, *, to: str | None = None
    ) -> Preview:
        """What sending `spec` now would do: the texts (encoding, segments, lint) and
        the policy's verdicts on its audience (or on the one number `to`), by reason.
        Nothing is stored."""
        now = self._clock.time()
        purpose = Purpose(spec.purpose) if spec.purpose in Purpose.__members__.values() else None
        if purpose is None or purpose is Purpose.COMPLIANCE:
            raise _invalid("purpose", "invalid_field", "not one of the allowed values")
        named = spec.priority or (None if purpose is Purpose.EMERGENCY else "bulk")
        priority = self._intake.policy.priority_of(purpose, named).label
        found = await self._texts(spec.template, spec.text, spec.purpose, spec.variables)
        judgement = await self._judge(spec, priority, found.sample, now, to=to)
        return Preview(judgement, found, priority)

    async def _judge(
        self,
        spec: CampaignSpec,
        priority: str,
        body: str,
        now: float,
        *,
        to: str | None = None,
        until_allowed: bool = False,
    ) -> Judgement:
        # Judged at its start, if the queue could hold a message that long (its send_at);
        # consent and opt-outs, what a start is refused for, do not depend on the time.
        start = spec.starts_at
        if start is not None and not now < start <= now + self._horizon:
            start = None
        request = SendRequest(
            to=to or "0",
            body=body,
            priority=priority,  # type: ignore[arg-type]  # a class name
            purpose=spec.purpose,  # type: ignore[arg-type]  # checked by the caller
            send_at=pv.moment(start),
        )
        return await self._backend.judge(
            self._intake,
            request,
            now,
            audience=None if to is not None else spec.audience,
            limit=PREVIEW_LIMIT if not until_allowed else 10**9,
            until_allowed=until_allowed,
        )

    # -- acting ------------------------------------------------------------------------

    async def start(self, caller: Caller, campaign_id: str) -> Campaign:
        """Draft → running (or scheduled, if its start lies ahead). Refused with
        `no_consenting_recipients` when the policy would let no recipient through,
        naming how many it blocks, by reason."""
        self._require_act(caller)
        campaign = await self.get(caller, campaign_id)
        if campaign.state is not CampaignState.DRAFT:
            raise self._wrong_state("start", campaign.state)
        now = self._clock.time()
        found = await self._texts(
            campaign.spec.template,
            campaign.spec.text,
            campaign.spec.purpose,
            campaign.spec.variables,
        )
        judgement = await self._judge(
            campaign.spec, campaign.priority, found.sample, now, until_allowed=True
        )
        if judgement.allowed == 0:
            raise ApiError(422, "no_consenting_recipients", _none_allowed(judgement))
        ahead = campaign.spec.starts_at is not None and campaign.spec.starts_at > now
        target = CampaignState.SCHEDULED if ahead else CampaignState.RUNNING
        size = judgement.audience_size
        started = await self._backend.start(campaign_id, target, now, size, caller.actor)
        if started is None:  # another start, or a cancel, got there first
            raise self._wrong_state("start", (await self.get(caller, campaign_id)).state)
        self._wake()
        return started

    async def act(self, caller: Caller, campaign_id: str, action: str) -> Acted:
        """`pause`, `resume` or `cancel`, each one atomic step against the runner's
        passes; a cancel also withdraws the campaign's messages not yet sending. Doing
        what is already done answers `changed: False`; anything else not allowed from
        the current state is 409 `invalid_state`."""
        self._require_act(caller)
        target = TARGETS[action]
        now = self._clock.time()
        campaign, changed, withdrawn = await self._backend.act(
            campaign_id, action, target, now, caller.actor
        )
        if campaign is None:
            raise not_found()
        self._progress.forget(campaign_id)
        for message_id in withdrawn:
            self._scheduler.forget(message_id)
        resumed_ahead = action == "resume" and campaign.state is CampaignState.SCHEDULED
        if not changed and campaign.state is not target and not resumed_ahead:
            raise self._wrong_state(action, campaign.state)
        if changed and action == "resume":
            self._wake()
        return Acted(campaign, changed)

    # -- compose -----------------------------------------------------------------------

    async def compose(self, caller: Caller, req: ComposeRequest) -> Composed:
        """One number: a message through `Messages.accept` (a template rendered in the
        site's language); an audience: a campaign, started at once
        (or at `send_at`). Audited either way."""
        self._require_act(caller)
        if (req.to is None) == (req.audience is None):
            raise _invalid("to", "recipient_required", "give one number or an audience")
        if req.audience is not None:
            stamp = self._clock.time()
            spec = CampaignSpec(
                name=req.name or f"Compose {datetime.fromtimestamp(stamp, UTC):%Y-%m-%d %H:%M} UTC",
                audience=req.audience,
                purpose=req.purpose,
                template=req.template,
                text=req.text,
                variables=req.variables,
                priority=req.priority,
                starts_at=req.send_at,
            )
            campaign = await self.create(caller, spec)
            try:
                return Composed(None, await self.start(caller, campaign.id))
            except ApiError:
                await self.act(caller, campaign.id, "cancel")  # no draft left behind
                raise
        assert req.to is not None
        body = await self._single_text(req)
        request = SendRequest(
            to=req.to,
            body=body,
            priority=req.priority,  # type: ignore[arg-type]  # checked by the accept
            purpose=req.purpose,  # type: ignore[arg-type]
            send_at=pv.moment(req.send_at),
            category="compose",
        )
        accepted = await self._messages.accept(caller, request)
        await self._audit.record(
            caller.actor, "message_composed", "message", accepted.id, status=accepted.status
        )
        return Composed(accepted, None)

    async def _single_text(self, req: ComposeRequest) -> str:
        if (req.template is None) == (req.text is None):
            raise _invalid("template", "template_or_text", "give a template or a text, not both")
        found = await self._texts(req.template, req.text, req.purpose, req.variables)
        if req.text is not None and found.problems:
            first = found.problems[0]
            raise _invalid("text", f"template_{first.rule}", first.message)
        if req.template is not None:
            await self._variants(req.template)
            sample = next((t.text for t in found.texts if t.text), None)
            if sample is None:
                first = found.problems[0]
                raise _invalid("template", "render_refused", first.message)
            return sample
        return req.text or ""

    # -- helpers -----------------------------------------------------------------------

    async def _active_in_site_language(
        self, source: TemplateSource, name: str
    ) -> templates.Version | None:
        for tag in fallback_chain(None, self._renderer.site_language):
            found = await source.active(name, tag)
            if found is not None:
                return found
        return None

    @staticmethod
    def _require_act(caller: Caller) -> None:
        if not (caller.may_send and caller.sees_all):
            raise ApiError(403, "forbidden", "campaigns need the 'admin' scope or an acting role")

    @staticmethod
    def _wrong_state(action: str, state: CampaignState) -> ApiError:
        return ApiError(409, "invalid_state", f"a {state.value} campaign cannot {action}")


def _none_allowed(j: Judgement) -> str:
    reasons = {**j.blocked, **{f"skipped:{k}": v for k, v in j.skipped.items()}}
    detail = ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items())) or "no recipient"
    total = sum(reasons.values())
    return (
        f"no recipient of this audience may receive it now ({total} of {j.audience_size}"
        f" blocked or skipped; {detail})"
    )
