"""The groups pages (admin, operator): groups with their member counts, create one,
add everyone in an audience (chosen by tags, language, age band, clinic, preference)
to a group, delete one; and saved audiences with their size counted when shown.

Everything goes through `gw.contacts` with the signed-in user as the `Caller` (audited).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.admin.panel import user_caller
from gateway.admin.render import error_response, redirect, render
from gateway.admin.routing import OPERATORS, PanelRoute
from gateway.app import Gateway
from gateway.contacts.audience import AudienceSpec
from gateway.contacts.csv_import import key_of
from gateway.errors import ApiError
from gateway.web.context import GATEWAY

AUDIENCE_FIELDS = ("groups", "tags", "languages", "age_bands", "clinics", "preferences")


def _gateway(request: web.Request) -> Gateway:
    return request.app[GATEWAY]


def _problem(e: ApiError) -> str:
    return e.message[:1].upper() + e.message[1:].rstrip(".") + "."


def spec_of_form(form: Any) -> AudienceSpec | str:
    """The audience a form describes (checkboxes and comma-separated keys); a problem
    to show when a value is not a key."""
    values: dict[str, list[str]] = {}
    for name in AUDIENCE_FIELDS:
        out: list[str] = []
        for raw in form.getall(name, []):
            for part in (p.strip() for p in str(raw).split(",")):
                if not part:
                    continue
                k = key_of(part)
                if k is None:
                    return (
                        f"{name.replace('_', ' ').capitalize()}: letters, digits and _ . : - only."
                    )
                out.append(k)
        values[name] = out
    return AudienceSpec(**values)


async def groups_page(
    request: web.Request, problem: str | None = None, status: int = 200
) -> web.StreamResponse:
    contacts = _gateway(request).contacts
    caller = user_caller(request)
    return render(
        request,
        "groups.html",
        status=status,
        groups=await contacts.groups(caller),
        audiences=await contacts.audiences(caller),
        facets=await contacts.facets(),
        notice=request.query.get("notice"),
        problem=problem,
    )


async def create_group(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    description = str(form.get("description", "")).strip() or None
    try:
        g = await _gateway(request).contacts.create_group(
            user_caller(request), str(form.get("name", "")), description
        )
    except ApiError as e:
        return await groups_page(request, _problem(e), 409 if e.status == 409 else 422)
    return redirect(str(request.app.router["group"].url_for(group_id=g.id)) + "?notice=created")


async def save_audience(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    spec = spec_of_form(form)
    if isinstance(spec, str):
        return await groups_page(request, spec, 422)
    try:
        await _gateway(request).contacts.save_audience(
            user_caller(request), str(form.get("name", "")), spec
        )
    except ApiError as e:
        return await groups_page(request, _problem(e), 409 if e.status == 409 else 422)
    return redirect("/groups?notice=audience_saved")


async def delete_audience(request: web.Request) -> web.StreamResponse:
    try:
        await _gateway(request).contacts.delete_audience(
            user_caller(request), request.match_info["audience_id"]
        )
    except ApiError as e:
        return error_response(request, e.status, e.code, _problem(e))
    return redirect("/groups?notice=audience_deleted")


async def group_page(
    request: web.Request, problem: str | None = None, status: int = 200
) -> web.StreamResponse:
    contacts = _gateway(request).contacts
    caller = user_caller(request)
    try:
        group = await contacts.group(caller, request.match_info["group_id"])
    except ApiError as e:
        return error_response(request, e.status, e.code, _problem(e))
    return render(
        request,
        "group.html",
        status=status,
        group=group,
        audiences=await contacts.audiences(caller),
        facets=await contacts.facets(),
        notice=request.query.get("notice"),
        added=request.query.get("added"),
        problem=problem,
    )


async def add_members(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    contacts = _gateway(request).contacts
    gid = request.match_info["group_id"]
    saved = str(form.get("audience", ""))
    spec: AudienceSpec | str
    try:
        spec = (
            (await contacts.audience(user_caller(request), saved)).audience.spec
            if saved
            else spec_of_form(form)
        )
        if isinstance(spec, str):
            return await group_page(request, spec, 422)
        if spec.everyone:
            return await group_page(request, "Choose who joins: a saved audience or a filter.", 422)
        added = await contacts.add_members(user_caller(request), gid, audience=spec)
    except ApiError as e:
        if e.status == 404 and not saved:
            return error_response(request, 404, e.code, _problem(e))
        return await group_page(request, _problem(e), 422)
    url = request.app.router["group"].url_for(group_id=gid)
    return redirect(f"{url}?notice=added&added={added}")


async def delete_group(request: web.Request) -> web.StreamResponse:
    try:
        await _gateway(request).contacts.delete_group(
            user_caller(request), request.match_info["group_id"]
        )
    except ApiError as e:
        return error_response(request, e.status, e.code, _problem(e))
    return redirect("/groups?notice=deleted")


_GROUP = "/groups/{group_id:g[0-9a-f]{12}}"
_AUDIENCE = "/audiences/{audience_id:a[0-9a-f]{12}}"
ROUTES: tuple[PanelRoute, ...] = (
    PanelRoute("GET", "/groups", groups_page, OPERATORS, False, "groups"),
    PanelRoute("POST", "/groups", create_group, OPERATORS, False, "group_create"),
    PanelRoute("GET", _GROUP, group_page, OPERATORS, False, "group"),
    PanelRoute("POST", _GROUP + "/members", add_members, OPERATORS, False, "group_add"),
    PanelRoute("POST", _GROUP + "/delete", delete_group, OPERATORS, False, "group_delete"),
    PanelRoute("POST", "/audiences", save_audience, OPERATORS, False, "audience_save"),
    PanelRoute("POST", _AUDIENCE + "/delete", delete_audience, OPERATORS, False, "audience_delete"),
)
