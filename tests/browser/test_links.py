"""Tracked links in a real browser against a real `smsgw run`: the admin creates a link
on the Links page (which passes axe), a message sent through the API carries its own
short URL, Chromium follows it through the redirect listener to the destination, and
the page counts one person, while a link preview bot's fetch counts as a bot."""

from __future__ import annotations

import http.client
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest

from tests.browser.conftest import ADMIN, Gateway, start_gateway
from tests.browser.test_accessibility import AXE_TAGS, axe_context, axe_violations
from tests.browser.test_panel import new_page, shot, sign_in
from tests.ports import free_port


@pytest.fixture(scope="module")
def links_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, links_port: int) -> Iterator[Gateway]:
    links = (
        "\n[links]\n"
        "enabled = true\n"
        f'base_url = "http://127.0.0.1:{links_port}"\n'
        f'listen = "127.0.0.1:{links_port}"\n'
        f'allow = ["http://localhost:{links_port}/flu/"]\n'
    )
    gw = start_gateway(tmp_path_factory.mktemp("links"), users=((ADMIN, "admin"),),
                       extra_toml=links)  # fmt: skip
    gw.wait_log(lambda e: e.get("event") == "links_listening")
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def admin(browser: Any, gateway: Gateway) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = new_page(context)
    sign_in(page, gateway, ADMIN)
    page.wait_for_selector(".totp-secret")  # the admin role enrols a second factor
    secret = re.sub(r"\s", "", page.inner_text(".totp-secret"))
    page.fill("#code", pyotp.TOTP(secret).now())
    page.click("main form button[type=submit]")
    page.wait_for_url(re.compile(r"/(account)?$"))
    yield context
    context.close()


PHONE = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/124.0.0.0 Mobile Safari/537.36"
)


def _destination(port: int) -> str:
    """A page the browser can reach with no network: the listener's own "not found"
    (any path that is not a token), named by host, as the allowlist takes no IP."""
    return f"http://localhost:{port}/flu/clinic"


def _counts(page: Any) -> list[str]:
    row = page.locator("#links tbody tr", has_text="flu-clinic")
    return [c.strip() for c in row.locator("td").all_inner_texts()[4:7]]


def test_a_link_made_on_the_page_is_followed_by_a_person_and_counted(
    browser: Any, admin: Any, gateway: Gateway, links_port: int, artifacts: Path
) -> None:
    page = new_page(admin)
    page.goto(gateway.url + "/links")
    page.fill("#l-name", "flu-clinic")
    destination = _destination(links_port)
    page.fill("#l-dest", destination)
    page.click("main form button[type=submit]")
    page.wait_for_selector("text=The link was created")
    assert _counts(page) == ["0", "0", "0"]
    axe = axe_context(browser, storage_state=admin.storage_state())
    try:  # axe is injected as a script: a context that ignores the page's CSP
        checked = axe.new_page()
        checked.goto(gateway.url + "/links")
        assert axe_violations(checked) == [], AXE_TAGS
    finally:
        axe.close()
    # The body is PHI: a token with the `phi` scope sends it and reads it back (audited).
    admin_token = gateway.token
    gateway.token = gateway.cli("token", "create", "--scope", "send,read,phi", "--name", "p")
    gateway.token = gateway.token.strip()
    try:
        text = "Flu shots: {link:flu-clinic}"
        sent = gateway.api("POST", "/api/v1/messages", {"to": "+12025550147", "body": text})
        assert sent["segments"] == 1
        body = gateway.api("GET", f"/api/v1/messages/{sent['id']}?include=phi")["body"]
    finally:
        gateway.token = admin_token
    short = re.search(rf"http://127\.0\.0\.1:{links_port}/([A-Za-z0-9]{{16}})", body)
    assert short is not None, "the stored body carries the short URL"
    # A preview bot fetches it first: redirected, counted, but not as a person.
    conn = http.client.HTTPConnection("127.0.0.1", links_port, timeout=10)
    conn.request("GET", "/" + short.group(1), headers={"User-Agent": "Twitterbot/1.0"})
    answer = conn.getresponse()
    assert answer.status == 302 and answer.getheader("Location") == destination
    conn.close()
    # Chromium, as a patient's phone, follows it through the listener to the destination
    # (headless Chromium's own agent says HeadlessChrome: a script, not a person).
    phone = browser.new_context(user_agent=PHONE, viewport={"width": 412, "height": 915})
    try:
        visit = new_page(phone)
        visit.goto(short.group(0))
        assert visit.url == destination
    finally:
        phone.close()
    page.goto(gateway.url + "/links")
    assert _counts(page) == ["1", "1", "1"]
    shot(page, artifacts, "links-counted")
