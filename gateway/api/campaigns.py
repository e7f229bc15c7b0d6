"""`/api/v1/campaigns`: campaigns over HTTP (issue 15, point 3).

Handlers translate to `gw.campaigns` (`gateway/campaigns/usecase.py`) and back.
Reading a campaign with its progress and the preview need `read`; creating, starting,
pausing, resuming and cancelling need `admin` (a campaign sends on the gateway's
behalf to many numbers), and are audited. A campaign's free text and variable values
are stored encrypted and never returned; numbers never appear at all.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from gateway.api.handlers import AUTH_RECORD
from gateway.api.openapi import Answer, Link
from gateway.campaigns.model import Campaign, CampaignSpec, Judgement, Progress, Split, Tally
from gateway.campaigns.usecase import Preview
from gateway.consent.settings import ClientPurpose
from gateway.contacts.audience import AudienceSpec
from gateway.errors import ApiError
from gateway.intake import decode_with
from gateway.usecases import Caller
from gateway.web.context import gateway_of, json_response
from gateway.web.formats import iso

CAMPAIGN_ID = "{campaign_id:cmp_[0-9a-f]{16}}"
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
VariantName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,16}$")]
Weight = Annotated[int, msgspec.Meta(ge=1, le=1000)]
VarName = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
Value = Annotated[str, msgspec.Meta(min_length=1, max_length=160)]
AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
Rate = Annotated[float, msgspec.Meta(gt=0, le=10_000, description="messages a second")]
Priority = Literal["critical", "high", "normal", "bulk"]


class CampaignRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A campaign, saved as a draft: `template` (with an optional `split` over its
    variants) or `text`, never both. `priority`: default bulk (emergency: critical)."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=80)]
    audience: Annotated[
        AudienceSpec,
        msgspec.Meta(
            description="groups or tags (either), then every attribute filter; all empty:"
            " every contact"
        ),
    ]
    purpose: ClientPurpose
    priority: Priority | None = None
    template: Label | None = None
    split: Annotated[
        dict[VariantName, Weight],
        msgspec.Meta(
            max_length=8,
            description="weights of the template's variants by name (default: the"
            " template's own); each recipient gets one, the same on every re-run",
        ),
    ] = {}
    variables: Annotated[
        dict[VarName, Value], msgspec.Meta(max_length=20, description="template values")
    ] = {}
    text: Text | None = None
    starts_at: AwareTime | None = None
    ends_at: AwareTime | None = None
    rate: Rate | None = None


class PreviewRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What a campaign would do now: to `audience`, or to the one number `to`."""

    purpose: ClientPurpose
    audience: AudienceSpec | None = None
    to: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    priority: Priority | None = None
    template: Label | None = None
    variables: dict[VarName, Value] = {}
    text: Text | None = None
    starts_at: AwareTime | None = None


class TallyView(msgspec.Struct, frozen=True):
    queued: int
    waiting: int
    sent: int
    delivered: int
    failed: int
    cancelled: int
    blocked: dict[str, int]
    skipped: dict[str, int]
    replies: int
    opt_outs: int


class ProgressView(msgspec.Struct, frozen=True):
    handled: int
    audience_size: int | None
    totals: TallyView
    variants: dict[str, TallyView]


class CampaignView(msgspec.Struct, frozen=True):
    id: str
    name: str
    state: str
    purpose: str
    priority: str
    template: str | None
    split: dict[str, int]
    variables: list[str]  # names only: values may name a clinic or a person
    has_text: bool
    audience: AudienceSpec
    starts_at: str | None
    ends_at: str | None
    rate: float
    audience_size: int | None
    created_by: str
    created_at: str | None
    started_at: str | None
    done_at: str | None


class CampaignList(msgspec.Struct, frozen=True):
    campaigns: list[CampaignView]


class CampaignDetail(msgspec.Struct, frozen=True):
    campaign: CampaignView
    progress: ProgressView


class Acted(msgspec.Struct, frozen=True):
    campaign: CampaignView
    changed: bool


class TextView(msgspec.Struct, frozen=True):
    variant: str | None
    characters: int
    encoding: str | None
    segments: int


class ProblemView(msgspec.Struct, frozen=True):
    rule: str
    message: str
    variant: str | None


class PreviewView(msgspec.Struct, frozen=True):
    audience_size: int
    judged: int
    allowed: int
    blocked: dict[str, int]
    skipped: dict[str, int]
    priority: str
    texts: list[TextView]
    problems: list[ProblemView]
    # of `allowed`, those the policy would hold for later, by reason (quiet_hours, ...)
    waiting: dict[str, int] = {}


_CAMPAIGN = msgspec.json.Decoder(CampaignRequest)
_PREVIEW = msgspec.json.Decoder(PreviewRequest)


def _decode(decoder: msgspec.json.Decoder[Any], raw: bytes, keyed: tuple[str, ...]) -> Any:
    """`decode_with`, and a refused key of a mapping reported on that field (msgspec
    says "at `key` in `$.split`", which the shared translation does not read)."""
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as e:
        _, found, where = str(e).rpartition(" - at `key` in `$.")
        field = where.rstrip("`")
        if found and field in keyed:
            raise ApiError(422, "invalid_field", f"{field}: a name that is not allowed",
                           field=field) from None  # fmt: skip
    except msgspec.DecodeError:
        pass
    try:
        return decode_with(decoder, raw)
    except ApiError as e:
        for name in keyed:
            if e.field and e.field.startswith(f"{name}["):
                raise ApiError(422, "invalid_field", f"{name}: a value out of range",
                               field=name) from None  # fmt: skip
        raise


def _caller(request: web.Request) -> Caller:
    return Caller.for_token(request[AUTH_RECORD])  # set by the guard


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def spec_of(body: CampaignRequest) -> CampaignSpec:
    return CampaignSpec(
        name=body.name,
        audience=body.audience,
        purpose=body.purpose,
        template=body.template,
        text=body.text,
        split=tuple(Split(n, w) for n, w in body.split.items()),
        variables=tuple(sorted(body.variables.items())),
        priority=body.priority,
        starts_at=_ts(body.starts_at),
        ends_at=_ts(body.ends_at),
        rate=body.rate,
    )


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else iso(seconds)


def view_of(c: Campaign) -> CampaignView:
    s = c.spec
    return CampaignView(
        c.id,
        s.name,
        c.state.value,
        s.purpose,
        c.priority,
        s.template,
        {x.name: x.weight for x in s.split},
        [name for name, _ in s.variables],
        s.text is not None,
        s.audience,
        _iso(s.starts_at),
        _iso(s.ends_at),
        c.rate,
        c.audience_size,
        c.created_by,
        _iso(c.created_at),
        _iso(c.started_at),
        _iso(c.done_at),
    )


def _tally(t: Tally) -> TallyView:
    return TallyView(t.queued, t.waiting, t.sent, t.delivered, t.failed, t.cancelled,
                     t.blocked, t.skipped, t.replies, t.opt_outs)  # fmt: skip


def progress_view(p: Progress) -> ProgressView:
    return ProgressView(p.handled, p.audience_size, _tally(p.campaign),
                        {k: _tally(v) for k, v in p.variants.items()})  # fmt: skip


def preview_view(p: Preview) -> PreviewView:
    j: Judgement = p.judgement
    return PreviewView(
        j.audience_size,
        j.judged,
        j.allowed,
        j.blocked,
        j.skipped,
        p.priority,
        [TextView(t.variant, t.characters, t.encoding, t.segments) for t in p.texts.texts],
        [ProblemView(x.rule, x.message, x.variant) for x in p.texts.problems],
        j.waiting,
    )


async def list_campaigns(request: web.Request) -> web.Response:
    found = await gateway_of(request).campaigns.all(_caller(request))
    return json_response(CampaignList([view_of(c) for c in found]))


async def post_campaign(request: web.Request) -> web.Response:
    body: CampaignRequest = _decode(_CAMPAIGN, await request.read(), ("split", "variables"))
    campaign = await gateway_of(request).campaigns.create(_caller(request), spec_of(body))
    return json_response(view_of(campaign), status=201)


async def get_campaign(request: web.Request) -> web.Response:
    campaigns = gateway_of(request).campaigns
    caller = _caller(request)
    campaign = await campaigns.get(caller, request.match_info["campaign_id"])
    progress = await campaigns.progress(caller, campaign)
    return json_response(CampaignDetail(view_of(campaign), progress_view(progress)))


async def preview(request: web.Request) -> web.Response:
    body: PreviewRequest = _decode(_PREVIEW, await request.read(), ("variables",))
    if (body.audience is None) == (body.to is None):
        raise ApiError(422, "recipient_required", "audience: give an audience or one number",
                       field="audience")  # fmt: skip
    if (body.template is None) == (body.text is None):
        raise ApiError(422, "template_or_text", "template: give a template or a text, not both",
                       field="template")  # fmt: skip
    spec = CampaignSpec(
        name="preview",
        audience=body.audience or AudienceSpec(),
        purpose=body.purpose,
        template=body.template,
        text=body.text,
        variables=tuple(sorted(body.variables.items())),
        priority=body.priority,
        starts_at=_ts(body.starts_at),
    )
    found = await gateway_of(request).campaigns.preview(_caller(request), spec, to=body.to)
    return json_response(preview_view(found))


async def start(request: web.Request) -> web.Response:
    campaign = await gateway_of(request).campaigns.start(
        _caller(request), request.match_info["campaign_id"]
    )
    return json_response(Acted(view_of(campaign), True))


def _action(action: str) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.Response:
        done = await gateway_of(request).campaigns.act(
            _caller(request), request.match_info["campaign_id"], action
        )
        return json_response(Acted(view_of(done.campaign), done.changed))

    handler.__name__ = f"{action}_campaign"
    return handler


_ON_CAMPAIGN = tuple(
    Link(name, operation, {"campaign_id": "$response.body#/id"})
    for name, operation in (
        ("GetCampaign", "getCampaignsCampaign_id"),
        ("StartCampaign", "postCampaignsCampaign_idStart"),
        ("PauseCampaign", "postCampaignsCampaign_idPause"),
        ("CancelCampaign", "postCampaignsCampaign_idCancel"),
    )
)
_NO_CAMPAIGN = Answer(404, "`not_found`: no campaign with this id")
_STATE = Answer(409, "`invalid_state`: not allowed from the campaign's state (e.g. resume a"
                " cancelled one)")  # fmt: skip
_INVALID = Answer(
    422,
    "`invalid_field` (`field` names it), `template_or_text`, `unknown_template`,"
    " `unknown_variant`, `template_<rule>` (the free text fails the template lint),"
    " `end_before_start`, `rate_too_high` (above campaigns.max_rate),"
    " `priority_not_allowed`",
)
_NONE_ALLOWED = Answer(
    422,
    "`no_consenting_recipients`: the send policy would let no recipient through now; the"
    " message counts them by reason (no_consent, opted_out, ...)",
)


def endpoints(endpoint: Callable[..., Any]) -> tuple[Any, ...]:
    """The rows of the server's endpoint table, built with its `Endpoint` class."""
    base = "/api/v1/campaigns"
    one = f"{base}/{CAMPAIGN_ID}"
    rows = [
        endpoint(
            "GET", base, list_campaigns, "read", "Campaigns, newest first", None, CampaignList
        ),
        endpoint(
            "POST",
            base,
            post_campaign,
            "admin",
            "Save a campaign as a draft; nothing is queued until it is started (audited)",
            CampaignRequest,
            CampaignView,
            201,
            answers=(_INVALID,),
        ),
        endpoint(
            "POST",
            f"{base}/preview",
            preview,
            "read",
            "What sending now would do, nothing queued: recipients, how many the send"
            " policy would block and why, encoding and segments of each text",
            PreviewRequest,
            PreviewView,
            answers=(
                Answer(
                    422,
                    "`recipient_required`, `template_or_text`,"
                    " `invalid_field`, `priority_not_allowed`",
                ),
            ),
        ),
        endpoint(
            "GET",
            one,
            get_campaign,
            "read",
            "A campaign with its live progress, in total and per variant",
            None,
            CampaignDetail,
            answers=(_NO_CAMPAIGN,),
        ),
        endpoint(
            "POST",
            f"{one}/start",
            start,
            "admin",
            "Start a draft: running now, or scheduled for its start (audited)",
            None,
            Acted,
            answers=(_NO_CAMPAIGN, _STATE, _NONE_ALLOWED),
        ),
    ]
    for action, summary in (
        ("pause", "Pause: nothing more is queued until it is resumed (audited)"),
        ("resume", "Resume a paused campaign (audited)"),
        ("cancel", "Cancel: nothing more is queued, and its messages not yet sending are"
                   " withdrawn (audited)"),
    ):  # fmt: skip
        rows.append(endpoint("POST", f"{one}/{action}", _action(action), "admin", summary,
                             None, Acted, answers=(_NO_CAMPAIGN, _STATE)))  # fmt: skip
    return tuple(rows)
