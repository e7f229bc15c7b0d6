"""The "Reminder rules" page (admin, operator): the rules, a preview of their due times
for a sample appointment, and (admin) create, edit (a new version) and deactivate.

Everything goes through `gw.reminder_rules` with the signed-in user as the `Caller`;
changes are audited there. Rules hold no personal data, so nothing here is masked.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from multidict import MultiDictProxy

from gateway.admin.panel import actor
from gateway.admin.render import redirect, render
from gateway.admin.routing import ADMIN, OPERATORS, PanelRoute, current_user
from gateway.app import Gateway
from gateway.consent import zones
from gateway.consent.purposes import CLIENT_PURPOSES
from gateway.errors import ApiError
from gateway.reminders import timing
from gateway.reminders.rules import RuleSpec, Variant
from gateway.reminders.usecase import Preview, ReminderRules, Sample
from gateway.usecases import Caller
from gateway.web.context import GATEWAY

PRIORITIES = ("", "critical", "high", "normal", "bulk")
SAMPLE = ("start", "time_zone", "booked_at", "service", "location", "appointment_type")
FormData = MultiDictProxy[str | bytes | Any]


def _rules(request: web.Request) -> ReminderRules:
    gw: Gateway = request.app[GATEWAY]
    return gw.reminder_rules


def _caller(request: web.Request) -> Caller:
    role = current_user(request).role
    return Caller.for_panel_user(actor(request), reads_phi=False, acts=role in ADMIN)


def _problem(e: ApiError) -> str:
    return e.message[:1].upper() + e.message[1:].rstrip(".") + "."


def _text(form: FormData, name: str) -> str:
    return str(form.get(name, "")).strip()


def _list(form: FormData, name: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in _text(form, name).split(",") if p.strip())


def _variants(text: str) -> tuple[Variant, ...]:
    """`a:3, b:1` (a name alone weighs 1)."""
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, _, weight = part.partition(":")
        try:
            w = float(weight) if weight.strip() else 1.0
        except ValueError:
            raise ApiError(422, "invalid_field", "variants: write them as name:weight, ...",
                           field="variants") from None  # fmt: skip
        if not 1 <= w <= 1000 or not name.strip():
            raise ApiError(422, "invalid_field", "variants: a weight is from 1 to 1000",
                           field="variants")  # fmt: skip
        out.append(Variant(name.strip(), w))
    return tuple(out)


def spec_of(form: FormData) -> RuleSpec:
    """A rule from the panel's form; the use case checks the rest."""
    name, template = _text(form, "name"), _text(form, "template")
    for field, value in (("name", name), ("template", template)):
        if not value or len(value) > 80:
            raise ApiError(422, "invalid_field", f"{field}: required, at most 80 characters",
                           field=field)  # fmt: skip
    priority = _text(form, "priority")
    return RuleSpec(
        name=name,
        lead=_text(form, "offset"),
        template=template,
        delivery_time=_text(form, "delivery_time") or None,
        services=_list(form, "services"),
        locations=_list(form, "locations"),
        appointment_types=_list(form, "appointment_types"),
        skip_if_booked_within=_text(form, "skip_if_booked_within") or None,
        purpose=_text(form, "purpose") or "appointment",
        priority=priority if priority in PRIORITIES[1:] else None,
        variants=_variants(_text(form, "variants")),
        active=form.get("active") == "on",
    )


FIELDS = ("name", "offset", "delivery_time", "services", "locations", "appointment_types",
          "skip_if_booked_within", "purpose", "priority", "template", "variants")  # fmt: skip
BLANK = {**dict.fromkeys(FIELDS, ""), "purpose": "appointment", "template": "reminder",
         "active": True}  # fmt: skip


def form_of(spec: RuleSpec | None = None, typed: FormData | None = None) -> dict[str, Any]:
    """The form's values: a rule's, or what was typed (shown back with the problem)."""
    if typed is not None:
        return {**{k: _text(typed, k) for k in FIELDS}, "active": typed.get("active") == "on"}
    if spec is None:
        return dict(BLANK)
    return {
        "name": spec.name,
        "offset": spec.lead,
        "delivery_time": spec.delivery_time or "",
        "services": ", ".join(spec.services),
        "locations": ", ".join(spec.locations),
        "appointment_types": ", ".join(spec.appointment_types),
        "skip_if_booked_within": spec.skip_if_booked_within or "",
        "purpose": spec.purpose,
        "priority": spec.priority or "",
        "template": spec.template,
        "variants": ", ".join(f"{v.name}:{v.weight:g}" for v in spec.variants),
        "active": spec.active,
    }


def _local(text: str, tz: ZoneInfo, field: str) -> float:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(422, "invalid_field", f"{field}: a date and time", field=field) from None
    return moment.replace(tzinfo=tz).timestamp() if moment.tzinfo is None else moment.timestamp()


async def _page(
    request: web.Request, status: int = 200, template: str = "reminder_rules.html", **context: Any
) -> web.Response:
    context.setdefault("problem", None)
    context.setdefault("preview", None)
    context.setdefault("form", form_of())
    context.setdefault("sample", {**dict.fromkeys(SAMPLE, ""), "time_zone": "UTC"})
    return render(
        request,
        template,
        status=status,
        rules=await _rules(request).list_rules(_caller(request)),
        purposes=[p.value for p in CLIENT_PURPOSES],
        priorities=PRIORITIES,
        may_edit=current_user(request).role in ADMIN,
        notice=request.query.get("notice"),
        **context,
    )


async def rules_page(request: web.Request) -> web.StreamResponse:
    return await _page(request)


async def create_rule(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    try:
        await _rules(request).create(_caller(request), spec_of(form))
    except ApiError as e:
        return await _page(request, 422, problem=_problem(e), form=form_of(typed=form))
    return redirect("/reminder-rules?notice=saved")


async def rule_page(request: web.Request) -> web.StreamResponse:
    try:
        rule, versions = await _rules(request).get(_caller(request), request.match_info["rule_id"])
    except ApiError as e:
        return await _page(request, 404, problem=_problem(e))
    return await _page(
        request, template="reminder_rule.html", rule=rule, versions=versions,
        form=form_of(rule.spec),
    )  # fmt: skip


async def update_rule(request: web.Request) -> web.StreamResponse:
    rule_id = request.match_info["rule_id"]
    form = await request.post()
    try:
        await _rules(request).update(_caller(request), rule_id, spec_of(form))
    except ApiError as e:
        rule, versions = await _rules(request).get(_caller(request), rule_id)
        return await _page(request, 422, template="reminder_rule.html", rule=rule,
                           versions=versions, problem=_problem(e),
                           form=form_of(typed=form))  # fmt: skip
    return redirect(f"/reminder-rules/{rule_id}?notice=saved")


async def deactivate_rule(request: web.Request) -> web.StreamResponse:
    try:
        await _rules(request).deactivate(_caller(request), request.match_info["rule_id"])
    except ApiError as e:
        return await _page(request, e.status, problem=_problem(e))
    return redirect("/reminder-rules?notice=deactivated")


async def preview(request: web.Request) -> web.StreamResponse:
    """Due times of every rule for the sample appointment typed in (local times in the
    sample's zone)."""
    form = await request.post()
    sample = {k: _text(form, k) for k in SAMPLE}
    try:
        if not zones.valid_zone(sample["time_zone"]):
            raise ApiError(422, "invalid_field", "time_zone: not an IANA time zone",
                           field="time_zone")  # fmt: skip
        tz = ZoneInfo(sample["time_zone"])
        found: list[Preview] = await _rules(request).preview(
            _caller(request),
            None,
            Sample(
                _local(sample["start"], tz, "start"),
                tz.key,
                _local(sample["booked_at"], tz, "booked_at") if sample["booked_at"] else None,
                sample["service"] or None,
                sample["location"] or None,
                sample["appointment_type"] or None,
            ),
        )
    except ApiError as e:
        return await _page(request, 422, problem=_problem(e), sample=sample)
    rows = [
        (p.rule, p.status, None if p.due_at is None else timing.iso_local(p.due_at, tz))
        for p in found
    ]
    return await _page(request, preview=rows, sample=sample)


ROUTES: tuple[PanelRoute, ...] = (
    PanelRoute("GET", "/reminder-rules", rules_page, OPERATORS, False, "reminder_rules"),
    PanelRoute("POST", "/reminder-rules", create_rule, ADMIN, False, "reminder_rules_create"),
    PanelRoute("POST", "/reminder-rules/preview", preview, OPERATORS, False,
               "reminder_rules_preview"),
    PanelRoute("GET", "/reminder-rules/{rule_id:rul_[0-9a-f]{16}}", rule_page, OPERATORS, False,
               "reminder_rule"),
    PanelRoute("POST", "/reminder-rules/{rule_id:rul_[0-9a-f]{16}}", update_rule, ADMIN, False,
               "reminder_rule_update"),
    PanelRoute("POST", "/reminder-rules/{rule_id:rul_[0-9a-f]{16}}/deactivate", deactivate_rule,
               ADMIN, False, "reminder_rule_deactivate"),
)  # fmt: skip
