"""Issue 15 point 9 (surveys): in a real browser, against `smsgw run` with the demo's
simulated peers. The demo survey is there from the start; an operator sends it to a
demo handset, the handset answers through the simulated carrier (SMPP deliver_sm into
the gateway), and the results page's chart moves without a reload; the CSV export
downloads and opens. The survey pages pass axe at a phone's and a laptop's width."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import TEST_NUMBER, Gateway, start_gateway
from tests.browser.test_accessibility import (
    VIEWPORTS,
    axe_context,
    axe_violations,
    overflow,
)
from tests.browser.test_panel import new_page, operator_context, shot


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path_factory.mktemp("surveys"), extra_toml="[demo]\npeers = true\n")
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def operator(browser: Any, demo: Gateway) -> Iterator[Any]:
    context = operator_context(browser, demo)
    yield context
    context.close()


def _answer(gw: Gateway, body: str) -> None:
    """The demo handset replies through the simulated carrier."""
    gw.api("POST", "/api/v1/demo/inbound", {"sender": TEST_NUMBER, "body": body})


def test_send_answer_from_the_handset_and_the_chart_moves(
    operator: Any, demo: Gateway, artifacts: Path, tmp_path: Path
) -> None:
    page = new_page(operator)
    page.goto(demo.url + "/surveys")
    page.click("#surveys a:text-is('How was your visit?')")
    page.wait_for_url(re.compile(r"/surveys/svy_[0-9a-f]{16}$"))
    page.fill("#send-to", TEST_NUMBER)
    page.click("button:text-is('Send survey')")
    expect(page.locator("#sent")).to_contain_text("Started: 1")
    page.click("a:text-is('Results')")
    expect(page.locator("#answered-0")).to_have_text("0")
    first_bar = page.locator("#chart-0 rect").first
    expect(first_bar).to_have_attribute("data-count", "0")
    shot(page, artifacts, "surveys-01-results-empty")

    _answer(demo, "Good!")  # the first option, by its label
    expect(page.locator("#answered-0")).to_have_text("1", timeout=15_000)
    expect(first_bar).to_have_attribute("data-count", "1")
    _answer(demo, "nine")  # not a number: asked again, nothing counted
    _answer(demo, "9")
    expect(page.locator("#answered-1")).to_have_text("1", timeout=15_000)
    expect(page.locator("#sessions-completed")).to_have_text("1")
    expect(page.locator("#chart-1 rect[data-count='1']")).to_have_count(1)
    shot(page, artifacts, "surveys-02-results-answered")

    with page.expect_download() as got:
        page.click("#export")
    saved = tmp_path / "results.csv"
    got.value.save_as(saved)
    with saved.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0][:8] == ["session", "started_at", "state", "language", "question", "kind",
                           "valid", "value"]  # fmt: skip
    assert [(r[4], r[7]) for r in rows[1:]] == [("1", "1"), ("2", "9")]
    assert "number" not in rows[0] and TEST_NUMBER not in saved.read_text()
    assert page.problems == []
    page.close()


@pytest.mark.parametrize("viewport", ["phone", "laptop"])
def test_the_survey_pages_pass_axe_and_reflow(
    browser: Any, operator: Any, demo: Gateway, viewport: str
) -> None:
    context = axe_context(
        browser, viewport=VIEWPORTS[viewport], storage_state=operator.storage_state()
    )
    page = context.new_page()
    page.goto(demo.url + "/surveys")
    survey = page.locator("#surveys a").first.get_attribute("href")
    problems = []
    for path in ("/surveys", str(survey), f"{survey}/results", f"{survey}/results?live=off"):
        response = page.goto(demo.url + path)
        assert response is not None and response.status == 200, path
        problems.extend(f"{path} {v}" for v in axe_violations(page))
        wide = overflow(page)
        if wide:
            problems.append(f"{path} wider than the viewport: {wide}")
    context.close()
    assert problems == []
