"""The "Surveys" pages (admin, operator): the list, the editor (admin: a new survey
or a new version), the send form (to one number, or to groups and tags), and the
results: a bar chart per question (server-drawn SVG, refreshed by htmx while the page
is open) and the CSV export.

Everything goes through `gw.surveys` with the signed-in user as the `Caller`; saves,
sends and exports are audited there. An export carries the free-text answers (the
panel's operators and admins read PHI) and the numbers only when the box is ticked.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from gateway.admin.panel import actor
from gateway.admin.render import redirect, render
from gateway.admin.routing import ADMIN, OPERATORS, PHI_READERS, PanelRoute, current_user
from gateway.admin.survey_form import FormData, form_of, spec_of
from gateway.consent.purposes import CLIENT_PURPOSES
from gateway.contacts.audience import AudienceSpec
from gateway.csv_safe import csv_line
from gateway.errors import ApiError
from gateway.surveys.results import Results
from gateway.surveys.usecase import Sent, Surveys, Target
from gateway.usecases import Caller
from gateway.web.context import GATEWAY

SURVEY = "{survey_id:svy_[0-9a-f]{16}}"
CHART_WIDTH = 360  # the bars' drawing width in the SVG's units


def _surveys(request: web.Request) -> Surveys:
    return request.app[GATEWAY].surveys


def _caller(request: web.Request) -> Caller:
    role = current_user(request).role
    caller = Caller.for_panel_user(
        actor(request), reads_phi=role in PHI_READERS, acts=role in OPERATORS
    )
    return dataclasses.replace(caller, may_edit_templates=role in ADMIN)


def _problem(e: ApiError) -> str:
    return e.message[:1].upper() + e.message[1:].rstrip(".") + "."


def _list(form: FormData, name: str) -> list[str]:
    return [p.strip() for p in str(form.get(name, "")).split(",") if p.strip()]


def chart(r: Results) -> list[dict[str, Any]]:
    """Per question, its bars with their drawn widths (the longest fills the chart)."""
    out = []
    for q in r.questions:
        top = max((b.count for b in q.bars), default=0) or 1
        bars = [
            {"label": b.label, "count": b.count, "width": round(CHART_WIDTH * b.count / top)}
            for b in q.bars
        ]
        out.append({"q": q, "bars": bars})
    return out


async def _list_page(request: web.Request, status: int = 200, **context: Any) -> web.Response:
    context.setdefault("problem", None)
    context.setdefault("form", form_of())
    return render(
        request,
        "surveys.html",
        status=status,
        surveys=await _surveys(request).list_surveys(_caller(request)),
        may_edit=current_user(request).role in ADMIN,
        purposes=[p.value for p in CLIENT_PURPOSES],
        **context,
    )


async def _survey_page(
    request: web.Request, status: int = 200, **context: Any
) -> web.StreamResponse:
    survey_id = request.match_info["survey_id"]
    try:
        current, versions = await _surveys(request).get(_caller(request), survey_id)
    except ApiError as e:
        return await _list_page(request, 404, problem=_problem(e))
    context.setdefault("problem", None)
    context.setdefault("sent", None)
    context.setdefault("form", form_of(current.spec))
    return render(
        request,
        "survey.html",
        status=status,
        survey=current,
        versions=versions,
        may_edit=current_user(request).role in ADMIN,
        purposes=[p.value for p in CLIENT_PURPOSES],
        notice=request.query.get("notice"),
        **context,
    )


async def surveys_page(request: web.Request) -> web.StreamResponse:
    return await _list_page(request)


async def create_survey(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    try:
        made = await _surveys(request).create(_caller(request), spec_of(form))
    except ApiError as e:
        return await _list_page(request, 422, problem=_problem(e), form=form_of(typed=form))
    return redirect(f"/surveys/{made.id}?notice=saved")


async def survey_page(request: web.Request) -> web.StreamResponse:
    return await _survey_page(request)


async def update_survey(request: web.Request) -> web.StreamResponse:
    survey_id = request.match_info["survey_id"]
    form = await request.post()
    try:
        await _surveys(request).update(_caller(request), survey_id, spec_of(form))
    except ApiError as e:
        return await _survey_page(request, 422, problem=_problem(e), form=form_of(typed=form))
    return redirect(f"/surveys/{survey_id}?notice=saved")


async def send_survey(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    to = str(form.get("to", "")).strip()
    groups, tags = _list(form, "groups"), _list(form, "tags")
    language = str(form.get("language", "")).strip() or None
    try:
        if to and (groups or tags):
            raise ApiError(422, "invalid_field", "to: a number or groups and tags, not both",
                           field="to")  # fmt: skip
        audience = None if to else AudienceSpec(groups=groups, tags=tags)
        if audience is not None and audience.everyone:
            raise ApiError(422, "invalid_field", "to: a number, or a group or tag", field="to")
        sent: Sent = await _surveys(request).send(
            _caller(request),
            request.match_info["survey_id"],
            Target(to or None, audience, language),
        )
    except ApiError as e:
        return await _survey_page(request, e.status if e.status < 500 else 503,
                                  problem=_problem(e))  # fmt: skip
    return await _survey_page(request, sent=sent)


async def _results(request: web.Request) -> Results:
    return await _surveys(request).results(_caller(request), request.match_info["survey_id"])


async def results_page(request: web.Request) -> web.StreamResponse:
    try:
        found = await _results(request)
    except ApiError as e:
        return await _list_page(request, 404, problem=_problem(e))
    live = request.query.get("live") != "off"
    return render(request, "survey_results.html", results=found, chart=chart(found), live=live)


async def results_live(request: web.Request) -> web.StreamResponse:
    """The results' fragment, which the page asks for again every few seconds."""
    found = await _results(request)
    return render(request, "_survey_results.html", results=found, chart=chart(found), live=True)


async def export(request: web.Request) -> web.StreamResponse:
    survey_id = request.match_info["survey_id"]
    header, rows = await _surveys(request).export(
        _caller(request), survey_id, include_numbers=request.query.get("include_numbers") == "on"
    )
    body = csv_line(header) + "".join(csv_line(r) for r in rows)
    return web.Response(
        text=body,
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{survey_id}-results.csv"'},
    )


ROUTES: tuple[PanelRoute, ...] = (
    PanelRoute("GET", "/surveys", surveys_page, OPERATORS, False, "surveys"),
    PanelRoute("POST", "/surveys", create_survey, ADMIN, False, "surveys_create"),
    PanelRoute("GET", f"/surveys/{SURVEY}", survey_page, OPERATORS, False, "survey"),
    PanelRoute("POST", f"/surveys/{SURVEY}", update_survey, ADMIN, False, "survey_update"),
    PanelRoute("POST", f"/surveys/{SURVEY}/send", send_survey, OPERATORS, False, "survey_send"),
    PanelRoute("GET", f"/surveys/{SURVEY}/results", results_page, OPERATORS, False,
               "survey_results"),
    PanelRoute("GET", f"/surveys/{SURVEY}/results/live", results_live, OPERATORS, False,
               "survey_results_live"),
    PanelRoute("GET", f"/surveys/{SURVEY}/results.csv", export, OPERATORS, True,
               "survey_export"),
)  # fmt: skip
