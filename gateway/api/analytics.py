"""`/api/v1/analytics/...`: the panel's analytics figures over HTTP (issue 15, point 7).

Handlers translate to `gw.analytics` and back. Everything needs `read`: the figures are
counts per campaign, variant, rule, clinic, purpose and route, never a number or a
text. `from` and `to` are days in the site's time zone, both included. Each JSON answer
has its CSV twin: the same path ending in `.csv`, or `Accept: text/csv`; a CSV export
is audited, and its cells escaped against formula injection (`gateway/csv_safe.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from aiohttp import web

from gateway.analytics.figures import Dimension, Figures
from gateway.analytics.usecase import GROUPS, Analytics, Range, dimension_of
from gateway.api.handlers import AUTH_RECORD
from gateway.api.openapi import Answer, Query
from gateway.csv_safe import csv_text
from gateway.errors import ApiError
from gateway.usecases import Caller
from gateway.web.context import gateway_of, json_response

PLURAL = {
    Dimension.CAMPAIGN: "campaigns",
    Dimension.TEMPLATE: "templates",
    Dimension.RULE: "rules",
    Dimension.CLINIC: "clinics",
    Dimension.PURPOSE: "purposes",
    Dimension.ROUTE: "routes",
}
_BY_PLURAL = {v: k for k, v in PLURAL.items()}


class FiguresView(msgspec.Struct, frozen=True):
    sent: int
    delivered: int
    failed: int
    expired: int
    blocked: int
    blocked_by_reason: dict[str, int]
    replied_confirm: int
    replied_cancel: int
    replied_other: int
    opted_out: int
    clicked: int  # people (distinct messages) who clicked a tracked link; bots left out
    clicks: int
    parts: int  # message parts sent: the cost counter
    latency_p50_s: float | None
    latency_p90_s: float | None
    latency_histogram: dict[str, int]
    appointments_reminded: int
    appointments_unreminded: int
    noshow_reminded: int
    noshow_unreminded: int
    noshow_rate_reminded: float | None
    noshow_rate_unreminded: float | None


class SummaryView(msgspec.Struct, frozen=True):
    # Not "from"/"to": a fuzzer infers that a response's field feeds an operation's
    # parameter of the same name, and a send's `to` is a phone number.
    first_day: str
    last_day: str
    time_zone: str
    figures: FiguresView


class KeyView(msgspec.Struct, frozen=True):
    key: str
    figures: FiguresView
    name: str | None = None  # a campaign's or rule's name; a variant's: "<campaign> / A"


class GroupView(msgspec.Struct, frozen=True):
    first_day: str
    last_day: str
    time_zone: str
    dimension: str
    rows: list[KeyView]


class DayView(msgspec.Struct, frozen=True):
    day: str
    figures: FiguresView


class SeriesView(msgspec.Struct, frozen=True):
    first_day: str
    last_day: str
    time_zone: str
    dimension: str
    key: str
    days: list[DayView]


def figures_view(f: Figures) -> FiguresView:
    c = f.counts
    return FiguresView(
        c["sent"], c["delivered"], c["failed"], c["expired"], c["blocked"],
        dict(f.blocked_by_reason), c["replied_confirm"], c["replied_cancel"],
        c["replied_other"], c["opted_out"], c["clicked"], c["clicks"], c["parts"],
        f.latency_p50, f.latency_p90, dict(f.latency), c["appointments_reminded"],
        c["appointments_unreminded"], c["noshow_reminded"], c["noshow_unreminded"],
        f.noshow_rate_reminded, f.noshow_rate_unreminded,
    )  # fmt: skip


def _caller(request: web.Request) -> Caller:
    return Caller.for_token(request[AUTH_RECORD])  # set by the guard


def _analytics(request: web.Request) -> Analytics:
    return gateway_of(request).analytics


def _span(request: web.Request, allowed: Sequence[str] = ("from", "to")) -> Range:
    unknown = set(request.query) - set(allowed)
    if unknown:
        raise ApiError(400, "invalid_query", "unknown query parameter")
    return _analytics(request).range_of(request.query.get("from"), request.query.get("to"))


def _wants_csv(request: web.Request) -> bool:
    if request.path.endswith(".csv"):
        return True
    accept = request.headers.get("Accept", "")
    return "text/csv" in accept and "application/json" not in accept


def _csv(rows: list[list[object]], name: str) -> web.Response:
    return web.Response(
        text=csv_text(rows),
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{name}.csv"',
            "Cache-Control": "no-store",
        },
    )


def _name(span: Range, what: str) -> str:
    return f"analytics-{what}-{span.first.isoformat()}-{span.last.isoformat()}"


async def get_summary(request: web.Request) -> web.Response:
    span, a = _span(request), _analytics(request)
    if _wants_csv(request):
        rows = await a.export(_caller(request), [Dimension.TOTAL], span)
        return _csv(rows, _name(span, "summary"))
    found = await a.summary(_caller(request), span)
    return json_response(
        SummaryView(span.first.isoformat(), span.last.isoformat(), a.time_zone, figures_view(found))
    )


async def get_group(request: web.Request) -> web.Response:
    dimension = _BY_PLURAL[request.match_info["group"]]
    span, a = _span(request), _analytics(request)
    if _wants_csv(request):
        rows = await a.export(_caller(request), [dimension], span)
        return _csv(rows, _name(span, PLURAL[dimension]))
    found = await a.grouped(_caller(request), dimension, span)
    return json_response(
        GroupView(
            span.first.isoformat(), span.last.isoformat(), a.time_zone, dimension.value,
            [KeyView(k.key, figures_view(k.figures), k.name) for k in found],
        )
    )  # fmt: skip


async def get_series(request: web.Request) -> web.Response:
    span, a = _span(request, ("from", "to", "dimension", "key")), _analytics(request)
    dimension = dimension_of(request.query.get("dimension"))
    key = request.query.get("key", "")
    if len(key) > 200:
        raise ApiError(400, "invalid_query", "key: at most 200 characters", field="key")
    if dimension is not Dimension.TOTAL and not key:
        raise ApiError(400, "invalid_query", "key: required with a dimension", field="key")
    if dimension is Dimension.TOTAL:
        key = ""
    if _wants_csv(request):
        rows = await a.export_days(_caller(request), span, dimension, key)
        return _csv(rows, _name(span, "days"))
    days = await a.timeseries(_caller(request), span, dimension, key)
    return json_response(
        SeriesView(
            span.first.isoformat(), span.last.isoformat(), a.time_zone, dimension.value, key,
            [DayView(d.day, figures_view(d.figures)) for d in days],
        )
    )  # fmt: skip


_DAY = {"type": "string", "format": "date", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}
_RANGE = (
    Query("from", "first day (YYYY-MM-DD, site time zone); default 29 days before `to`", _DAY),
    Query("to", "last day, included (YYYY-MM-DD); default today", _DAY),
)
_SERIES = (
    *_RANGE,
    Query(
        "dimension",
        "total (default) or a dimension whose one key is charted",
        {"type": "string", "enum": [d.value for d in Dimension]},
    ),
    Query("key", "the key of `dimension` (a campaign id, a clinic code, ...)",
          {"type": "string", "maxLength": 200}),
)  # fmt: skip
_BAD = Answer(
    400,
    "`invalid_query` (`field`: from, to, dimension, key; or an unknown parameter),"
    " `invalid_range`: from after to, `range_too_long`: over three years",
)
_NO_GROUP = Answer(404, "`not_found`: no such dimension")
_GROUP = "{group:(?:campaigns|templates|rules|clinics|purposes|routes)}"


def endpoints(endpoint: Callable[..., Any]) -> tuple[Any, ...]:
    """The rows of the server's endpoint table, built with its `Endpoint` class."""
    base = "/api/v1/analytics"
    groups = ", ".join(PLURAL[d] for d in GROUPS)
    return (
        endpoint("GET", f"{base}/summary", get_summary, "read",
                 "Totals over a range of days: sent, delivered, failed, blocked by reason,"
                 " replies, opt-outs, clicks (people), parts, latency, no-shows (no PHI)",
                 None, SummaryView, query=_RANGE, answers=(_BAD,)),
        endpoint("GET", f"{base}/summary.csv", get_summary, "read",
                 "The summary as CSV (audited; cells escaped against formula injection)",
                 query=_RANGE, answers=(_BAD,), content_type="text/csv"),
        endpoint("GET", f"{base}/timeseries", get_series, "read",
                 "The figures per day, in total or for one key of a dimension",
                 None, SeriesView, query=_SERIES, answers=(_BAD,)),
        endpoint("GET", f"{base}/timeseries.csv", get_series, "read",
                 "The figures per day as CSV (audited)", query=_SERIES, answers=(_BAD,),
                 content_type="text/csv"),
        endpoint("GET", f"{base}/{_GROUP}", get_group, "read",
                 f"The figures per key of one dimension ({groups}), most sent first",
                 None, GroupView, query=_RANGE, answers=(_BAD, _NO_GROUP)),
        endpoint("GET", f"{base}/{_GROUP}.csv", get_group, "read",
                 "The figures per key of one dimension as CSV (audited)",
                 query=_RANGE, answers=(_BAD, _NO_GROUP), content_type="text/csv"),
    )  # fmt: skip
