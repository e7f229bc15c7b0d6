"""Issue 15 points 7 and 9: the Analytics page in a real browser against `smsgw run`.
Messages go through the loopback route (one fails); once the rollup has counted them
the page shows the figures, a date range moves them, the page passes axe at every
width without scrolling sideways, and the exported CSV, downloaded and opened, holds
the same figures as the API."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import TEST_NUMBER, VIEWER, Gateway, start_gateway
from tests.browser.test_accessibility import (
    AXE,
    VIEWPORTS,
    axe_context,
    axe_violations,
    overflow,
)
from tests.browser.test_panel import new_page, shot, sign_in

FAILS = "+12025550190"  # the route's undelivered prefix: a failed receipt
ANALYTICS = "[analytics]\ninterval = 1.0\n"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path_factory.mktemp("analytics"), extra_toml=ANALYTICS)
    yield gw
    gw.stop()


def _summary(gw: Gateway, query: str = "") -> dict[str, Any]:
    return dict(gw.api("GET", f"/api/v1/analytics/summary{query}")["figures"])


def _counted(gw: Gateway, want: dict[str, int]) -> dict[str, Any]:
    """Wait, round by round of the rollup (its log line), until the API shows `want`."""
    while True:
        seen = len(gw.lines)  # before the read: a round ending meanwhile is not missed
        found = _summary(gw)
        if all(found[k] == v for k, v in want.items()):
            return found
        gw.wait_log(
            lambda e, n=seen: (
                e.get("event") == "analytics_counted" and any(x is e for x in gw.lines[n:])
            ),
            limit=30,
        )


@pytest.fixture(scope="module")
def traffic(gw: Gateway) -> dict[str, Any]:
    for _ in range(3):
        gw.send(TEST_NUMBER)
    gw.send(FAILS)
    return _counted(gw, {"sent": 4, "delivered": 3, "failed": 1})


@pytest.fixture(scope="module")
def viewer(browser: Any, gw: Gateway) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORTS["laptop"], accept_downloads=True)
    page = new_page(context)
    sign_in(page, gw, VIEWER)
    page.wait_for_selector("nav.sidenav")
    page.close()
    yield context
    context.close()


def test_the_page_shows_the_figures_and_the_range_moves_them(
    viewer: Any, gw: Gateway, traffic: dict[str, Any], artifacts: Path
) -> None:
    page = new_page(viewer)
    page.goto(gw.url + "/")
    page.click("nav.sidenav a:text-is('Analytics')")
    page.wait_for_url(gw.url + "/analytics")
    tiles = page.locator("#analytics-totals")
    expect(tiles.locator("[data-figure=sent]")).to_have_text("4")
    expect(tiles.locator("[data-figure=delivered]")).to_have_text("3")
    expect(tiles.locator("[data-figure=failed]")).to_have_text("1")
    expect(page.locator("#chart-outcomes polyline[data-series=Sent]")).to_have_attribute(
        "data-total", "4"
    )
    expect(page.locator("#by-route tr[data-key=main] td[data-label=Sent]")).to_have_text("4")
    shot(page, artifacts, "analytics-01-today")

    # A range before anything was sent: nothing; then back to today.
    today = page.input_value("#a-to")
    page.fill("#a-from", "2020-01-01")
    page.fill("#a-to", "2020-01-31")
    page.click("#analytics-range button[type=submit]")
    page.wait_for_url("**/analytics?from=2020-01-01&to=2020-01-31")
    expect(tiles.locator("[data-figure=sent]")).to_have_text("0")
    expect(page.locator("#by-route tbody td.empty")).to_be_visible()
    page.fill("#a-from", today)
    page.fill("#a-to", today)
    page.click("#analytics-range button[type=submit]")
    expect(tiles.locator("[data-figure=sent]")).to_have_text("4")
    assert page.problems == []  # no script error, no CSP violation
    page.close()


def test_the_exported_csv_opens_with_the_figures_of_the_api(
    viewer: Any, gw: Gateway, traffic: dict[str, Any], tmp_path: Path
) -> None:
    page = new_page(viewer)
    page.goto(gw.url + "/analytics")
    with page.expect_download() as info:
        page.click("#analytics-export")
    download = info.value
    assert download.suggested_filename.startswith("analytics-")
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    table = list(csv.DictReader(io.StringIO(saved.read_text(encoding="utf-8"))))
    by = {(r["dimension"], r["key"]): r for r in table}
    api = _summary(gw)
    for name in ("sent", "delivered", "failed", "blocked", "parts", "replied_other", "clicked"):
        assert int(by[("total", "")][name]) == api[name], name
    routes = gw.api("GET", "/api/v1/analytics/routes")["rows"]
    for r in routes:
        assert int(by[("route", r["key"])]["delivered"]) == r["figures"]["delivered"]
    assert TEST_NUMBER[2:] not in saved.read_text() and FAILS[2:] not in saved.read_text()
    page.close()


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_the_page_passes_axe_and_reflows(
    browser: Any, viewer: Any, gw: Gateway, traffic: dict[str, Any], viewport: str
) -> None:
    if not AXE.exists():  # `make unit` installs admin_ui's npm packages (npm ci)
        pytest.skip("admin_ui/node_modules/axe-core is not installed: run `make unit`")
    context = axe_context(
        browser, viewport=VIEWPORTS[viewport], storage_state=viewer.storage_state()
    )
    page = context.new_page()
    response = page.goto(gw.url + "/analytics")
    assert response is not None and response.status == 200
    problems = [f"/analytics {v}" for v in axe_violations(page)]
    wide = overflow(page)
    if wide:
        problems.append(f"/analytics wider than the viewport: {wide}")
    context.close()
    assert problems == []
