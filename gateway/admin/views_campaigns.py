"""The Campaigns and Compose pages (admin, operator).

Campaigns: the list, a new campaign (audience by groups, tags and attributes; purpose,
class, a template with a split over its variants or a free text, start, end, rate),
and a campaign's page whose progress panel polls itself while the campaign is live,
with pause, resume and cancel (an emergency campaign shows its stop first and large).
Compose: one typed number or an audience, a template or free text, purpose, class and
a send time. Both forms preview as they are typed (`hx-post` to the preview, no
script of our own): encoding, segments, recipients, and how many the send policy
would block and why, before anything is queued.

Everything goes through `gw.campaigns` with the signed-in user as the `Caller`; it
audits. A number is typed into a POST form, never put in a URL, and never shown back
except in the field it was typed in.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from gateway.admin.panel import user_caller
from gateway.admin.render import redirect, render
from gateway.admin.routing import OPERATORS, Handler, PanelRoute
from gateway.app import Gateway
from gateway.campaigns.model import Campaign, CampaignSpec, Split
from gateway.campaigns.usecase import Campaigns, ComposeRequest
from gateway.consent.purposes import CLIENT_PURPOSES
from gateway.contacts.audience import AudienceSpec
from gateway.errors import ApiError
from gateway.web.context import GATEWAY

FormData = MultiDictProxy[str | bytes | Any]
PRIORITIES = ("", "critical", "high", "normal", "bulk")
CAMPAIGN_ID = "{campaign_id:cmp_[0-9a-f]{16}}"
ACTIONS = ("start", "pause", "resume", "cancel")
FIELDS = ("name", "tags", "languages", "age_bands", "clinics", "preferences", "purpose",
          "priority", "template", "text", "split", "starts_at", "ends_at", "rate", "to",
          "send_at", "recipient")  # fmt: skip


def _campaigns(request: web.Request) -> Campaigns:
    gw: Gateway = request.app[GATEWAY]
    return gw.campaigns


def _problem(e: ApiError) -> str:
    return e.message[:1].upper() + e.message[1:].rstrip(".") + "."


def _text(form: FormData, name: str) -> str:
    return str(form.get(name, "")).strip()


def _keys(form: FormData, name: str) -> list[str]:
    return [p.strip() for p in _text(form, name).split(",") if p.strip()]


def _bad(field: str, what: str) -> ApiError:
    return ApiError(422, "invalid_field", f"{field}: {what}", field=field)


def audience_of(form: FormData) -> AudienceSpec:
    import msgspec

    raw = {
        "groups": [str(g) for g in form.getall("groups", []) if str(g)],
        "tags": _keys(form, "tags"),
        "languages": _keys(form, "languages"),
        "age_bands": _keys(form, "age_bands"),
        "clinics": _keys(form, "clinics"),
        "preferences": _keys(form, "preferences"),
    }
    try:
        return msgspec.convert(raw, AudienceSpec)
    except msgspec.ValidationError:
        raise _bad("audience", "a group, tag or attribute is letters, digits, _ . : -"
                   " (at most 64)") from None  # fmt: skip


def _utc(form: FormData, name: str) -> float | None:
    """A `datetime-local` field, read as UTC (the form says so)."""
    text = _text(form, name)
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise _bad(name, "a date and time") from None


def _split(text: str) -> tuple[Split, ...]:
    """`A:3, B:1` (a name alone weighs 1)."""
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, _, weight = part.partition(":")
        try:
            w = int(weight) if weight.strip() else 1
        except ValueError:
            raise _bad("split", "write it as name:weight, ...") from None
        if not 1 <= w <= 1000 or not name.strip():
            raise _bad("split", "a weight is from 1 to 1000")
        out.append(Split(name.strip(), w))
    return tuple(out)


def spec_of(form: FormData) -> CampaignSpec:
    """A campaign from the form; the use case checks the rest."""
    template, text = _text(form, "template") or None, _text(form, "text") or None
    if template is not None and text is not None:
        text = None if form.get("source") != "text" else text
        template = None if text is not None else template
    rate = _text(form, "rate")
    try:
        rate_value = float(rate) if rate else None
    except ValueError:
        raise _bad("rate", "messages a second, a number") from None
    priority = _text(form, "priority")
    return CampaignSpec(
        name=_text(form, "name") or "Campaign",
        audience=audience_of(form),
        purpose=_text(form, "purpose") or "informational",
        template=template,
        text=text,
        split=_split(_text(form, "split")) if template else (),
        priority=priority if priority in PRIORITIES[1:] else None,
        starts_at=_utc(form, "starts_at"),
        ends_at=_utc(form, "ends_at"),
        rate=rate_value,
    )


def form_of(typed: FormData | None = None) -> dict[str, Any]:
    if typed is None:
        return {**dict.fromkeys(FIELDS, ""), "purpose": "informational", "groups": [],
                "recipient": "audience", "source": "template"}  # fmt: skip
    return {**{k: _text(typed, k) for k in FIELDS}, "groups": typed.getall("groups", []),
            "source": _text(typed, "source") or "template"}  # fmt: skip


async def _form_page(
    request: web.Request, template: str, status: int = 200, **context: Any
) -> web.Response:
    groups, names = await _campaigns(request).choices(user_caller(request))
    context.setdefault("problem", None)
    if "form" not in context:  # no template to offer (none yet, or a cluster node): a text
        context["form"] = {**form_of(), "source": "template" if names else "text"}
    return render(request, template, status=status, groups=groups, templates=names,
                  purposes=[p.value for p in CLIENT_PURPOSES], priorities=PRIORITIES,
                  **context)  # fmt: skip


# -- campaigns ---------------------------------------------------------------------------


async def campaigns_page(request: web.Request) -> web.StreamResponse:
    found = await _campaigns(request).all(user_caller(request))
    return render(request, "campaigns.html", campaigns=found, notice=request.query.get("notice"))


async def new_page(request: web.Request) -> web.StreamResponse:
    return await _form_page(request, "campaign_new.html")


async def create(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    caller, campaigns = user_caller(request), _campaigns(request)
    try:
        made = await campaigns.create(caller, spec_of(form))
    except ApiError as e:
        return await _form_page(request, "campaign_new.html", 422, problem=_problem(e),
                                form=form_of(form))  # fmt: skip
    if form.get("then") == "start":
        try:
            await campaigns.start(caller, made.id)
        except ApiError as e:
            return await _campaign(request, made.id, 422, problem=_problem(e))
    return redirect(str(request.app.router["campaign"].url_for(campaign_id=made.id)))


async def _campaign(
    request: web.Request, campaign_id: str, status: int = 200, problem: str | None = None
) -> web.Response:
    campaigns, caller = _campaigns(request), user_caller(request)
    campaign = await campaigns.get(caller, campaign_id)
    progress = await campaigns.progress(caller, campaign)
    return render(request, "campaign.html", status=status, campaign=campaign,
                  progress=progress, problem=problem, notice=request.query.get("notice"),
                  may_act=caller.may_send)  # fmt: skip


async def campaign_page(request: web.Request) -> web.StreamResponse:
    try:
        return await _campaign(request, request.match_info["campaign_id"])
    except ApiError as e:
        return render(request, "campaigns.html", status=e.status, campaigns=[],
                      notice=None, problem=_problem(e))  # fmt: skip


async def progress_fragment(request: web.Request) -> web.StreamResponse:
    campaigns, caller = _campaigns(request), user_caller(request)
    campaign = await campaigns.get(caller, request.match_info["campaign_id"])
    progress = await campaigns.progress(caller, campaign)
    return render(request, "_campaign_progress.html", campaign=campaign, progress=progress)


def _acting(action: str) -> Handler:
    async def act(request: web.Request) -> web.StreamResponse:
        campaign_id = request.match_info["campaign_id"]
        campaigns, caller = _campaigns(request), user_caller(request)
        try:
            if action == "start":
                await campaigns.start(caller, campaign_id)
            else:
                await campaigns.act(caller, campaign_id, action)
        except ApiError as e:
            return await _campaign(request, campaign_id, e.status, problem=_problem(e))
        url = request.app.router["campaign"].url_for(campaign_id=campaign_id)
        return redirect(f"{url}?notice={action}")

    return act


# -- preview and compose -----------------------------------------------------------------


async def preview(request: web.Request) -> web.StreamResponse:
    """The live preview of either form (compose or new campaign)."""
    form = await request.post()
    to = _text(form, "to") if form.get("recipient") == "number" else None
    try:
        spec = spec_of(form)
        if to == "":
            raise _bad("to", "type a number")
        if spec.template is None and spec.text is None:
            raise _bad("template", "choose a template or type a text")
        found = await _campaigns(request).preview(user_caller(request), spec, to=to)
    except ApiError as e:
        return render(request, "_campaign_preview.html", preview=None, problem=_problem(e))
    return render(request, "_campaign_preview.html", preview=found, problem=None,
                  single=to is not None)  # fmt: skip


async def compose_page(request: web.Request) -> web.StreamResponse:
    return await _form_page(request, "compose.html", sent=None)


async def compose(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    single = form.get("recipient") == "number"
    try:
        spec = spec_of(form)
        req = ComposeRequest(
            purpose=spec.purpose,
            to=_text(form, "to") if single else None,
            audience=None if single else spec.audience,
            template=spec.template,
            text=spec.text,
            priority=spec.priority,
            send_at=_utc(form, "send_at"),
            name=_text(form, "name") or None,
        )
        done = await _campaigns(request).compose(user_caller(request), req)
    except ApiError as e:
        return await _form_page(request, "compose.html", 422, problem=_problem(e),
                                form=form_of(form), sent=None)  # fmt: skip
    if done.campaign is not None:
        return redirect(_campaign_url(request, done.campaign))
    return await _form_page(request, "compose.html", sent=done.message)


def _campaign_url(request: web.Request, campaign: Campaign) -> str:
    return str(request.app.router["campaign"].url_for(campaign_id=campaign.id))


ROUTES: tuple[PanelRoute, ...] = (
    PanelRoute("GET", "/campaigns", campaigns_page, OPERATORS, False, "campaigns"),
    PanelRoute("GET", "/campaigns/new", new_page, OPERATORS, False, "campaign_new"),
    PanelRoute("POST", "/campaigns", create, OPERATORS, False, "campaign_create"),
    PanelRoute("POST", "/campaigns/preview", preview, OPERATORS, True, "campaign_preview"),
    PanelRoute("GET", f"/campaigns/{CAMPAIGN_ID}", campaign_page, OPERATORS, False, "campaign"),
    PanelRoute("GET", f"/campaigns/{CAMPAIGN_ID}/progress", progress_fragment, OPERATORS,
               False, "campaign_progress"),
    *(PanelRoute("POST", f"/campaigns/{CAMPAIGN_ID}/{action}", _acting(action), OPERATORS,
                 False, f"campaign_{action}") for action in ACTIONS),
    PanelRoute("GET", "/compose", compose_page, OPERATORS, True, "compose"),
    PanelRoute("POST", "/compose", compose, OPERATORS, True, "compose_send"),
)  # fmt: skip
