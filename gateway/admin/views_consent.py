"""The consent pages (admin, operator): look a number up, record an opt-out taken by
phone or email, the review queue of free-text revocations, import with progress, and
the export (admin).

Everything goes through `gw.usecases.consent` with the signed-in user as the `Caller`,
which audits it. A number is typed into a POST form and never travels in a URL (an
address bar, history and logs keep those); pages show it masked. An import is uploaded
to an owner-only file in the data directory and read from there by a background task
in chunks, while the page polls its progress; the file is deleted when it is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from aiohttp import BodyPartReader, web

from gateway.admin.panel import actor
from gateway.admin.render import error_response, redirect, render
from gateway.admin.routing import ADMIN, OPERATORS, PHI_READERS, PanelRoute, current_user
from gateway.app import Gateway
from gateway.consent.ledger import ALL_PROGRAMS, Source
from gateway.consent.purposes import CLIENT_PURPOSES, SCOPE_ALL, Kind, kind_scope, purpose_scope
from gateway.errors import ApiError
from gateway.usecases import Caller
from gateway.usecases.consent import DecisionRequest, ImportReport
from gateway.usecases.consent_csv import (
    EXPORT_HEADER,
    Options,
    csv_line,
    export_line,
    file_chunks,
    parse_mapping,
)
from gateway.usecases.masking import mask_number
from gateway.web.context import GATEWAY

log = structlog.get_logger("smsgw.admin.consent")
PANEL_SOURCES: tuple[Source, ...] = ("phone", "email", "panel")
UPLOAD_CHUNK = 64 * 1024
CSRF_HEADER = "X-CSRF-Token"
KEEP_JOBS = 20
MAX_UPLOAD = 256 * 2**20  # about 8 million rows


@dataclass
class ImportJob:
    """An import running in the background; its page polls `report` and `read`."""

    id: str
    size: int
    report: ImportReport = field(default_factory=ImportReport)
    read: int = 0
    task: asyncio.Task[None] | None = None

    @property
    def percent(self) -> int:
        if self.report.done:
            return 100
        return min(99, self.read * 100 // self.size) if self.size else 0


JOBS: web.AppKey[dict[str, ImportJob]] = web.AppKey("consent_import_jobs", dict)


def _gateway(request: web.Request) -> Gateway:
    return request.app[GATEWAY]


def _caller(request: web.Request) -> Caller:
    role = current_user(request).role
    return Caller.for_panel_user(
        actor(request), reads_phi=role in PHI_READERS, acts=role in OPERATORS
    )


def scopes() -> list[tuple[str, str]]:
    """(scope, label) for the forms: everything, a kind, or one purpose."""
    out = [(SCOPE_ALL, "Everything (STOP ALL)")]
    out += [
        (kind_scope(k), f"All {k.value} messages")
        for k in Kind
        if k not in (Kind.COMPLIANCE, Kind.EMERGENCY)
    ]
    out += [(purpose_scope(p), f"Only {p.value}") for p in CLIENT_PURPOSES]
    return out


def _page(request: web.Request, status: int = 200, **context: Any) -> web.Response:
    consent = _gateway(request).usecases.consent
    context.setdefault("view", None)
    context.setdefault("masked", None)
    context.setdefault("notice", request.query.get("notice"))
    context.setdefault("problem", None)
    return render(
        request,
        "consent.html",
        status=status,
        scopes=scopes(),
        programs=sorted(consent.programs),
        sources=PANEL_SOURCES,
        may_export=current_user(request).role in ADMIN,
        **context,
    )


def _problem(e: ApiError) -> str:
    return e.message[:1].upper() + e.message[1:].rstrip(".") + "."


async def consent_page(request: web.Request) -> web.StreamResponse:
    return _page(request)


async def lookup(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    number = str(form.get("number", ""))
    try:
        view = await _gateway(request).usecases.consent.lookup(_caller(request), number)
    except ApiError as e:
        return _page(request, 422, problem=_problem(e))
    masked = mask_number(view.contact.number) if view.contact is not None else "this number"
    return _page(request, view=view, masked=masked)


async def record_optout(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    source = str(form.get("source", "phone"))
    note = str(form.get("note", "")).strip() or None
    if source not in PANEL_SOURCES:
        return _page(request, 422, problem="Choose how the opt-out was given.")
    req = DecisionRequest(
        str(form.get("number", "")),
        "opt_out",
        source,
        str(form.get("scope", SCOPE_ALL)),
        str(form.get("program", ALL_PROGRAMS)),
        note,
    )
    try:
        await _gateway(request).usecases.consent.record(_caller(request), req)
    except ApiError as e:
        return _page(request, 422, problem=_problem(e))
    return redirect("/consent?notice=recorded")


# -- the review queue ------------------------------------------------------------------


async def reviews_page(request: web.Request) -> web.StreamResponse:
    items = await _gateway(request).usecases.consent.reviews(_caller(request))
    notice = request.query.get("notice")
    return render(request, "consent_reviews.html", items=items, notice=notice)


async def resolve(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    try:
        await _gateway(request).usecases.consent.resolve(
            _caller(request), request.match_info["id"], str(form.get("action", ""))
        )
    except ApiError as e:
        return error_response(request, e.status, e.code, _problem(e))
    return redirect("/consent/reviews?notice=resolved")


# -- import and export -----------------------------------------------------------------


async def _save_upload(request: web.Request, target: Path) -> tuple[Options, int] | str:
    """Write the uploaded file to `target`, a chunk at a time; the form's options, and
    the size. A form read by the CSRF check (no script: small files only) is taken
    from there; otherwise the upload is streamed."""
    fields: dict[str, str] = {}
    size = 0
    with target.open("wb") as out:
        if CSRF_HEADER in request.headers:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader) or part.name is None:
                    continue
                if part.name == "file":
                    while chunk := await part.read_chunk(UPLOAD_CHUNK):
                        size += len(chunk)
                        if size > MAX_UPLOAD:
                            return f"The file is over {MAX_UPLOAD // 2**20} MiB; split it."
                        await asyncio.to_thread(out.write, chunk)
                else:
                    fields[part.name] = (await part.text())[:512]
        else:
            form = await request.post()
            for name in ("map", "decision", "program"):
                fields[name] = str(form.get(name, ""))
            upload = form.get("file")
            if isinstance(upload, web.FileField):
                while chunk := await asyncio.to_thread(upload.file.read, UPLOAD_CHUNK):
                    size += len(chunk)
                    await asyncio.to_thread(out.write, chunk)
    if size == 0:
        return "Choose a CSV file to import."
    try:
        columns = parse_mapping(fields.get("map", ""))
    except ValueError as e:
        return f"Column mapping: {e}."
    decision = fields.get("decision") or None
    if decision not in (None, "opt_in", "opt_out"):
        return "Choose the list's decision."
    return Options(columns, decision, fields.get("program") or None), size  # type: ignore[arg-type]


def _discard(path: Path) -> None:
    path.unlink(missing_ok=True)


async def start_import(request: web.Request) -> web.StreamResponse:
    gw = _gateway(request)
    fd, name = tempfile.mkstemp(prefix="consent-import-", suffix=".csv", dir=gw.config.data_dir)
    os.close(fd)  # mkstemp made it 0600
    path = Path(name)
    try:
        saved = await _save_upload(request, path)
    except BaseException:
        _discard(path)
        raise
    if isinstance(saved, str):
        _discard(path)
        return _page(request, 422, problem=saved)
    options, size = saved
    job = ImportJob(secrets.token_urlsafe(12), size)
    caller = _caller(request)

    def progress(report: ImportReport) -> None:
        job.report = report

    def counted(n: int) -> None:
        job.read += n

    async def run() -> None:
        try:
            job.report = await gw.usecases.consent.import_csv(
                caller, file_chunks(path, counted), options, progress
            )
        except ApiError as e:
            job.report = ImportReport(done=True, fatal=e.code)
        finally:
            _discard(path)

    jobs = request.app[JOBS]
    for old in [j for j in jobs.values() if j.report.done][: max(0, len(jobs) - KEEP_JOBS)]:
        del jobs[old.id]  # finished ones beyond the newest KEEP_JOBS are forgotten
    jobs[job.id] = job
    job.task = asyncio.create_task(run())
    log.info("consent_import_started", job=job.id, bytes=size)
    location = f"/consent/import/{job.id}"
    if "HX-Request" in request.headers:  # an htmx upload: the browser goes there itself
        return web.Response(status=204, headers={"HX-Redirect": location})
    return redirect(location)


def _job(request: web.Request) -> ImportJob | None:
    return request.app[JOBS].get(request.match_info["job"])


async def import_page(request: web.Request) -> web.StreamResponse:
    job = _job(request)
    if job is None:
        return error_response(request, 404, "not_found", "No such import.")
    return render(request, "consent_import.html", job=job)


async def import_progress(request: web.Request) -> web.StreamResponse:
    """The progress fragment the import page polls (htmx) until the import is done."""
    job = _job(request)
    if job is None:
        return error_response(request, 404, "not_found", "No such import.")
    return render(request, "_consent_progress.html", job=job)


async def export(request: web.Request) -> web.StreamResponse:
    rows = await _gateway(request).usecases.consent.export(_caller(request))
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": 'attachment; filename="consent-ledger.csv"',
        }
    )
    await response.prepare(request)
    await response.write(csv_line(EXPORT_HEADER).encode())
    async for row in rows:
        await response.write(export_line(row).encode())
    await response.write_eof()
    return response


def install(app: web.Application, gateway: Gateway) -> None:
    app[JOBS] = {}

    async def stop_imports(app: web.Application) -> None:
        for job in app[JOBS].values():
            if job.task is not None and not job.task.done():
                job.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await job.task

    app.on_shutdown.append(stop_imports)


ROUTES: tuple[PanelRoute, ...] = (
    PanelRoute("GET", "/consent", consent_page, OPERATORS, False, "consent"),
    PanelRoute("POST", "/consent/lookup", lookup, OPERATORS, True, "consent_lookup"),
    PanelRoute("POST", "/consent/optout", record_optout, OPERATORS, False, "consent_optout"),
    PanelRoute("GET", "/consent/reviews", reviews_page, OPERATORS, True, "consent_reviews"),
    PanelRoute(
        "POST", "/consent/reviews/{id}", resolve, OPERATORS, False, "consent_review_resolve"
    ),
    PanelRoute("POST", "/consent/import", start_import, OPERATORS, False, "consent_import"),
    PanelRoute("GET", "/consent/import/{job}", import_page, OPERATORS, False, "consent_import_job"),
    PanelRoute(
        "GET",
        "/consent/import/{job}/progress",
        import_progress,
        OPERATORS,
        False,
        "consent_import_progress",
    ),
    PanelRoute("GET", "/consent/export", export, ADMIN, True, "consent_export"),
)
