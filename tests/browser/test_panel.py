"""The admin panel in a real browser: sign-in with TOTP, the live dashboard, reveal and
its audit entry, role limits, CSRF, idle logoff and the audit chain check.

One gateway serves the whole module; the admin signs in once (a TOTP code cannot be
used twice) and the other tests open pages in that signed-in context. Screenshots of
every page land in tests/artifacts/.
"""

from __future__ import annotations

import http.server
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest

from tests.browser.conftest import (
    ADMIN,
    INBOUND_SENDER,
    OPERATOR,
    TEST_NUMBER,
    VIEWER,
    Gateway,
    free_port,
    start_gateway,
)

LIVE_BUDGET_MS = 2000  # the dashboard shows a change within 2 s
LOCAL_HOUR_AGO = """() => {
    const d = new Date(Date.now() - 3600e3);
    const p = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`
        + `T${p(d.getHours())}:${p(d.getMinutes())}`;
}"""


def new_page(context: Any) -> Any:
    """A page that fails the test on a script error or a CSP violation."""
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on(
        "console",
        lambda m: (
            problems.append(m.text)
            if m.type == "error" and "Content Security Policy" in m.text
            else None
        ),
    )
    page.problems = problems
    return page


def sign_in(page: Any, gw: Gateway, who: tuple[str, str]) -> None:
    page.goto(gw.url + "/login")
    page.fill("#username", who[0])
    page.fill("#password", who[1])
    page.click("main form button[type=submit]")


def shot(page: Any, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def admin(browser: Any, gateway: Gateway, artifacts: Path) -> Iterator[Any]:
    """The first admin's browser context, signed in through TOTP enrolment."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = new_page(context)
    page.goto(gateway.url + "/login")
    shot(page, artifacts, "01-login")
    sign_in(page, gateway, ADMIN)
    # The admin role requires a second factor: the first sign-in enrols one.
    page.wait_for_selector(".totp-secret")
    shot(page, artifacts, "02-totp-enrol")
    secret = re.sub(r"\s", "", page.inner_text(".totp-secret"))
    page.fill("#code", pyotp.TOTP(secret).now())
    page.click("main form button[type=submit]")
    page.wait_for_url(re.compile(r"/(account)?$"))
    context.totp_secret = secret
    yield context
    context.close()


def operator_context(browser: Any, gw: Gateway, who: tuple[str, str] = OPERATOR) -> Any:
    # Another time zone than the machine's: times shown and typed are local to the browser.
    context = browser.new_context(
        viewport={"width": 1024, "height": 768}, timezone_id="America/Chicago"
    )
    page = new_page(context)
    sign_in(page, gw, who)
    page.wait_for_selector("nav.sidenav")
    page.close()
    return context


def audit_rows(page: Any, gw: Gateway, action: str, target: str) -> int:
    page.goto(gw.url + "/audit")
    return int(page.locator("tbody tr", has_text=target).filter(has_text=action).count())


def test_first_admin_signs_in_with_totp(admin: Any, gateway: Gateway, artifacts: Path) -> None:
    page = new_page(admin)
    page.goto(gateway.url + "/")
    assert page.locator("nav.sidenav a[aria-current=page]").inner_text().endswith("Dashboard")
    # Every nav entry of the admin role is there, and the user menu names the user.
    labels = [t.strip() for t in page.locator("nav.sidenav a").all_inner_texts()]
    for label in ("Dashboard", "Messages", "Inbound", "Routes", "API tokens", "Users", "Audit"):
        assert any(label in t for t in labels), labels
    assert "admin" in page.inner_text(".user-menu summary")
    # Keyboard: the first Tab reaches the skip link, which moves focus to the content.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    page.goto(gateway.url + "/audit")
    assert page.locator("tbody tr", has_text="login").count() >= 1
    assert page.problems == []


def test_dashboard_numbers_change_live_after_sends(
    admin: Any, gateway: Gateway, artifacts: Path
) -> None:
    page = new_page(admin)
    page.goto(gateway.url + "/")
    page.wait_for_selector("#live-status[data-state=live]")
    page.evaluate("window.__sameDocument = true")
    before = int(re.sub(r"\D", "", page.inner_text("#sent-last-hour")) or 0)
    for i in range(4):
        gateway.send(body=f"Appointment reminder {i}")
    gateway.send(to="+12025550190", body="will not be delivered")
    started = time.monotonic()
    page.wait_for_function(
        "n => Number(document.querySelector('#sent-last-hour').textContent"
        ".replace(/\\D/g, '')) >= n",
        arg=before + 5,
        timeout=LIVE_BUDGET_MS,
    )
    assert time.monotonic() - started < LIVE_BUDGET_MS / 1000
    assert page.evaluate("window.__sameDocument") is True  # updated without a reload
    # Receipts follow: one undelivered shows as a failure by its code, no reload.
    page.wait_for_selector("#failure-rows td.mono", timeout=5000)
    page.wait_for_function("document.querySelector('#throughput-chart canvas') !== null")
    assert page.locator(".route-card", has_text="main").count() == 1
    shot(page, artifacts, "03-dashboard")
    assert page.problems == []


def test_reveal_writes_an_audit_entry(
    browser: Any, admin: Any, gateway: Gateway, artifacts: Path
) -> None:
    mid = gateway.send(body="Reveal check: please call ward 7B")
    context = operator_context(browser, gateway)
    page = new_page(context)
    page.goto(f"{gateway.url}/messages")
    assert TEST_NUMBER not in page.content()
    assert page.locator(f"tr[data-message-id='{mid}'] .masked").inner_text() == "+1 202 ••• ••47"
    shot(page, artifacts, "04-messages")
    # Time filters are typed in the browser's time zone and sent as UTC.
    hour_ago = page.evaluate(LOCAL_HOUR_AGO)
    page.fill("#f-since", hour_ago)
    page.click("form[role=search] button[type=submit]")
    page.wait_for_selector(f"tr[data-message-id='{mid}']")
    assert re.search(r"since=\d{4}-\d\d-\d\dT\d\d%3A\d\d%3A00Z", page.url)
    assert page.input_value("#f-since") == hour_ago
    page.fill("#f-since", "")
    page.fill("#f-until", hour_ago)
    page.click("form[role=search] button[type=submit]")
    page.wait_for_selector("td.empty")
    page.goto(f"{gateway.url}/messages/{mid}")
    assert TEST_NUMBER not in page.content()
    assert "ward 7B" not in page.content()
    page.click("#reveal-button")
    page.wait_for_selector("[data-phi=number]")
    assert page.inner_text("[data-phi=number]") == TEST_NUMBER
    assert page.inner_text("[data-phi=body]") == "Reveal check: please call ward 7B"
    shot(page, artifacts, "05-message-revealed")
    # Inbound replies: masked sender, revealed one at a time.
    page.goto(f"{gateway.url}/inbound")
    row = page.locator("tr[data-inbound-id]").first
    inbound_id = row.get_attribute("data-inbound-id")
    assert row.locator(".masked").inner_text() == "+1 202 ••• ••68"
    row.locator("button").click()
    page.wait_for_selector(f"tr[data-inbound-id='{inbound_id}'] [data-phi=number]")
    assert row.locator("[data-phi=number]").inner_text() == INBOUND_SENDER
    shot(page, artifacts, "08-inbound")
    assert page.problems == []
    context.close()
    audit = new_page(admin)
    assert audit_rows(audit, gateway, "reveal", mid) == 1
    assert inbound_id is not None and audit_rows(audit, gateway, "reveal", inbound_id) == 1
    shot(audit, artifacts, "06-audit")


def test_a_viewer_cannot_reveal(
    browser: Any, admin: Any, gateway: Gateway, artifacts: Path
) -> None:
    mid = gateway.send(body="Viewer must not read this")
    context = operator_context(browser, gateway, VIEWER)
    page = new_page(context)
    page.goto(f"{gateway.url}/messages/{mid}")
    assert page.locator("#reveal-button").count() == 0
    assert "hidden for your role" in page.inner_text("dl.facts")
    shot(page, artifacts, "16-message-as-viewer")
    status = page.evaluate(
        """async (url) => {
            const token = document.querySelector('meta[name=csrf-token]').content;
            const r = await fetch(url, {method: 'POST', headers: {'X-CSRF-Token': token}});
            return r.status;
        }""",
        f"/messages/{mid}/reveal",
    )
    assert status == 403
    assert [p for p in page.problems if "403" not in p] == []
    context.close()
    assert audit_rows(new_page(admin), gateway, "reveal", mid) == 0


class _EvilPage(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:
        body = (
            "<!doctype html><title>Prize</title>"
            f'<form method="post" action="{self.target}">'
            '<input type="hidden" name="csrf" value="guessed">'
            '<button id="go" type="submit">Claim</button></form>'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_cross_site_post_is_refused(admin: Any, gateway: Gateway, artifacts: Path) -> None:
    handler = type("Evil", (_EvilPage,), {"target": gateway.url + "/routes/main/pause"})
    server = http.server.HTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page = new_page(admin)
        page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
        with page.expect_navigation() as nav:
            page.click("#go")
        assert nav.value.status == 403
        shot(page, artifacts, "07-cross-site-refused")
    finally:
        server.shutdown()
        server.server_close()
    routes = gateway.api("GET", "/api/v1/routes")["routes"]
    assert [r["state"] for r in routes if r["name"] == "main"] == ["up"]


def test_every_page_renders_for_the_admin(admin: Any, gateway: Gateway, artifacts: Path) -> None:
    page = new_page(admin)
    for name, path in (
        ("09-routes", "/routes"),
        ("10-users", "/users"),
        ("11-account", "/account"),
    ):
        response = page.goto(gateway.url + path)
        assert response is not None and response.status == 200, path
        shot(page, artifacts, name)
    page.goto(gateway.url + "/tokens")
    page.fill("#t-name", "ward-printer")
    page.click("form[action='/tokens'] button[type=submit]")
    page.wait_for_selector("#new-token")
    assert page.inner_text("#new-token").startswith("smsgw_")
    shot(page, artifacts, "12-tokens")
    page.set_viewport_size({"width": 820, "height": 1180})  # a tablet, portrait
    page.goto(gateway.url + "/")
    page.wait_for_selector("#live-status[data-state=live]")
    shot(page, artifacts, "13-dashboard-tablet")
    assert page.problems == []


def test_routes_pause_and_resume_from_the_panel(browser: Any, gateway: Gateway) -> None:
    context = operator_context(browser, gateway)
    page = new_page(context)
    page.on("dialog", lambda d: d.accept())
    page.goto(gateway.url + "/routes")
    page.click("text=Pause main")
    page.wait_for_selector("[data-route=main] [data-field=state]:text('paused')")
    assert gateway.api("GET", "/api/v1/routes")["routes"][0]["state"] == "parked"
    page.click("text=Resume main")
    page.wait_for_selector("[data-route=main] [data-field=state]:text('up')")
    context.close()


# Numbers no other test sends to: once consent is enforced, an opt-out here would
# block their messages.
OPTED_OUT = "+12025550177"


def test_an_operator_records_an_opt_out_and_imports_a_list(
    browser: Any, gateway: Gateway, artifacts: Path, tmp_path: Path
) -> None:
    context = operator_context(browser, gateway)
    page = new_page(context)
    page.goto(gateway.url + "/consent")
    page.fill("#o-number", OPTED_OUT)
    page.select_option("#o-source", "phone")
    page.fill("#o-note", "called reception")
    page.click("form[action='/consent/optout'] button[type=submit]")
    page.wait_for_selector(".notice-ok")
    page.fill("#c-number", OPTED_OUT)
    page.click("form[action='/consent/lookup'] button[type=submit]")
    page.wait_for_selector("#history")
    assert "called reception" in page.inner_text("#history")
    assert OPTED_OUT not in page.content()  # shown masked
    shot(page, artifacts, "14-consent")
    listing = tmp_path / "optouts.csv"
    listing.write_text("Mobile\n+12025550191\n+12025550192\n+12025550193\n")
    page.set_input_files("#i-file", str(listing))
    page.select_option("#i-decision", "opt_out")
    page.click("form[action='/consent/import'] button[type=submit]")
    page.wait_for_url(re.compile(r"/consent/import/[A-Za-z0-9_-]+$"))
    page.wait_for_selector("#import-progress:has-text('Done.')")
    assert page.inner_text("#import-appended") == "3"
    shot(page, artifacts, "15-consent-import")
    assert page.problems == []
    context.close()


def test_the_audit_chain_check_finds_a_tampered_row(
    admin: Any, gateway: Gateway, artifacts: Path
) -> None:
    with sqlite3.connect(gateway.db, timeout=10) as db:
        for (trigger,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_log'"
        ).fetchall():
            db.execute(f'DROP TRIGGER "{trigger}"')
        db.execute("UPDATE audit_log SET action = 'nothing_to_see' WHERE seq = 2")
    db.close()
    page = new_page(admin)
    page.goto(gateway.url + "/audit")
    page.click("text=Verify chain")
    result = page.wait_for_selector("#verify-result")
    assert result is not None
    assert result.get_attribute("data-ok") == "false"
    assert result.get_attribute("data-first-bad-seq") == "2"
    shot(page, artifacts, "14-audit-tampered")


def test_the_idle_timeout_signs_the_user_out(
    browser: Any, tmp_path_factory: pytest.TempPathFactory, artifacts: Path
) -> None:
    gw = start_gateway(
        tmp_path_factory.mktemp("idle"),
        idle_timeout=5,
        users=((VIEWER, "viewer"),),
        api_token=False,
    )
    try:
        context = operator_context(browser, gw, VIEWER)
        page = new_page(context)
        page.goto(gw.url + "/")
        page.wait_for_selector("#live-status[data-state=live]")
        started = time.monotonic()
        # Nobody touches the page: the live stream ends with the session, the page
        # goes to the sign-in form, and the server no longer knows the session.
        page.wait_for_url(re.compile(r"/login$"), timeout=20_000)
        page.wait_for_selector("#username")
        assert time.monotonic() - started < 5 + 4  # the idle timeout, plus page loads
        shot(page, artifacts, "15-signed-out-idle")
        response = page.goto(gw.url + "/messages")
        assert response is not None
        assert page.url.endswith("/login")
        context.close()
    finally:
        gw.stop()
