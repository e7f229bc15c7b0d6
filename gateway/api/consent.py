"""`/api/v1/optouts`, `/consents`, `/contacts`: the consent ledger over HTTP.

Handlers translate to `gw.usecases.consent` and back. A number travels in the query
string (GET, DELETE) or the JSON body (POST, PUT), never in the path: the access log
writes paths. Reading needs `read` and the `phi` scope (a lookup by number is a PHI
read, audited); recording needs `consent`; the export also needs `phi`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web
from msgspec import UNSET, UnsetType

from gateway.api.handlers import AUTH_RECORD
from gateway.consent.ledger import ALL_PROGRAMS, Decision, Source
from gateway.consent.purposes import CLIENT_PURPOSES, SCOPE_ALL, Kind
from gateway.errors import ApiError
from gateway.intake import decode_with
from gateway.usecases import Caller
from gateway.usecases.consent import (
    ConsentView,
    Contact,
    ContactChanges,
    DecisionRequest,
    ImportReport,
    Language,
    Recorded,
)
from gateway.usecases.consent_csv import (
    EXPORT_HEADER,
    Options,
    csv_line,
    export_line,
    parse_mapping,
)
from gateway.web.context import gateway_of, json_response
from gateway.web.formats import iso as iso_ms

ApiSource = Literal["api", "phone", "email"]
_KINDS = "|".join(k.value for k in Kind if k is not Kind.COMPLIANCE)
_PURPOSES = "|".join(p.value for p in CLIENT_PURPOSES)
SCOPE_PATTERN = f"^(all|kind:({_KINDS})|purpose:({_PURPOSES}))$"
SCOPE_SCHEMA = {"type": "string", "pattern": SCOPE_PATTERN}
PROGRAM_SCHEMA = {"type": "string"}  # its enum (the configured programs) is set at install
Phone = Annotated[str, msgspec.Meta(max_length=64, extra_json_schema={"format": "phone"})]
Scope = Annotated[str, msgspec.Meta(pattern=SCOPE_PATTERN)]
Program = Annotated[str, msgspec.Meta(max_length=64)]
TimeZone = Annotated[
    str, msgspec.Meta(max_length=64, extra_json_schema={"format": "iana-time-zone"})
]
_SCOPE_DOC = "all (default), kind:<kind> or purpose:<purpose>"
_PROGRAM_DOC = "a configured program's name, default or * (every program, the default)"
_NUMBER_DOC = "the phone number (E.164, or national in queue.default_region)"
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]


class OptOutRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    number: Annotated[Phone, msgspec.Meta(description=_NUMBER_DOC)]
    scope: Annotated[Scope, msgspec.Meta(description=_SCOPE_DOC)] = SCOPE_ALL
    program: Annotated[Program, msgspec.Meta(description=_PROGRAM_DOC)] = ALL_PROGRAMS
    source: Annotated[ApiSource, msgspec.Meta(description="how it was given")] = "api"
    note: Text | None = None


class ConsentRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    number: Annotated[Phone, msgspec.Meta(description=_NUMBER_DOC)]
    scope: Annotated[Scope, msgspec.Meta(description=_SCOPE_DOC)] = SCOPE_ALL
    program: Annotated[Program, msgspec.Meta(description=_PROGRAM_DOC)] = ALL_PROGRAMS
    source: ApiSource = "api"
    disclosure: Annotated[
        Text | None,
        msgspec.Meta(description="the exact consent text shown; required for marketing (MSG-2)"),
    ] = None
    note: Text | None = None


_KEEP = "left out: kept; null: cleared"


class ContactRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    number: Annotated[Phone, msgspec.Meta(description=_NUMBER_DOC)]
    patient_ref: Annotated[
        Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | UnsetType | None,
        msgspec.Meta(description=_KEEP),
    ] = UNSET
    language: Annotated[Language | UnsetType | None, msgspec.Meta(description=_KEEP)] = UNSET
    time_zone: Annotated[
        TimeZone | UnsetType | None, msgspec.Meta(description="an IANA zone; " + _KEEP)
    ] = UNSET


class RecordedView(msgspec.Struct, frozen=True):
    id: str
    decision: str
    scope: str
    program: str
    source: str
    at: str


class ContactView(msgspec.Struct, frozen=True):
    patient_ref: str | None
    language: str | None
    time_zone: str | None
    created_at: str | None
    updated_at: str | None


class StandingView(msgspec.Struct, frozen=True):
    program: str
    scope: str
    status: Literal["opted_in", "opted_out"]
    since: str | None
    source: str
    written: Annotated[bool, msgspec.Meta(description="a written opt-in is on record")]


class DecisionView(msgspec.Struct, frozen=True):
    id: str
    at: str | None
    decision: str
    scope: str
    program: str
    source: str
    actor: str | None
    inbound_id: str | None
    message_id: str | None
    disclosure: str | None
    note: str | None


class ConsentLookup(msgspec.Struct, frozen=True):
    contact: ContactView | None
    standing: list[StandingView]
    history: list[DecisionView]


class LineErrorView(msgspec.Struct, frozen=True):
    line: int
    code: str
    field: str | None


class ImportResult(msgspec.Struct, frozen=True):
    rows: int
    appended: int
    unchanged: Annotated[int, msgspec.Meta(description="already in the ledger: not appended")]
    superseded: Annotated[
        int, msgspec.Meta(description="older than a standing decision: kept as evidence only")
    ]
    failed: int
    errors: Annotated[list[LineErrorView], msgspec.Meta(description="the first 100")]
    ignored_columns: list[str]


_OPT_OUT = msgspec.json.Decoder(OptOutRequest)
_CONSENT = msgspec.json.Decoder(ConsentRequest)
_CONTACT = msgspec.json.Decoder(ContactRequest)


def describe_consent(document: dict[str, Any], programs: list[str], languages: list[str]) -> None:
    """The configured programs as the enum of every `program` in the document, and
    the configured reply languages as a contact's `language`."""
    schemas = document["components"]["schemas"]
    if "ContactRequest" in schemas:
        language = schemas["ContactRequest"]["properties"]["language"]
        schemas["ContactRequest"]["properties"]["language"] = {
            "anyOf": [{"type": "string", "enum": languages}, {"type": "null"}],
            **({"description": language["description"]} if "description" in language else {}),
        }
    for name in ("OptOutRequest", "ConsentRequest"):
        if name in schemas:
            schemas[name]["properties"]["program"]["enum"] = programs
    for ops in document["paths"].values():
        for op in ops.values():
            for p in op.get("parameters", []):
                if p["name"] == "program" and p["in"] == "query":
                    p["schema"] = {**p["schema"], "enum": programs}


def _caller(request: web.Request) -> Caller:
    return Caller.for_token(request[AUTH_RECORD])  # set by the guard


def _query_number(request: web.Request) -> str:
    number = request.query.get("number")
    if not number:
        raise ApiError(400, "invalid_query", "number: required", field="number")
    return number


def _lookup_view(view: ConsentView) -> ConsentLookup:
    return ConsentLookup(
        _contact_view(view.contact) if view.contact is not None else None,
        [
            StandingView(
                s.program,
                s.scope,
                "opted_in" if s.opted == "in" else "opted_out",
                iso_ms(s.since),
                s.source,
                s.written,
            )
            for s in view.standing
        ],
        [
            DecisionView(
                h.id,
                iso_ms(h.at),
                h.decision,
                h.scope,
                h.program,
                h.source,
                h.actor,
                h.inbound_id,
                h.message_id,
                h.disclosure,
                h.note,
            )
            for h in view.history
        ],
    )


def _contact_view(c: Contact) -> ContactView:
    return ContactView(
        c.patient_ref, c.language, c.time_zone, iso_ms(c.created_at), iso_ms(c.updated_at)
    )


def _recorded(r: Recorded) -> RecordedView:
    return RecordedView(r.id, r.decision, r.scope, r.program, r.source, iso_ms(r.at) or "")


async def get_consent(request: web.Request) -> web.Response:
    view = await gateway_of(request).usecases.consent.lookup(
        _caller(request), _query_number(request)
    )
    return json_response(_lookup_view(view))


async def _record(request: web.Request, req: DecisionRequest) -> web.Response:
    done = await gateway_of(request).usecases.consent.record(_caller(request), req)
    return json_response(_recorded(done), status=201)


async def post_optout(request: web.Request) -> web.Response:
    body = decode_with(_OPT_OUT, await request.read())
    source: Source = body.source
    return await _record(
        request,
        DecisionRequest(body.number, "opt_out", source, body.scope, body.program, body.note),
    )


async def post_consent(request: web.Request) -> web.Response:
    body = decode_with(_CONSENT, await request.read())
    return await _record(
        request,
        DecisionRequest(
            body.number,
            "opt_in",
            body.source,
            body.scope,
            body.program,
            body.note,
            body.disclosure,
        ),
    )


async def _delete(request: web.Request, decision: Decision, *, lifts: bool) -> web.Response:
    q = request.query
    unknown = set(q) - {"number", "scope", "program"}
    if unknown:
        raise ApiError(400, "invalid_query", "unknown query parameter")
    req = DecisionRequest(
        _query_number(request),
        decision,
        "api",
        q.get("scope", SCOPE_ALL),
        q.get("program", ALL_PROGRAMS),
        lifts=lifts,
    )
    return await _record(request, req)


async def delete_optout(request: web.Request) -> web.Response:
    """Re-subscribe: an opt-in lifting an opt-out (the ledger keeps both)."""
    return await _delete(request, "opt_in", lifts=True)


async def delete_consent(request: web.Request) -> web.Response:
    """Withdraw consent: an opt-out of the scope."""
    return await _delete(request, "opt_out", lifts=False)


async def get_contact(request: web.Request) -> web.Response:
    found = await gateway_of(request).usecases.consent.contact(
        _caller(request), _query_number(request)
    )
    if found is None:
        raise ApiError(404, "not_found", "no contact with this number")
    return json_response(_contact_view(found))


async def put_contact(request: web.Request) -> web.Response:
    body = decode_with(_CONTACT, await request.read())
    values: dict[str, str] = {}
    clear: set[str] = set()
    for name in ("patient_ref", "language", "time_zone"):
        value = getattr(body, name)
        if value is None:
            clear.add(name)
        elif value is not UNSET:
            values[name] = value
    changes = ContactChanges(**values, clear=frozenset(clear))
    found = await gateway_of(request).usecases.consent.put_contact(
        _caller(request), body.number, changes
    )
    return json_response(_contact_view(found))


def _import_options(request: web.Request) -> Options:
    q = request.query
    unknown = set(q) - {"map", "decision", "program"}
    if unknown:
        raise ApiError(400, "invalid_query", "unknown query parameter")
    try:
        columns = parse_mapping(q.get("map", ""))
    except ValueError as e:
        raise ApiError(400, "invalid_query", f"map: {e}", field="map") from None
    if "map" in q and not columns:  # given, it maps something (absent: by the headers)
        raise ApiError(400, "invalid_query", "map: at least one FIELD=HEADER", field="map")
    decision = q.get("decision")
    if decision not in (None, "opt_in", "opt_out"):
        raise ApiError(400, "invalid_query", "decision: opt_in or opt_out", field="decision")
    return Options(columns, decision, q.get("program"))  # type: ignore[arg-type]  # checked


async def import_consents(request: web.Request) -> web.Response:
    """A CSV list, read as it arrives (never whole in memory)."""
    if request.content_type not in ("text/csv", "text/plain"):
        raise ApiError(415, "unsupported_media_type", "send the list as text/csv")
    options = _import_options(request)
    report = await gateway_of(request).usecases.consent.import_csv(
        _caller(request), request.content.iter_chunked(64 * 1024), options
    )
    if report.fatal is not None:
        raise ApiError(422, report.fatal, "the file has no usable header row or columns")
    return json_response(import_result(report))


def import_result(report: ImportReport) -> ImportResult:
    return ImportResult(
        report.rows,
        report.appended,
        report.unchanged,
        report.superseded,
        report.failed,
        [LineErrorView(e.line, e.code, e.field) for e in report.errors],
        report.ignored_columns,
    )


async def export_consents(request: web.Request) -> web.StreamResponse:
    """The whole ledger as CSV, numbers decrypted (audited), written page by page."""
    rows = await gateway_of(request).usecases.consent.export(_caller(request))
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": 'attachment; filename="consent-ledger.csv"',
            "Cache-Control": "no-store",
        }
    )
    await response.prepare(request)
    await response.write(csv_line(EXPORT_HEADER).encode())
    async for r in rows:
        await response.write(export_line(r).encode())
    await response.write_eof()
    return response
