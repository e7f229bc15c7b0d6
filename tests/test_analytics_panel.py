"""The panel's "Analytics" page over a real loopback socket: tiles, charts and tables
from the daily sums, a date range (a bad one is said so, not answered with a 500), the
CSV export of every dimension (escaped, audited), and who may open it."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from gateway.panel_users import Role
from tests import analytics_rows as rows
from tests.admin_support import PanelClient
from tests.analytics_rows import Msg
from tests.test_admin_pages import signed_in


async def _traffic(panel: PanelClient) -> str:
    """Messages of a campaign sent, delivered and failed yesterday and today; the day."""
    now = panel.clock.time()

    def write(conn: Any) -> None:
        rows.add_contact(conn, 1, "@north", now)
        for n in range(6):
            at = now - 86400 * (n % 2) - 600
            rows.add_message(conn, Msg(f"m{n}", 1, at, "marketing", "cmp_flu", "AB"[n % 2]))
            rows.add_event(conn, f"m{n}", at + 1, "sent", "smsc")
            rows.add_event(conn, f"m{n}", at + 9, "failed" if n == 5 else "delivered")
        rows.add_message(conn, Msg("b1", 1, now - 900, "marketing"), "blocked", "no_consent")

    await panel.gw.store.writer.run(write)
    panel.clock.advance(60)
    await panel.gw.analytics.refresh()
    return str(panel.gw.analytics.range_of(None, None).last)


async def test_the_page_shows_the_figures_and_the_range_moves(panel: PanelClient) -> None:
    await signed_in(panel, Role.VIEWER)
    today = await _traffic(panel)
    r = await panel.client.get("/analytics")
    page = await r.text()
    assert r.status == 200
    assert re.search(r'data-figure="sent">6<', page) and re.search(
        r'data-figure="blocked">1<', page
    )
    assert re.search(r'data-figure="delivered">5<', page)
    assert 'data-series="Sent" data-total="6"' in page and "<polyline" in page
    assert 'id="by-campaign"' in page and 'data-key="cmp_flu"' in page
    assert 'data-key="cmp_flu/A"' in page and 'data-key="@north"' in page
    assert "no_consent" in page
    assert 'href="/analytics"' in page  # the nav link
    # Today only: yesterday's three are out of the range.
    page = await (await panel.client.get(f"/analytics?from={today}&to={today}")).text()
    assert re.search(r'data-figure="sent">3<', page)
    r = await panel.client.get(f"/analytics?from={today}&to=2020-01-01")
    assert r.status == 400 and "From: after to." in await r.text()


async def test_the_export_holds_every_dimension_escaped_and_is_audited(panel: PanelClient) -> None:
    await signed_in(panel, Role.OPERATOR)
    await _traffic(panel)
    page = await (await panel.client.get("/analytics")).text()
    href = re.search(r'id="analytics-export" href="([^"]+)"', page)
    assert href is not None
    r = await panel.client.get(href[1].replace("&amp;", "&"))
    assert r.status == 200 and r.content_type == "text/csv"
    table = list(csv.DictReader(io.StringIO(await r.text())))
    by = {(t["dimension"], t["key"]): t for t in table}
    assert by[("total", "")]["sent"] == "6" and by[("total", "")]["blocked_no_consent"] == "1"
    assert by[("campaign", "cmp_flu")]["failed"] == "1"
    assert by[("clinic", "'@north")]["delivered"] == "5"  # a formula-looking code, escaped
    assert {d for d, _ in by} >= {"total", "campaign", "template", "clinic", "purpose", "route"}
    assert "analytics_exported" in await panel.audit_actions()


async def test_an_auditor_may_not_open_it(panel: PanelClient) -> None:
    await signed_in(panel, Role.AUDITOR)
    assert (await panel.client.get("/analytics")).status == 403
    assert (await panel.client.get("/analytics/export.csv")).status == 403
