"""`/api/v1/contacts/...`, `/groups`, `/audiences`: contacts as an audience over HTTP.

Handlers translate to `gw.contacts` (`gateway/contacts/usecase.py`) and back. A contact
is named by its key (the blind index, hex), never by its number; lists show numbers
masked. Reading needs `read`; changes and imports need `consent` (or `admin`) and are
audited. An import uploads a CSV body (read as it arrives into an owner-only file),
answers 202 with a job id, and runs in the background; its progress and line errors
are at `GET /contacts/imports/{id}`.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from pathlib import Path
from typing import Annotated, Any

import msgspec
from aiohttp import web
from msgspec import UNSET, UnsetType

from gateway.api.handlers import AUTH_RECORD
from gateway.contacts.audience import AudienceSpec, Key
from gateway.contacts.csv_import import FIELDS, Options, parse_mapping
from gateway.contacts.importer import ImportJob
from gateway.contacts.usecase import (
    MAX_PAGE,
    NAME_PATTERN,
    Changes,
    ContactDetail,
    ContactItem,
    GroupRow,
    SavedAudience,
)
from gateway.errors import ApiError
from gateway.intake import decode_with
from gateway.usecases import Caller
from gateway.web.context import gateway_of, json_response
from gateway.web.formats import iso

MAX_UPLOAD = 256 * 2**20
CONTACT_KEY = "{key:[0-9a-f]{32}}"
GROUP_ID = "{group_id:g[0-9a-f]{12}}"
AUDIENCE_ID = "{audience_id:a[0-9a-f]{12}}"
JOB_ID = "{job_id:[A-Za-z0-9_-]{16}}"
_KEEP = "left out: kept; null: cleared"
_MAP_ONE = f"({'|'.join(FIELDS)})=[^,]*[^\\s,][^,]*"
MAP_PATTERN = f"^{_MAP_ONE}(,{_MAP_ONE})*$"
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=NAME_PATTERN)]
Description = Annotated[str, msgspec.Meta(max_length=500)]
Keys = Annotated[list[Key], msgspec.Meta(max_length=50)]
ContactKey = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{32}$")]


class ContactView(msgspec.Struct, frozen=True):
    key: Annotated[str, msgspec.Meta(description="the contact's key (never its number)")]
    number_masked: str | None
    language: str | None
    time_zone: str | None
    age_band: str | None
    clinic: str | None
    preferences: list[str]
    tags: list[str]
    groups: Annotated[list[str], msgspec.Meta(description="group ids")]
    created_at: str | None
    updated_at: str | None


class ContactList(msgspec.Struct, frozen=True):
    items: list[ContactView]
    total: Annotated[int, msgspec.Meta(description="contacts matching the filters")]
    next_cursor: str | None


class StandingView(msgspec.Struct, frozen=True):
    program: str
    scope: str
    status: str
    since: str | None


class ContactDetailView(msgspec.Struct, frozen=True):
    contact: ContactView
    consent: Annotated[
        list[StandingView], msgspec.Meta(description="standing per program and scope")
    ]


class AttributesRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    language: Annotated[
        Annotated[str, msgspec.Meta(pattern="^[a-z]{2,3}$")] | UnsetType | None,
        msgspec.Meta(description="a configured reply language; " + _KEEP),
    ] = UNSET
    time_zone: Annotated[
        Annotated[str, msgspec.Meta(max_length=64, extra_json_schema={"format": "iana-time-zone"})]
        | UnsetType
        | None,
        msgspec.Meta(description="an IANA zone; " + _KEEP),
    ] = UNSET
    age_band: Annotated[Key | UnsetType | None, msgspec.Meta(description=_KEEP)] = UNSET
    clinic: Annotated[Key | UnsetType | None, msgspec.Meta(description=_KEEP)] = UNSET
    preferences: Annotated[
        Keys | UnsetType | None, msgspec.Meta(description="the whole set; " + _KEEP)
    ] = UNSET
    tags: Annotated[
        Keys | UnsetType | None, msgspec.Meta(description="the whole set; " + _KEEP)
    ] = UNSET


class GroupRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: Name
    description: Description | None = None


class GroupChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: Name | None = None
    description: Description | None = None


class GroupView(msgspec.Struct, frozen=True):
    id: str
    name: str
    description: str | None
    members: int
    created_at: str | None
    updated_at: str | None


class GroupList(msgspec.Struct, frozen=True):
    groups: list[GroupView]


class MembersRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    contacts: Annotated[list[ContactKey], msgspec.Meta(max_length=1000, description="keys")]


class AudienceMembersRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    audience: Annotated[AudienceSpec, msgspec.Meta(description="everyone in it now joins")]


class MembersChanged(msgspec.Struct, frozen=True):
    changed: Annotated[int, msgspec.Meta(description="contacts added (or removed)")]
    members: int


class AudienceRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: Name
    spec: AudienceSpec


class CountRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    spec: AudienceSpec


class AudienceView(msgspec.Struct, frozen=True):
    id: str
    name: str
    spec: AudienceSpec
    size: Annotated[int, msgspec.Meta(description="contacts in it now")]
    created_at: str | None
    updated_at: str | None


class AudienceList(msgspec.Struct, frozen=True):
    audiences: list[AudienceView]


class CountView(msgspec.Struct, frozen=True):
    size: int


class LineErrorView(msgspec.Struct, frozen=True):
    line: int
    code: str
    field: str | None


class ImportView(msgspec.Struct, frozen=True):
    id: str
    done: bool
    percent: Annotated[int, msgspec.Meta(description="of the file read (100 when done)")]
    rows: int
    created: int
    updated: int
    unchanged: Annotated[int, msgspec.Meta(description="rows that changed nothing")]
    duplicates: Annotated[int, msgspec.Meta(description="rows repeating a number in the file")]
    failed: int
    errors: Annotated[list[LineErrorView], msgspec.Meta(description="the first 100")]
    ignored_columns: list[str]
    encoding: str | None
    fatal: Annotated[
        str | None, msgspec.Meta(description="why nothing could be read: missing_column...")
    ]


_ATTRS = msgspec.json.Decoder(AttributesRequest)
_GROUP = msgspec.json.Decoder(GroupRequest)
_GROUP_CHANGE = msgspec.json.Decoder(GroupChange)
_MEMBERS = msgspec.json.Decoder(MembersRequest)
_AUDIENCE_MEMBERS = msgspec.json.Decoder(AudienceMembersRequest)
_AUDIENCE = msgspec.json.Decoder(AudienceRequest)
_COUNT = msgspec.json.Decoder(CountRequest)


def _caller(request: web.Request) -> Caller:
    return Caller.for_token(request[AUTH_RECORD])


def contact_view(c: ContactItem) -> ContactView:
    return ContactView(
        c.key,
        c.number_masked,
        c.language,
        c.time_zone,
        c.age_band,
        c.clinic,
        list(c.preferences),
        list(c.tags),
        list(c.groups),
        iso(c.created_at),
        iso(c.updated_at),
    )


def _detail(d: ContactDetail) -> ContactDetailView:
    return ContactDetailView(
        contact_view(d.contact),
        [
            StandingView(
                s.program, s.scope, "opted_in" if s.opted == "in" else "opted_out", iso(s.since)
            )
            for s in d.consent
        ],
    )


def _group(g: GroupRow) -> GroupView:
    return GroupView(g.id, g.name, g.description, g.members, iso(g.created_at), iso(g.updated_at))


def _audience(a: SavedAudience) -> AudienceView:
    r = a.audience
    return AudienceView(r.id, r.name, r.spec, a.size, iso(r.created_at), iso(r.updated_at))


def import_view(job: ImportJob) -> ImportView:
    r = job.report
    return ImportView(
        job.id,
        r.done,
        job.percent,
        r.rows,
        r.created,
        r.updated,
        r.unchanged,
        r.duplicates,
        r.failed,
        [LineErrorView(e.line, e.code, e.field) for e in r.errors],
        r.ignored_columns,
        r.encoding,
        r.fatal,
    )


# -- query parameters ------------------------------------------------------------------
FILTERS = {
    "group": "groups",
    "tag": "tags",
    "language": "languages",
    "age_band": "age_bands",
    "clinic": "clinics",
    "preference": "preferences",
}
_SPEC_FIELDS = msgspec.json.Decoder(AudienceSpec)


def _spec_of_query(request: web.Request) -> AudienceSpec:
    """The filters as an audience: each a comma-separated list of keys."""
    fields: dict[str, list[str]] = {}
    for name, target in FILTERS.items():
        text = request.query.get(name)
        if text is not None:
            fields[target] = text.split(",")  # an empty key is refused, not ignored
    try:
        return _SPEC_FIELDS.decode(msgspec.json.encode(fields))
    except msgspec.ValidationError:
        raise ApiError(
            400, "invalid_query", "a filter: comma-separated keys (letters, digits, _ . : -)"
        ) from None


async def list_contacts(request: web.Request) -> web.Response:
    q = request.query
    if set(q) - {*FILTERS, "limit", "cursor"}:
        raise ApiError(400, "invalid_query", "unknown query parameter")
    text = q.get("limit", "50")
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise ApiError(
            400, "invalid_query", f"limit: an integer from 1 to {MAX_PAGE}", field="limit"
        )
    cursor = q.get("cursor")
    if cursor is not None and not re.fullmatch(r"[0-9a-f]{32}", cursor):
        # An empty or malformed cursor is refused, not read as "from the start".
        raise ApiError(400, "invalid_query", "cursor: as a page's next_cursor gave it")
    page = await gateway_of(request).contacts.page(
        _caller(request), _spec_of_query(request), cursor, int(text)
    )
    return json_response(
        ContactList([contact_view(c) for c in page.items], page.total, page.next_cursor)
    )


async def get_contact(request: web.Request) -> web.Response:
    found = await gateway_of(request).contacts.get(_caller(request), request.match_info["key"])
    return json_response(_detail(found))


async def patch_contact(request: web.Request) -> web.Response:
    body = decode_with(_ATTRS, await request.read())
    values: dict[str, str] = {}
    clear: set[str] = set()
    for name in ("language", "time_zone", "age_band", "clinic", "preferences", "tags"):
        value = getattr(body, name)
        if value is None:
            clear.add(name)
        elif isinstance(value, str):
            values[name] = value
    changes = Changes(
        values,
        frozenset(clear - {"tags"}),
        None if isinstance(body.preferences, UnsetType) else tuple(body.preferences or ()),
        None if isinstance(body.tags, UnsetType) else tuple(body.tags or ()),
    )
    done = await gateway_of(request).contacts.update(
        _caller(request), request.match_info["key"], changes
    )
    return json_response(_detail(done))


# -- groups ----------------------------------------------------------------------------


async def list_groups(request: web.Request) -> web.Response:
    groups = await gateway_of(request).contacts.groups(_caller(request))
    return json_response(GroupList([_group(g) for g in groups]))


async def post_group(request: web.Request) -> web.Response:
    body = decode_with(_GROUP, await request.read())
    g = await gateway_of(request).contacts.create_group(
        _caller(request), body.name, body.description
    )
    return json_response(_group(g), status=201)


async def get_group(request: web.Request) -> web.Response:
    g = await gateway_of(request).contacts.group(_caller(request), request.match_info["group_id"])
    return json_response(_group(g))


async def patch_group(request: web.Request) -> web.Response:
    body = decode_with(_GROUP_CHANGE, await request.read())
    g = await gateway_of(request).contacts.update_group(
        _caller(request), request.match_info["group_id"], body.name, body.description
    )
    return json_response(_group(g))


async def delete_group(request: web.Request) -> web.Response:
    gid = request.match_info["group_id"]
    await gateway_of(request).contacts.delete_group(_caller(request), gid)
    return json_response({"id": gid, "deleted": True})


async def _members(request: web.Request, n: int) -> web.Response:
    gid = request.match_info["group_id"]
    group = await gateway_of(request).contacts.group(_caller(request), gid)
    return json_response(MembersChanged(n, group.members))


async def add_members(request: web.Request) -> web.Response:
    body = decode_with(_MEMBERS, await request.read())
    gid = request.match_info["group_id"]
    n = await gateway_of(request).contacts.add_members(_caller(request), gid, body.contacts)
    return await _members(request, n)


async def add_audience(request: web.Request) -> web.Response:
    body = decode_with(_AUDIENCE_MEMBERS, await request.read())
    gid = request.match_info["group_id"]
    n = await gateway_of(request).contacts.add_members(
        _caller(request), gid, audience=body.audience
    )
    return await _members(request, n)


async def remove_members(request: web.Request) -> web.Response:
    body = decode_with(_MEMBERS, await request.read())
    gid = request.match_info["group_id"]
    n = await gateway_of(request).contacts.remove_members(_caller(request), gid, body.contacts)
    return await _members(request, n)


# -- saved audiences -------------------------------------------------------------------


async def list_audiences(request: web.Request) -> web.Response:
    found = await gateway_of(request).contacts.audiences(_caller(request))
    return json_response(AudienceList([_audience(a) for a in found]))


async def post_audience(request: web.Request) -> web.Response:
    body = decode_with(_AUDIENCE, await request.read())
    saved = await gateway_of(request).contacts.save_audience(_caller(request), body.name, body.spec)
    return json_response(_audience(saved), status=201)


async def get_audience(request: web.Request) -> web.Response:
    found = await gateway_of(request).contacts.audience(
        _caller(request), request.match_info["audience_id"]
    )
    return json_response(_audience(found))


async def put_audience(request: web.Request) -> web.Response:
    body = decode_with(_AUDIENCE, await request.read())
    saved = await gateway_of(request).contacts.save_audience(
        _caller(request), body.name, body.spec, request.match_info["audience_id"]
    )
    return json_response(_audience(saved))


async def delete_audience(request: web.Request) -> web.Response:
    aid = request.match_info["audience_id"]
    await gateway_of(request).contacts.delete_audience(_caller(request), aid)
    return json_response({"id": aid, "deleted": True})


async def count_audience(request: web.Request) -> web.Response:
    body = decode_with(_COUNT, await request.read())
    return json_response(
        CountView(await gateway_of(request).contacts.count(_caller(request), body.spec))
    )


# -- import ----------------------------------------------------------------------------


def _import_options(request: web.Request) -> Options:
    q = request.query
    if set(q) - {"map", "region", "group", "name"}:
        raise ApiError(400, "invalid_query", "unknown query parameter")
    try:
        columns = parse_mapping(q.get("map", ""))
    except ValueError as e:
        raise ApiError(400, "invalid_query", f"map: {e}", field="map") from None
    if "map" in q and not columns:  # given, it maps something (absent: by the headers)
        raise ApiError(400, "invalid_query", "map: at least one FIELD=HEADER", field="map")
    name = q.get("name")
    if name is not None and not 0 < len(name) <= 128:
        raise ApiError(400, "invalid_query", "name: 1 to 128 characters", field="name")
    return Options(columns, q.get("region"), q.get("group"), name)


async def start_import(request: web.Request) -> web.Response:
    """A CSV body, written to an owner-only file as it arrives, then imported by a job."""
    if request.content_type not in ("text/csv", "text/plain"):
        raise ApiError(415, "unsupported_media_type", "send the file as text/csv")
    gw = gateway_of(request)
    caller = _caller(request)
    options = _import_options(request)
    gw.contacts.imports.check(caller, options)
    if options.group is not None:
        await gw.contacts.group(caller, options.group)
    fd, name = tempfile.mkstemp(prefix="contacts-import-", suffix=".csv", dir=gw.config.data_dir)
    os.close(fd)  # mkstemp made it 0600
    path = Path(name)
    size = 0
    try:
        with path.open("wb") as out:  # noqa: ASYNC230 - an empty file; writes in a thread
            async for chunk in request.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > MAX_UPLOAD:
                    raise ApiError(413, "file_too_large", f"at most {MAX_UPLOAD // 2**20} MiB")
                await asyncio.to_thread(out.write, chunk)
    except BaseException:
        await asyncio.to_thread(path.unlink, missing_ok=True)
        raise
    job = gw.contacts.imports.start(caller, path, size, options)
    return json_response(import_view(job), status=202)


async def get_import(request: web.Request) -> web.Response:
    return json_response(
        import_view(gateway_of(request).contacts.imports.job(request.match_info["job_id"]))
    )


def describe(document: dict[str, Any], languages: list[str]) -> None:
    """The configured reply languages as the enum of a contact's `language`."""
    schema = document["components"]["schemas"].get("AttributesRequest")
    if schema is not None:
        language = schema["properties"]["language"]
        schema["properties"]["language"] = {
            "anyOf": [{"type": "string", "enum": languages}, {"type": "null"}],
            **({"description": language["description"]} if "description" in language else {}),
        }
