"""The templates pages: the list, and an editor with a live preview (admin edits,
operators look and preview).

The editor's form is posted to the preview as the user types (htmx, debounced), and
the answer is a fragment: each variant's text with sample values, its encoding,
segment count and characters, and the lint's problems. Saving goes through the same
use case as the API (`gw.templates`), which refuses what the lint refuses and audits
what it saves. Variables are written one a line: `name`, or `name: type [max_length] [= default]`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from gateway.admin.panel import actor
from gateway.admin.render import error_response, redirect, render
from gateway.admin.routing import ADMIN, OPERATORS, PanelRoute, current_user
from gateway.clinical.notices import NoticeKind
from gateway.consent.purposes import CLIENT_PURPOSES
from gateway.errors import ApiError
from gateway.templates.store import Version
from gateway.templates.usecase import DraftRequest, Templates
from gateway.templates.variables import VarType
from gateway.usecases import Caller
from gateway.web.context import GATEWAY


def _templates(request: web.Request) -> Templates:
    return request.app[GATEWAY].templates


def _caller(request: web.Request) -> Caller:
    role = current_user(request).role
    caller = Caller.for_panel_user(actor(request), reads_phi=False, acts=role in OPERATORS)
    return dataclasses.replace(caller, may_edit_templates=role in ADMIN)


def variables_text(version: Version | None) -> str:
    if version is None:
        return "clinic\nstart"
    return "\n".join(
        f"{v.name}: {v.type.value}"
        + (f" {v.max_length}" if v.max_length else "")
        + (f" = {v.default}" if v.default is not None else "")
        for v in version.draft.variables
    )


def parse_variables(text: str) -> dict[str, dict[str, object]]:
    """`name` or `name: type [max_length] [= default]` per line; ApiError naming the line."""
    out: dict[str, dict[str, object]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        line, eq, default = line.partition("=")
        name, _, rest = line.partition(":")
        parts = rest.split()
        spec: dict[str, object] = {"type": parts[0] if parts else None}
        if eq:
            spec["default"] = default.strip()
        if len(parts) > 1:
            if not parts[1].isdigit() or len(parts) > 2:
                raise ApiError(
                    422,
                    "invalid_variable",
                    f"variables line {number}: write name: type max_length",
                    field="variables",
                )
            spec["max_length"] = int(parts[1])
        out[name.strip()] = spec
    return out


def _form_request(form: Any) -> DraftRequest:
    variants = None
    body = str(form.get("body", ""))
    body_b = str(form.get("body_b", "")).strip()
    if body_b:
        share = str(form.get("share_b", "50"))
        weight_b = int(share) if share.isdigit() and 1 <= int(share) <= 99 else 50
        name_a = str(form.get("name_a", "")) or "A"
        name_b = str(form.get("name_b", "")) or "B"
        variants = ((name_a, body, 100 - weight_b), (name_b, body_b, weight_b))
    return DraftRequest(
        str(form.get("language", "")).strip(),
        str(form.get("purpose", "")),
        parse_variables(str(form.get("variables", ""))),
        None if variants else body,
        variants,
        str(form.get("kind", "")) or None,
        str(form.get("name", "")).strip() or "draft",
    )


def _editor(
    request: web.Request,
    version: Version | None,
    versions: list[Version],
    *,
    status: int = 200,
    form: dict[str, str] | None = None,
    problem: str | None = None,
) -> web.Response:
    d = version.draft if version is not None else None
    variants = d.variants if d is not None else ()
    values = {
        "name": d.name if d else "",
        "language": d.language if d else "en",
        "purpose": d.purpose if d else "appointment",
        "kind": (d.kind or "") if d else "",
        "variables": variables_text(version),
        "body": variants[0].body if variants else "",
        "body_b": variants[1].body if len(variants) > 1 else "",
        "name_a": (variants[0].name or "A") if variants else "A",
        "name_b": (variants[1].name or "B") if len(variants) > 1 else "B",
        "share_b": str(
            round(100 * variants[1].weight / sum(v.weight for v in variants))
            if len(variants) > 1
            else 50
        ),
    }
    values.update(form or {})
    return render(
        request,
        "template_edit.html",
        status=status,
        form=values,
        version=version,
        versions=versions,
        purposes=[p.value for p in CLIENT_PURPOSES],
        kinds=[k.value for k in NoticeKind],
        types=[t.value for t in VarType],
        may_edit=current_user(request).role in ADMIN and len(variants) <= 2,
        many_variants=len(variants) > 2,
        problem=problem,
        notice=request.query.get("notice"),
    )


async def list_page(request: web.Request) -> web.StreamResponse:
    heads = await _templates(request).heads(_caller(request))
    may_edit = current_user(request).role in ADMIN
    return render(request, "templates.html", heads=heads, may_edit=may_edit)


async def new_page(request: web.Request) -> web.StreamResponse:
    return _editor(request, None, [])


async def edit_page(request: web.Request) -> web.StreamResponse:
    name, language = request.match_info["tpl"], request.match_info["language"]
    try:
        versions = await _templates(request).versions(_caller(request), name)
    except ApiError as e:
        return error_response(request, e.status, e.code, "No template with this name.")
    mine = [v for v in versions if v.draft.language == language]
    if not mine:
        return error_response(request, 404, "not_found", "No template in this language.")
    active = next((v for v in mine if v.active), mine[0])
    return _editor(request, active, mine)


async def preview(request: web.Request) -> web.StreamResponse:
    """The live preview fragment (htmx posts the editor's form as the user types)."""
    form = await request.post()
    try:
        done = _templates(request).preview(_caller(request), _form_request(form), {})
    except ApiError as e:
        return render(request, "_template_preview.html", preview=None, problem=e.message)
    return render(request, "_template_preview.html", preview=done, problem=None)


async def save(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    fields = {k: str(form.get(k, "")) for k in ("name", "language", "purpose", "kind")}
    texts = ("variables", "body", "body_b", "share_b", "name_a", "name_b")
    fields.update({k: str(form.get(k, "")) for k in texts})
    try:
        saved = await _templates(request).save(_caller(request), _form_request(form))
    except ApiError as e:
        message = e.message[:1].upper() + e.message[1:]
        return _editor(request, None, [], status=422, form=fields, problem=message)
    d = saved.draft
    return redirect(f"/templates/{d.name}/{d.language}?notice=saved")


async def activate(request: web.Request) -> web.StreamResponse:
    m = request.match_info
    form = await request.post()
    version = str(form.get("version", ""))
    try:
        if not version.isdigit():
            raise ApiError(422, "invalid_field", "version: a number", field="version")
        await _templates(request).activate(_caller(request), m["tpl"], m["language"], int(version))
    except ApiError as e:
        return error_response(request, e.status, e.code, e.message)
    return redirect(f"/templates/{m['tpl']}/{m['language']}?notice=activated")


async def delete(request: web.Request) -> web.StreamResponse:
    m = request.match_info
    try:
        await _templates(request).delete(_caller(request), m["tpl"], m["language"])
    except ApiError as e:
        return error_response(request, e.status, e.code, e.message)
    return redirect("/templates?notice=deleted")


_ONE = "/templates/{tpl:[a-z][a-z0-9_.-]{0,63}}/{language:[a-z]{2,3}(?:-[A-Z]{2})?}"
ROUTES: tuple[PanelRoute, ...] = (
    PanelRoute("GET", "/templates", list_page, OPERATORS, False, "templates"),
    PanelRoute("GET", "/templates/new", new_page, OPERATORS, False, "template_new"),
    PanelRoute("POST", "/templates/preview", preview, OPERATORS, False, "template_preview"),
    PanelRoute("POST", "/templates/save", save, ADMIN, False, "template_save"),
    PanelRoute("GET", _ONE, edit_page, OPERATORS, False, "template_edit"),
    PanelRoute("POST", _ONE + "/activate", activate, ADMIN, False, "template_activate"),
    PanelRoute("POST", _ONE + "/delete", delete, ADMIN, False, "template_delete"),
)
