"""The contacts pages (admin, operator): the list with filters and masked numbers, one
contact's attributes and consent standing, and the CSV import (upload, mapping,
progress, line errors).

Everything goes through `gw.contacts` (`gateway/contacts/usecase.py`) with the
signed-in user as the `Caller`, which audits changes. A contact is named in URLs by
its key (a keyed hash), never by its number. An import is uploaded to an owner-only
file in the data directory; the mapping step reads only its header row, then a
background job imports it while the job page polls its progress (htmx, every second).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from gateway.admin.panel import user_caller
from gateway.admin.render import error_response, redirect, render
from gateway.admin.routing import OPERATORS, PanelRoute
from gateway.app import Gateway
from gateway.contacts.audience import AudienceSpec
from gateway.contacts.csv_import import FIELDS, Options, columns
from gateway.contacts.usecase import Changes
from gateway.errors import ApiError
from gateway.usecases.csv_reader import HeaderError, coded_records, file_chunks
from gateway.web.context import GATEWAY

UPLOAD_CHUNK = 64 * 1024
CSRF_HEADER = "X-CSRF-Token"
MAX_UPLOAD = 256 * 2**20
KEEP_UPLOADS = 20
PAGE = 50
FILTERS = ("group", "tag", "language", "age_band", "clinic", "preference")
FIELD_LABELS = {
    "number": "Phone number",
    "language": "Language",
    "time_zone": "Time zone",
    "age_band": "Age band",
    "clinic": "Clinic",
    "preferences": "Preferences (; between)",
    "tags": "Tags (; between)",
    "groups": "Groups (; between)",
}


@dataclass
class Upload:
    """A file uploaded and waiting for its column mapping."""

    id: str
    path: Path
    size: int
    name: str | None
    header: list[str]
    guessed: dict[str, int]


UPLOADS: web.AppKey[dict[str, Upload]] = web.AppKey("contacts_uploads", dict)


def _gateway(request: web.Request) -> Gateway:
    return request.app[GATEWAY]


def _problem(e: ApiError) -> str:
    return e.message[:1].upper() + e.message[1:].rstrip(".") + "."


def _spec(query: Any) -> AudienceSpec:
    values = {f: [v for v in str(query.get(f, "")).split(",") if v] for f in FILTERS}
    return AudienceSpec(
        groups=values["group"],
        tags=values["tag"],
        languages=values["language"],
        age_bands=values["age_band"],
        clinics=values["clinic"],
        preferences=values["preference"],
    )


async def contacts_page(request: web.Request) -> web.StreamResponse:
    contacts = _gateway(request).contacts
    caller = user_caller(request)
    chosen = {f: request.query.get(f, "") for f in FILTERS}
    try:
        page = await contacts.page(caller, _spec(request.query), request.query.get("cursor"), PAGE)
    except ApiError as e:
        return error_response(request, 400, e.code, _problem(e))
    facets = await contacts.facets()
    groups = await contacts.groups(caller)
    query = "&".join(f"{k}={v}" for k, v in chosen.items() if v)
    return render(
        request,
        "contacts.html",
        page=page,
        facets=facets,
        groups=groups,
        group_names={g.id: g.name for g in groups},
        chosen=chosen,
        query=query,
    )


async def contact_page(request: web.Request, problem: str | None = None) -> web.StreamResponse:
    contacts = _gateway(request).contacts
    try:
        detail = await contacts.get(user_caller(request), request.match_info["key"])
    except ApiError as e:
        return error_response(request, e.status, e.code, _problem(e))
    groups = await contacts.groups(user_caller(request))
    return render(
        request,
        "contact.html",
        status=422 if problem else 200,
        detail=detail,
        group_names={g.id: g.name for g in groups},
        languages=contacts.languages,
        notice=request.query.get("notice"),
        problem=problem,
    )


async def contact_edit(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    values: dict[str, str] = {}
    clear: set[str] = set()
    for name in ("language", "time_zone", "age_band", "clinic"):
        text = str(form.get(name, "")).strip()
        if text:
            values[name] = text
        else:
            clear.add(name)

    def keys(name: str) -> tuple[str, ...]:
        return tuple(k for k in (p.strip() for p in str(form.get(name, "")).split(",")) if k)

    changes = Changes(values, frozenset(clear), keys("preferences"), keys("tags"))
    key = request.match_info["key"]
    try:
        await _gateway(request).contacts.update(user_caller(request), key, changes)
    except ApiError as e:
        if e.status == 404:
            return error_response(request, 404, e.code, _problem(e))
        return await contact_page(request, _problem(e))
    return redirect(str(request.app.router["contact"].url_for(key=key)) + "?notice=saved")


# -- import ----------------------------------------------------------------------------


async def import_form(request: web.Request) -> web.StreamResponse:
    return render(request, "contacts_import.html", problem=None)


async def _save_upload(request: web.Request, target: Path) -> tuple[int, str | None] | str:
    """Write the uploaded file to `target` a chunk at a time; its size and name. A form
    already read by the CSRF check (no script) is taken from there."""
    size, name = 0, None
    with target.open("wb") as out:
        if CSRF_HEADER in request.headers:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if isinstance(part, BodyPartReader) and part.name == "file":
                    name = part.filename
                    while chunk := await part.read_chunk(UPLOAD_CHUNK):
                        size += len(chunk)
                        if size > MAX_UPLOAD:
                            return f"The file is over {MAX_UPLOAD // 2**20} MiB; split it."
                        await asyncio.to_thread(out.write, chunk)
        else:
            upload = (await request.post()).get("file")
            if isinstance(upload, web.FileField):
                name = upload.filename
                while chunk := await asyncio.to_thread(upload.file.read, UPLOAD_CHUNK):
                    size += len(chunk)
                    await asyncio.to_thread(out.write, chunk)
    return (size, name) if size else "Choose a CSV file to import."


async def _header(path: Path) -> list[str] | str:
    async for _, fields in coded_records(file_chunks(path)):
        return fields if isinstance(fields, list) else "The header row cannot be read."
    return "The file is empty."


async def upload(request: web.Request) -> web.StreamResponse:
    gw = _gateway(request)
    fd, name = tempfile.mkstemp(prefix="contacts-upload-", suffix=".csv", dir=gw.config.data_dir)
    os.close(fd)  # mkstemp made it 0600
    path = Path(name)
    try:
        saved = await _save_upload(request, path)
        header = await _header(path) if not isinstance(saved, str) else saved
    except BaseException:
        _discard(path)
        raise
    if isinstance(saved, str) or isinstance(header, str):
        _discard(path)
        problem = saved if isinstance(saved, str) else str(header)
        return render(request, "contacts_import.html", status=422, problem=problem)
    try:
        guessed, _ = columns(header, Options())
    except HeaderError:
        guessed = {}
    uploads = request.app[UPLOADS]
    for old in list(uploads.values())[: max(0, len(uploads) - KEEP_UPLOADS)]:
        _discard(old.path)  # never mapped: forgotten
        del uploads[old.id]
    up = Upload(secrets.token_urlsafe(12), path, saved[0], saved[1], header, guessed)
    uploads[up.id] = up
    location = str(request.app.router["contacts_import_map"].url_for(upload=up.id))
    if "HX-Request" in request.headers:
        return web.Response(status=204, headers={"HX-Redirect": location})
    return redirect(location)


def _discard(path: Path) -> None:
    path.unlink(missing_ok=True)


def _upload(request: web.Request) -> Upload | None:
    return request.app[UPLOADS].get(request.match_info["upload"])


async def mapping_page(request: web.Request, problem: str | None = None) -> web.StreamResponse:
    up = _upload(request)
    if up is None:
        return error_response(request, 404, "not_found", "No such upload; upload the file again.")
    gw = _gateway(request)
    return render(
        request,
        "contacts_import_map.html",
        status=422 if problem else 200,
        up=up,
        fields=[(f, FIELD_LABELS[f]) for f in FIELDS],
        region=gw.contacts.region,
        groups=await gw.contacts.groups(user_caller(request)),
        problem=problem,
    )


async def start(request: web.Request) -> web.StreamResponse:
    up = _upload(request)
    if up is None:
        return error_response(request, 404, "not_found", "No such upload; upload the file again.")
    form = await request.post()
    mapping: dict[str, str] = {}
    for f in FIELDS:
        text = str(form.get(f"col_{f}", ""))
        if text.isdigit() and int(text) < len(up.header):
            mapping[f] = up.header[int(text)]
    if "number" not in mapping:
        return await mapping_page(request, "Choose the column that holds the phone number.")
    region = str(form.get("region", "")).strip().upper() or None
    group = str(form.get("group", "")) or None
    options = Options(mapping, region, group, up.name)
    try:
        job = _gateway(request).contacts.imports.start(
            user_caller(request), up.path, up.size, options
        )
    except ApiError as e:
        return await mapping_page(request, _problem(e))
    del request.app[UPLOADS][up.id]
    return redirect(str(request.app.router["contacts_import_job"].url_for(job=job.id)))


async def job_page(request: web.Request) -> web.StreamResponse:
    try:
        job = _gateway(request).contacts.imports.job(request.match_info["job"])
    except ApiError as e:
        return error_response(request, 404, e.code, _problem(e))
    return render(request, "contacts_import_job.html", job=job)


async def job_progress(request: web.Request) -> web.StreamResponse:
    """The progress fragment the job page polls (htmx) until the import is done."""
    try:
        job = _gateway(request).contacts.imports.job(request.match_info["job"])
    except ApiError as e:
        return error_response(request, 404, e.code, _problem(e))
    return render(request, "_contacts_progress.html", job=job)


def install(app: web.Application, gateway: Gateway) -> None:
    app[UPLOADS] = {}

    async def stop(app: web.Application) -> None:
        await gateway.contacts.imports.stop()
        for up in app[UPLOADS].values():
            _discard(up.path)

    app.on_shutdown.append(stop)


ROUTES: tuple[PanelRoute, ...] = (
    PanelRoute("GET", "/contacts", contacts_page, OPERATORS, True, "contacts"),
    PanelRoute("GET", "/contacts/import", import_form, OPERATORS, False, "contacts_import"),
    PanelRoute("POST", "/contacts/import", upload, OPERATORS, False, "contacts_import_upload"),
    PanelRoute(
        "GET", "/contacts/import/{upload}", mapping_page, OPERATORS, False, "contacts_import_map"
    ),
    PanelRoute(
        "POST", "/contacts/import/{upload}", start, OPERATORS, False, "contacts_import_start"
    ),
    PanelRoute("GET", "/contacts/imports/{job}", job_page, OPERATORS, False, "contacts_import_job"),
    PanelRoute(
        "GET",
        "/contacts/imports/{job}/progress",
        job_progress,
        OPERATORS,
        False,
        "contacts_import_progress",
    ),
    PanelRoute("GET", "/contacts/{key:[0-9a-f]{32}}", contact_page, OPERATORS, True, "contact"),
    PanelRoute(
        "POST", "/contacts/{key:[0-9a-f]{32}}", contact_edit, OPERATORS, True, "contact_edit"
    ),
)
