"""The "Analytics" page (admin, operator, viewer): figures over a range of days, as
tiles, server-drawn charts and one table per dimension, and their CSV export.

Everything goes through `gw.analytics` with the signed-in user as the `Caller`; the
page reads the daily sums only, so a year opens as fast as a week. The figures are
counts per campaign, variant, rule, clinic, purpose and route: nothing here is PHI,
so nothing is masked. The export is audited by the use case.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from gateway.admin.charts import bars, line_chart
from gateway.admin.panel import actor
from gateway.admin.render import render
from gateway.admin.routing import OPERATORS, PanelRoute
from gateway.analytics.figures import Dimension
from gateway.analytics.usecase import GROUPS, Analytics, DayFigures, Range
from gateway.app import Gateway
from gateway.csv_safe import csv_text
from gateway.errors import ApiError
from gateway.panel_users import Role
from gateway.usecases import Caller
from gateway.web.context import GATEWAY

READERS = OPERATORS | {Role.VIEWER}
TITLES = {
    Dimension.CAMPAIGN: ("Campaigns", "Campaign"),
    Dimension.TEMPLATE: ("Template variants", "Variant"),
    Dimension.RULE: ("Reminder rules", "Rule"),
    Dimension.CLINIC: ("Clinics", "Clinic"),
    Dimension.PURPOSE: ("Purposes", "Purpose"),
    Dimension.ROUTE: ("Routes (cost: parts sent)", "Route"),
}


def _analytics(request: web.Request) -> Analytics:
    gw: Gateway = request.app[GATEWAY]
    return gw.analytics


def _caller(request: web.Request) -> Caller:
    return Caller.for_panel_user(actor(request), reads_phi=False, acts=False)


def _span(request: web.Request) -> Range:
    q = request.query
    return _analytics(request).range_of(q.get("from") or None, q.get("to") or None)


def _charts(days: list[DayFigures]) -> dict[str, Any]:
    labels = [d.day for d in days]

    def values(*names: str) -> list[int]:
        return [sum(d.figures[n] for n in names) for d in days]

    outcomes = line_chart(labels, [
        ("Sent", "series-sent", values("sent")),
        ("Delivered", "series-delivered", values("delivered")),
        ("Failed", "series-failed", values("failed")),
        ("Blocked", "series-blocked", values("blocked")),
    ])  # fmt: skip
    answers = line_chart(labels, [
        ("Replies", "series-sent", values("replied_confirm", "replied_cancel", "replied_other")),
        ("Opted out", "series-failed", values("opted_out")),
        ("Clicked (people)", "series-delivered", values("clicked")),
    ])  # fmt: skip
    return {"outcomes": outcomes, "answers": answers}


async def analytics_page(request: web.Request) -> web.StreamResponse:
    a, caller = _analytics(request), _caller(request)
    problem: str | None = None
    try:
        span = _span(request)
    except ApiError as e:  # said on the page, over the default range
        span, problem = a.range_of(None, None), e.message[:1].upper() + e.message[1:] + "."
    # Side by side: each read takes its own connection of the read pool.
    summary, days, groups = await asyncio.gather(
        a.summary(caller, span),
        a.timeseries(caller, span),
        asyncio.gather(*(a.grouped(caller, d, span) for d in GROUPS)),
    )
    tables = [(d, *TITLES[d], rows) for d, rows in zip(GROUPS, groups, strict=True)]
    query = urlencode({"from": span.first.isoformat(), "to": span.last.isoformat()})
    return render(
        request,
        "analytics.html",
        status=400 if problem else 200,
        span=span,
        problem=problem,
        time_zone=a.time_zone,
        summary=summary,
        charts=_charts(days),
        reasons=bars(list(summary.blocked_by_reason.items()), "bar-blocked"),
        latency=bars(list(summary.latency.items()), "bar-latency"),
        tables=tables,
        export_url=f"{request.app.router['analytics_export'].url_for()}?{query}",
    )


async def export(request: web.Request) -> web.StreamResponse:
    """Every dimension's figures over the range as one CSV file (audited)."""
    try:
        span = _span(request)
    except ApiError as e:
        raise web.HTTPBadRequest(text=e.message) from None
    rows = await _analytics(request).export(_caller(request), [Dimension.TOTAL, *GROUPS], span)
    name = f"analytics-{span.first.isoformat()}-{span.last.isoformat()}.csv"
    return web.Response(
        text=csv_text(rows),
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{name}"',
        },
    )


ROUTES: tuple[PanelRoute, ...] = (
    PanelRoute("GET", "/analytics", analytics_page, READERS, False, "analytics"),
    PanelRoute("GET", "/analytics/export.csv", export, READERS, False, "analytics_export"),
)
