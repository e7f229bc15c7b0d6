"""`/api/v1/reminder-rules`: reminder rules over HTTP (issue 13, point 4).

Handlers translate to `gw.reminder_rules` and back. Reading and the preview need
`read`; creating, a new version (PUT) and deactivating (DELETE) need `admin`, and are
audited. `endpoints(Endpoint)` gives the table's rows (the server's `Endpoint` class is
passed in, so this module does not import the server).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from gateway.api.handlers import AUTH_RECORD
from gateway.api.openapi import Answer
from gateway.consent import zones
from gateway.consent.settings import ClientPurpose
from gateway.errors import ApiError
from gateway.intake import decode_with
from gateway.reminders import timing
from gateway.reminders.rules import Rule, RuleSpec, Variant
from gateway.reminders.usecase import Preview, Sample
from gateway.usecases import Caller
from gateway.web.context import gateway_of, json_response
from gateway.web.formats import iso as iso_ms

RULE_ID = "{rule_id:rul_[0-9a-f]{16}}"
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:/ -]+$")]
Labels = Annotated[list[Label], msgspec.Meta(max_length=50)]
AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]


# At most 90 days before the start, in each unit (a regex, so the schema says it).
LEAD_PATTERN = (
    r"^-((?:[1-9][0-9]{0,4}|1[01][0-9]{4}|12[0-8][0-9]{3}|129[0-5][0-9]{2}|129600)m"
    r"|(?:[1-9][0-9]{0,2}|1[0-9]{3}|20[0-9]{2}|21[0-5][0-9]|2160)h"
    r"|(?:[1-9]|[1-8][0-9]|90)d|(?:[1-9]|1[0-2])w)$"
)
SPAN_PATTERN = (
    r"^((?:[0-9]{1,5}|1[01][0-9]{4}|12[0-8][0-9]{3}|129[0-5][0-9]{2}|129600)m"
    r"|(?:[0-9]{1,3}|1[0-9]{3}|20[0-9]{2}|21[0-5][0-9]|2160)h"
    r"|(?:[0-9]|[1-8][0-9]|90)d|(?:[0-9]|1[0-2])w)$"
)
VariantName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
Weight = Annotated[float, msgspec.Meta(ge=1, le=1000)]


class RuleRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A reminder rule (POST) or its next version (PUT: every field as it should be)."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=80)]
    offset: Annotated[
        str,
        msgspec.Meta(
            pattern=LEAD_PATTERN,
            description="before the start: -30m, -2h, -1d (a calendar day in the clinic's"
            " zone), -1w; at most 90 days",
        ),
    ]
    delivery_time: Annotated[
        Annotated[str, msgspec.Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")] | None,
        msgspec.Meta(
            description="HH:MM in the clinic's zone replacing the time of day the offset"
            ' lands on ("-1d" at "18:00": the evening before)'
        ),
    ] = None
    services: Annotated[Labels, msgspec.Meta(description="only these services; [] any")] = []
    locations: Annotated[Labels, msgspec.Meta(description="only these locations; [] any")] = []
    appointment_types: Annotated[
        Labels, msgspec.Meta(description="only these appointment types; [] any")
    ] = []
    skip_if_booked_within: Annotated[
        Annotated[str, msgspec.Meta(pattern=SPAN_PATTERN)] | None,
        msgspec.Meta(
            description="no reminder for an appointment booked less than this before its"
            " start: 30m, 48h, 2d, 1w"
        ),
    ] = None
    purpose: ClientPurpose = "appointment"
    priority: Literal["critical", "high", "normal", "bulk"] | None = None
    template: Label
    variants: Annotated[
        dict[VariantName, Weight],
        msgspec.Meta(
            max_length=10,
            description="A/B variants of the template by name, with their relative weights;"
            " each appointment gets one, the same at every re-plan",
        ),
    ] = {}
    active: bool = True


class PreviewRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A sample appointment: its start, the clinic's zone, when it was booked."""

    start: AwareTime
    time_zone: Annotated[
        str, msgspec.Meta(max_length=64, extra_json_schema={"format": "iana-time-zone"})
    ]
    booked_at: AwareTime | None = None
    service: Label | None = None
    location: Label | None = None
    appointment_type: Label | None = None


class RuleView(msgspec.Struct, frozen=True):
    id: str
    version: int
    name: str
    offset: str
    delivery_time: str | None
    services: list[str]
    locations: list[str]
    appointment_types: list[str]
    skip_if_booked_within: str | None
    purpose: str
    priority: str | None
    template: str
    variants: dict[str, float]
    active: bool
    created_at: str | None
    created_by: str


class RuleList(msgspec.Struct, frozen=True):
    rules: list[RuleView]


class RuleDetail(msgspec.Struct, frozen=True):
    rule: RuleView
    versions: list[RuleView]


class DueView(msgspec.Struct, frozen=True):
    rule_id: str
    version: int
    name: str
    status: Annotated[
        str,
        msgspec.Meta(
            description="planned, or why not: past, not_before_start, booked_late, filtered,"
            " inactive"
        ),
    ]
    due_at: Annotated[str | None, msgspec.Meta(description="in the clinic's zone")]
    due_at_utc: str | None


class PreviewView(msgspec.Struct, frozen=True):
    time_zone: str
    due: list[DueView]


_RULE = msgspec.json.Decoder(RuleRequest)
_PREVIEW = msgspec.json.Decoder(PreviewRequest)


def _decode_rule(raw: bytes) -> RuleRequest:
    """`decode_with`, and a refused variant name reported on `variants` (msgspec says
    "at `key` in `$.variants`", which the shared translation does not read)."""
    try:
        return _RULE.decode(raw)
    except msgspec.ValidationError as e:
        _, found, where = str(e).rpartition(" - at `key` in `$.")
        if found:
            field = where.rstrip("`")
            raise ApiError(
                422,
                "invalid_field",
                f"{field}: a name is 1 to 32 letters, digits, _ or -",
                field=field,
            ) from None
    except msgspec.DecodeError:
        pass  # not JSON: answered below as for every request
    try:
        return decode_with(_RULE, raw)  # every other error, translated as for every request
    except ApiError as e:
        if e.field and e.field.startswith("variants["):  # a weight, under the variant's name
            raise ApiError(
                422, "invalid_field", "variants: a weight is from 1 to 1000", field="variants"
            ) from None
        raise


def _caller(request: web.Request) -> Caller:
    return Caller.for_token(request[AUTH_RECORD])  # set by the guard


def spec_of(body: RuleRequest) -> RuleSpec:
    return RuleSpec(
        name=body.name,
        lead=body.offset,
        template=body.template,
        delivery_time=body.delivery_time,
        services=tuple(body.services),
        locations=tuple(body.locations),
        appointment_types=tuple(body.appointment_types),
        skip_if_booked_within=body.skip_if_booked_within,
        purpose=body.purpose,
        priority=body.priority,
        variants=tuple(Variant(name, weight) for name, weight in body.variants.items()),
        active=body.active,
    )


def view_of(rule: Rule) -> RuleView:
    s = rule.spec
    return RuleView(
        rule.id,
        rule.version,
        s.name,
        s.lead,
        s.delivery_time,
        list(s.services),
        list(s.locations),
        list(s.appointment_types),
        s.skip_if_booked_within,
        s.purpose,
        s.priority,
        s.template,
        {v.name: v.weight for v in s.variants},
        s.active,
        iso_ms(rule.created_at),
        rule.actor,
    )


def due_view(p: Preview) -> DueView:
    tz = zones.zone(p.time_zone)
    local = None if p.due_at is None else timing.iso_local(p.due_at, tz)
    utc = None if p.due_at is None else timing.iso_utc(p.due_at)
    return DueView(p.rule.id, p.rule.version, p.rule.spec.name, p.status, local, utc)


async def list_rules(request: web.Request) -> web.Response:
    found = await gateway_of(request).reminder_rules.list_rules(_caller(request))
    return json_response(RuleList([view_of(r) for r in found]))


async def get_rule(request: web.Request) -> web.Response:
    rule, versions = await gateway_of(request).reminder_rules.get(
        _caller(request), request.match_info["rule_id"]
    )
    return json_response(RuleDetail(view_of(rule), [view_of(v) for v in versions]))


async def post_rule(request: web.Request) -> web.Response:
    body = _decode_rule(await request.read())
    rule = await gateway_of(request).reminder_rules.create(_caller(request), spec_of(body))
    return json_response(view_of(rule), status=201)


async def put_rule(request: web.Request) -> web.Response:
    body = _decode_rule(await request.read())
    rule = await gateway_of(request).reminder_rules.update(
        _caller(request), request.match_info["rule_id"], spec_of(body)
    )
    return json_response(view_of(rule))


async def delete_rule(request: web.Request) -> web.Response:
    rule = await gateway_of(request).reminder_rules.deactivate(
        _caller(request), request.match_info["rule_id"]
    )
    return json_response(view_of(rule))


async def preview_rule(request: web.Request) -> web.Response:
    body = decode_with(_PREVIEW, await request.read())
    sample = Sample(
        body.start.timestamp(),
        body.time_zone,
        None if body.booked_at is None else body.booked_at.timestamp(),
        body.service,
        body.location,
        body.appointment_type,
    )
    found = await gateway_of(request).reminder_rules.preview(
        _caller(request), request.match_info["rule_id"], sample
    )
    return json_response(PreviewView(zones.zone(body.time_zone).key, [due_view(p) for p in found]))


_NO_RULE = Answer(404, "`not_found`: no reminder rule with this id")
_INVALID = Answer(
    422,
    "`invalid_field` (`field` names it: offset, delivery_time, skip_if_booked_within,"
    " variants, ...), `priority_not_allowed`: above the purpose's most urgent class",
)


def endpoints(endpoint: Callable[..., Any]) -> tuple[Any, ...]:
    """The rows of the server's endpoint table, built with its `Endpoint` class."""
    base = "/api/v1/reminder-rules"
    return (
        endpoint("GET", base, list_rules, "read", "Reminder rules (current versions)",
                 None, RuleList),
        endpoint("POST", base, post_rule, "admin",
                 "Create a reminder rule; upcoming appointments are planned with it (audited)",
                 RuleRequest, RuleView, 201, answers=(_INVALID,)),
        endpoint("GET", f"{base}/{RULE_ID}", get_rule, "read",
                 "A reminder rule with all its versions", None, RuleDetail,
                 answers=(_NO_RULE,)),
        endpoint("PUT", f"{base}/{RULE_ID}", put_rule, "admin",
                 "A new version of a rule (versions are immutable); its pending reminders"
                 " are re-planned (audited)",
                 RuleRequest, RuleView, answers=(_NO_RULE, _INVALID)),
        endpoint("DELETE", f"{base}/{RULE_ID}", delete_rule, "admin",
                 "Deactivate a rule (a new, inactive version); its pending reminders are"
                 " withdrawn (audited)", None, RuleView, answers=(_NO_RULE,)),
        endpoint("POST", f"{base}/{RULE_ID}/preview", preview_rule, "read",
                 "Due time of the rule for a sample appointment, in the clinic's zone"
                 " (DST-aware), or why it would not be planned",
                 PreviewRequest, PreviewView,
                 answers=(_NO_RULE, Answer(422, "`invalid_field`: time_zone is not an IANA zone"))),
    )  # fmt: skip
