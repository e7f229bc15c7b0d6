"""Issue 13 point 7: the template editor in a real browser. The preview follows the
text as it is typed (encoding, segments, the lint's problems), a save the lint refuses
is shown with its rule, and a good save becomes the active version."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import ADMIN, OPERATOR, Gateway
from tests.browser.test_panel import new_page, operator_context, shot, sign_in

GOOD = "{clinic}: see you {start} at {location}. Reply STOP to opt out"


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


def test_the_preview_follows_the_text_and_a_save_makes_a_version(
    admin: Any, gateway: Gateway, artifacts: Path
) -> None:
    page = new_page(admin)
    page.goto(gateway.url + "/templates")
    expect(page.locator("#templates tbody tr", has_text="reminder")).to_have_count(2)
    page.click("#templates a:text-is('reminder') >> nth=0")
    page.wait_for_url(re.compile(r"/templates/reminder/(en|es)$"))
    page.goto(gateway.url + "/templates/reminder/en")
    preview = page.locator("#template-preview")
    # The built-in text with sample values, at once (the form posts on load).
    expect(preview.locator(".preview-body")).to_contain_text("Mercy Clinic: appointment")
    expect(preview.locator(".preview-encoding")).to_have_text("GSM-7")
    expect(preview.locator(".preview-segments")).to_have_text("1")
    expect(preview.locator(".lint-ok")).to_be_visible()

    # Typing a diagnosis: the lint says so in the preview, without a save.
    page.fill("#t-body", "{clinic}: your HIV clinic visit {start}. Reply STOP to opt out")
    expect(preview.locator("li[data-rule=diagnosis]")).to_be_visible()
    expect(preview.locator(".preview-body")).to_contain_text("your HIV clinic visit")
    shot(page, artifacts, "templates-01-lint")

    # A character outside GSM-7 switches the encoding; a long text takes two segments.
    page.fill("#t-body", GOOD.replace("see you", "clínica visit") + " " + "x" * 80)
    expect(preview.locator(".preview-encoding")).to_have_text("UCS-2")
    expect(preview.locator(".preview-segments")).to_have_text("3")
    expect(preview.locator("li[data-rule=too_long]")).to_be_visible()

    # Saving what the lint refuses: the page names the rule, nothing is saved.
    page.fill("#t-body", "{clinic}: your HIV clinic visit {start}. Reply STOP to opt out")
    page.click("#template-save")
    expect(page.locator("#save-problem")).to_contain_text("diagnosis")
    assert "HIV" not in page.inner_text("#save-problem")

    # A good text saves as version 2, active.
    page.goto(gateway.url + "/templates/reminder/en")
    page.fill("#t-body", GOOD)
    expect(preview.locator(".lint-ok")).to_be_visible()
    page.click("#template-save")
    page.wait_for_url(re.compile(r"/templates/reminder/en\?notice=saved$"))
    expect(page.locator("#versions tbody tr")).to_have_count(2)
    active = page.locator("#versions tbody tr", has=page.locator(".badge-ok"))
    expect(active.locator("td[data-label=Version]")).to_have_text("2")
    shot(page, artifacts, "templates-02-saved")
    saved = gateway.api("GET", "/api/v1/templates/reminder")["templates"]
    assert [v["variants"][0]["body"] for v in saved if v["active"] and v["language"] == "en"] == [
        GOOD
    ]
    assert page.problems == []


def test_an_operator_previews_but_cannot_save(browser: Any, gateway: Gateway) -> None:
    context = operator_context(browser, gateway, OPERATOR)
    page = new_page(context)
    page.goto(gateway.url + "/templates/result_available/es")
    expect(page.locator("#template-preview .preview-body")).to_contain_text(
        "resultados nuevos disponibles en el portal"
    )
    assert page.locator("#template-save").count() == 0
    assert page.problems == []
    context.close()
