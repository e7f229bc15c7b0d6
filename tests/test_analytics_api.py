"""Issue 15 points 7 and 8: `/api/v1/analytics/...` over the real app on loopback.
Messages go through the real intake, scheduler and loopback route (receipts included);
the figures match a direct count of what the store holds; the CSV twin carries the same
figures, escaped, and is audited; no number or text appears anywhere; bad input is
refused with a stable code that never echoes the value; day edges follow the site's
zone across DST."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest

from gateway.analytics.streams import SETTLE
from tests import analytics_rows as rows
from tests.analytics_rows import Msg
from tests.conftest import (
    CANARY_BODY,
    CANARY_DIGITS,
    CANARY_NUMBER,
    GatewayFactory,
    settle_receipts,
)
from tests.test_api import Api, _api, _error

ZONE = ZoneInfo("America/New_York")
FAILING = "+12025550150"
ROUTES = [{"name": "main", "type": "loopback", "latency": 0.0, "receipt_delay": 5.0,
           "undelivered_prefixes": [FAILING]}]  # fmt: skip
BASE = "/api/v1/analytics"


@pytest.fixture
async def api(open_gateway: GatewayFactory) -> AsyncIterator[Api]:
    gw = await open_gateway(ROUTES, analytics={"time_zone": "America/New_York"})
    async for a in _api(gw, frozenset({"send", "read"})):
        yield a


async def _send(api: Api, to: str, **extra: Any) -> dict[str, Any]:
    r = await api.post("/api/v1/messages", {"to": to, "body": CANARY_BODY, **extra})
    assert r.status == 202, await r.text()
    return dict(await r.json())


async def _traffic(api: Api) -> list[str]:
    """Real sends: delivered, failed and blocked ones; two made a campaign's variants."""
    ids = [(await _send(api, CANARY_NUMBER))["id"] for _ in range(3)]
    ids.append((await _send(api, FAILING))["id"])
    blocked = await _send(api, CANARY_NUMBER, purpose="marketing")
    assert blocked["status"] == "blocked"

    def campaign(conn: Any) -> None:  # the campaigns branch names them so; here directly
        conn.execute("UPDATE messages SET campaign_id = 'cmp_flu', variant = 'A' WHERE id = ?",
                     (ids[0],))  # fmt: skip
        conn.execute("UPDATE messages SET campaign_id = 'cmp_flu', variant = 'B' WHERE id IN"
                     " (?, ?)", (ids[1], ids[3]))  # fmt: skip

    await api.gw.store.writer.run(campaign)
    await api.gw.scheduler.run_until_idle()
    api.gw.clock.advance(SETTLE + 5)  # type: ignore[attr-defined]
    await settle_receipts(api.gw)
    await api.gw.analytics.refresh()
    return ids


async def _count(api: Api, sql: str, *args: Any) -> int:
    row = await api.gw.store.reader.one(sql, args)
    assert row is not None
    return int(row[0])


async def _json(api: Api, path: str) -> dict[str, Any]:
    r = await api.get(path)
    assert r.status == 200, await r.text()
    assert r.content_type == "application/json"
    return dict(await r.json())


async def test_the_figures_match_what_went_through_the_route(api: Api) -> None:
    await _traffic(api)
    summary = await _json(api, f"{BASE}/summary")
    f = summary["figures"]
    events = "SELECT count(*) FROM message_events WHERE state = ?"
    assert f["sent"] == await _count(api, events, "sent") == 4
    assert f["delivered"] == await _count(api, events, "delivered") == 3
    assert f["failed"] == await _count(api, events, "failed") == 1
    blocked = await api.gw.store.reader.all(
        "SELECT error_code, count(*) FROM messages WHERE state = 'blocked' GROUP BY error_code"
    )
    assert f["blocked_by_reason"] == {r[0]: r[1] for r in blocked} and f["blocked"] == 1
    assert f["parts"] == await _count(
        api, "SELECT sum(segments) FROM messages WHERE state IN ('delivered', 'failed')"
    )
    # receipts come when the clock moves on (35 s after the submits here)
    assert f["latency_histogram"]["<=60s"] == 3 and f["latency_p50_s"] == 60.0
    assert summary["time_zone"] == "America/New_York"
    assert summary["last_day"] == str(api.gw.analytics.range_of(None, None).last)

    campaigns = await _json(api, f"{BASE}/campaigns")
    assert [(r["key"], r["figures"]["sent"], r["figures"]["delivered"], r["figures"]["failed"])
            for r in campaigns["rows"]] == [("cmp_flu", 3, 2, 1)]  # fmt: skip
    variants = await _json(api, f"{BASE}/templates")
    assert {r["key"]: r["figures"]["sent"] for r in variants["rows"]} == {
        "cmp_flu/A": 1, "cmp_flu/B": 2}  # fmt: skip
    routes = await _json(api, f"{BASE}/routes")
    assert [(r["key"], r["figures"]["parts"]) for r in routes["rows"]] == [("main", 4)]
    purposes = await _json(api, f"{BASE}/purposes")
    by_purpose = {r["key"]: r["figures"] for r in purposes["rows"]}
    assert by_purpose["marketing"]["blocked"] == 1 and by_purpose["informational"]["sent"] == 4

    series = await _json(api, f"{BASE}/timeseries?dimension=campaign&key=cmp_flu")
    assert len(series["days"]) == 30 and sum(d["figures"]["sent"] for d in series["days"]) == 3


async def test_the_csv_twin_has_the_same_figures_escaped_and_is_audited(api: Api) -> None:
    await _traffic(api)

    def odd_keys(conn: Any) -> None:  # codes a site typed: a spreadsheet must not run them
        at = api.gw.clock.time()
        for n, clinic in enumerate(['=HYPERLINK("http://x")', "+cmd", "-2+1", "@SUM(A1)"]):
            rows.add_contact(conn, 100 + n, clinic, at)
            rows.add_message(conn, Msg(f"odd{n}", 100 + n, at))
            rows.add_event(conn, f"odd{n}", at + 1, "sent", "main")

    await api.gw.store.writer.run(odd_keys)
    api.gw.clock.advance(5)  # type: ignore[attr-defined]
    await api.gw.analytics.refresh()
    r = await api.get(f"{BASE}/clinics.csv")
    assert r.status == 200 and r.content_type == "text/csv"
    assert "attachment" in r.headers["Content-Disposition"]
    table = list(csv.DictReader(io.StringIO(await r.text())))
    assert sorted(t["key"] for t in table) == sorted(
        ['\'=HYPERLINK("http://x")', "'+cmd", "'-2+1", "'@SUM(A1)"]
    )
    assert all(t["dimension"] == "clinic" and t["sent"] == "1" for t in table)

    summary = (await _json(api, f"{BASE}/summary"))["figures"]
    for path, headers in ((f"{BASE}/summary.csv", {}), (f"{BASE}/summary", {"Accept": "text/csv"})):
        r = await api.client.get(path, headers={**api.auth(), **headers})
        (line,) = list(csv.DictReader(io.StringIO(await r.text())))
        for name in ("sent", "delivered", "failed", "blocked", "parts", "opted_out", "clicked"):
            assert int(line[name]) == summary[name], name
        assert line["latency_p50_s"] == "60.0"
    entries = await api.gw.audit.entries(limit=50)
    exported = [e for e in entries if e.action == "analytics_exported"]
    assert len(exported) == 3 and {e.target_id for e in exported} == {"clinic", "total"}


async def test_no_number_and_no_text_in_any_answer(api: Api) -> None:
    await _traffic(api)
    paths = [f"{BASE}/summary", f"{BASE}/timeseries", f"{BASE}/summary.csv",
             f"{BASE}/timeseries.csv"]  # fmt: skip
    for group in ("campaigns", "templates", "rules", "clinics", "purposes", "routes"):
        paths += [f"{BASE}/{group}", f"{BASE}/{group}.csv"]
    words = [w for w in re.split(r"\W+", CANARY_BODY) if len(w) > 3]
    for path in paths:
        text = await (await api.get(path)).text()
        assert CANARY_DIGITS not in text and FAILING[2:] not in text, path
        assert not [w for w in words if w in text], path
    stored = await api.gw.store.reader.all(
        "SELECT dim, key, reason FROM analytics_blocked UNION ALL"
        " SELECT dim, key, '' FROM analytics_daily"
    )
    assert stored and not [r for r in stored if any(CANARY_DIGITS in str(v) for v in r)]


@pytest.mark.parametrize(
    ("query", "status", "code", "field"),
    [
        ("summary?from=2027-03-20&to=2027-03-01", 400, "invalid_range", "from"),
        ("summary?from=2027-02-30", 400, "invalid_query", "from"),
        ("summary?to=yesterday%3Cscript%3E", 400, "invalid_query", "to"),
        ("summary?from=2020-01-01&to=2027-01-01", 400, "range_too_long", "from"),
        ("summary?colour=red", 400, "invalid_query", None),
        ("timeseries?dimension=patient", 400, "invalid_query", "dimension"),
        ("timeseries?dimension=clinic", 400, "invalid_query", "key"),
        ("campaigns.csv?from=2027-13-01", 400, "invalid_query", "from"),
        ("patients", 404, "not_found", None),
    ],
)
async def test_bad_input_is_refused_and_never_echoed(
    api: Api, query: str, status: int, code: str, field: str | None
) -> None:
    error = await _error(await api.get(f"{BASE}/{query}"), status, code)
    assert error.get("field") == field
    sent = [v for values in parse_qs(urlsplit(query).query).values() for v in values]
    for echoed in sent:
        assert echoed not in error["message"]
    assert not [e for e in await api.gw.audit.entries(limit=20) if e.action == "analytics_exported"]


async def test_a_range_is_whole_days_of_the_site_zone_across_dst(api: Api) -> None:
    def edges(conn: Any) -> None:  # sent 23:59 Saturday, 00:01 and 23:59 Sunday (DST starts)
        for n, (d, hh, mm) in enumerate([(13, 23, 59), (14, 0, 1), (14, 23, 59), (15, 0, 0)]):
            at = datetime(2027, 3, d, hh, mm, tzinfo=ZONE).timestamp()
            rows.add_message(conn, Msg(f"e{n}", 1, at - 1))
            rows.add_event(conn, f"e{n}", at, "sent", "main")

    await api.gw.store.writer.run(edges)
    api.gw.clock.advance(  # type: ignore[attr-defined]
        datetime(2027, 3, 16, tzinfo=ZONE).timestamp() - api.gw.clock.time()
    )
    await api.gw.analytics.refresh()
    for first, last, sent in [("2027-03-13", "2027-03-13", 1), ("2027-03-14", "2027-03-14", 2),
                              ("2027-03-14", "2027-03-15", 3), ("2027-03-13", "2027-03-15", 4),
                              ("2027-03-12", "2027-03-12", 0)]:  # fmt: skip
        f = (await _json(api, f"{BASE}/summary?from={first}&to={last}"))["figures"]
        assert f["sent"] == sent, (first, last)
    series = await _json(api, f"{BASE}/timeseries?from=2027-03-13&to=2027-03-15")
    assert [(d["day"], d["figures"]["sent"]) for d in series["days"]] == [
        ("2027-03-13", 1), ("2027-03-14", 2), ("2027-03-15", 1)]  # fmt: skip


async def test_the_endpoints_are_in_the_openapi_document(api: Api) -> None:
    doc = await _json(api, "/api/v1/openapi.json")
    paths = doc["paths"]
    for path in ("summary", "summary.csv", "timeseries", "timeseries.csv", "{group}",
                 "{group}.csv"):  # fmt: skip
        op = paths[f"{BASE}/{path}"]["get"]
        assert op["security"] == [{"bearer": ["read"]}]
        assert "400" in op["responses"]
    assert "text/csv" in paths[f"{BASE}/summary.csv"]["get"]["responses"]["200"]["content"]


async def test_a_stop_and_a_reply_from_handsets_count_against_their_messages(api: Api) -> None:
    """STOP from one handset: an opt-out, not a reply; any other text from another: a
    reply (`other`) to the campaign message it answers."""
    from drivers.base import InboundSms

    await _traffic(api)
    other = "+12025550161"
    second = (await _send(api, other))["id"]
    await api.gw.store.writer.run(
        lambda conn: conn.execute(
            "UPDATE messages SET campaign_id = 'cmp_survey' WHERE id = ?", (second,)
        )
    )
    await api.gw.scheduler.run_until_idle()
    api.gw.clock.advance(60)  # type: ignore[attr-defined]
    await api.gw.sink.inbound("main", InboundSms(CANARY_NUMBER, "STOP", None))
    await api.gw.sink.inbound("main", InboundSms(other, "3 stars, thanks 😀", None))
    await api.gw.analytics.refresh()
    f = (await _json(api, f"{BASE}/summary"))["figures"]
    assert (f["opted_out"], f["replied_other"], f["replied_confirm"]) == (1, 1, 0)
    assert f["opted_out"] == await _count(
        api, "SELECT count(DISTINCT inbound_id) FROM consent_ledger WHERE decision = 'opt_out'"
    )
    campaigns = {r["key"]: r["figures"] for r in (await _json(api, f"{BASE}/campaigns"))["rows"]}
    assert campaigns["cmp_survey"]["replied_other"] == 1
    assert campaigns["cmp_survey"]["opted_out"] == 0
