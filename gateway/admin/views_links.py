"""The Links page: every named link with its clicks (people apart from bots), and a
form to create one (admin). Operators look; the use case (`gw.links`) checks the
destination against the allowlist and audits what it creates, as for the API."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from aiohttp import web

from gateway.admin.panel import actor
from gateway.admin.render import redirect, render
from gateway.admin.routing import ADMIN, OPERATORS, PanelRoute, current_user
from gateway.errors import ApiError
from gateway.links.usecase import Links
from gateway.usecases import Caller
from gateway.web.context import GATEWAY


def _links(request: web.Request) -> Links:
    return request.app[GATEWAY].links


def _caller(request: web.Request) -> Caller:
    role = current_user(request).role
    caller = Caller.for_panel_user(actor(request), reads_phi=False, acts=role in OPERATORS)
    return dataclasses.replace(caller, may_edit_templates=role in ADMIN)


async def _page(
    request: web.Request,
    status: int = 200,
    *,
    problem: str | None = None,
    form: dict[str, str] | None = None,
) -> web.Response:
    links = _links(request)
    return render(
        request,
        "links.html",
        status=status,
        links=await links.list(_caller(request)),
        enabled=links.config.enabled,
        short_host=links.config.base_url,
        allow=links.config.allow,
        may_edit=current_user(request).role in ADMIN,
        problem=problem,
        notice=request.query.get("notice"),
        form=form or {"name": "", "destination": "", "expires_on": ""},
    )


async def list_page(request: web.Request) -> web.StreamResponse:
    return await _page(request)


def _expiry(text: str) -> float:
    """The end of a date (`YYYY-MM-DD`, UTC) as Unix seconds; ApiError if not a date."""
    try:
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise ApiError(
            422, "invalid_field", "expires_on: a date (YYYY-MM-DD)", field="expires_on"
        ) from None
    return day.timestamp() + 86400.0


async def create(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    fields = {k: str(form.get(k, "")).strip() for k in ("name", "destination", "expires_on")}
    try:
        expires = _expiry(fields["expires_on"]) if fields["expires_on"] else None
        await _links(request).create(
            _caller(request), fields["name"], fields["destination"], expires
        )
    except ApiError as e:
        message = e.message[:1].upper() + e.message[1:]
        return await _page(request, 409 if e.status == 409 else 422, problem=message, form=fields)
    return redirect("/links?notice=created")


ROUTES: tuple[PanelRoute, ...] = (
    PanelRoute("GET", "/links", list_page, OPERATORS, False, "links"),
    PanelRoute("POST", "/links", create, ADMIN, False, "link_create"),
)
