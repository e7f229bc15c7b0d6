"""Issue 15 points 2, 3 and 9 in a real browser against `smsgw run`: compose to a group
(the preview counts recipients and the one the policy blocks, before anything is
queued), create a campaign with two variants, watch its progress numbers move live
without a reload, pause and resume it; the pages pass axe.

Contacts, a group and a two-variant template are written before the gateway starts
(as the contacts import and the template editor would write them), so only one
process writes to the store at a time."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import OPERATOR, SMSGW, Gateway, start_gateway
from tests.browser.test_accessibility import AXE, axe_context, axe_violations
from tests.browser.test_panel import new_page, operator_context, shot

CONTACTS = 20
OPTED_OUT = "+12025550203"
SEED = """
import asyncio, sys, time
from gateway.config import load
from gateway.consent import ledger
from gateway.consent.ledger import contact_row_id
from gateway.store import crypto
from gateway.store.store import Store
from gateway.templates import store as templates
from gateway.templates.store import Draft, Variant

async def main():
    config = load(sys.argv[1])
    store = Store(config.db_path, crypto.read_master_key(config.master_key_path))
    await store.open()
    cipher, now = store.cipher, time.time()
    def job(conn):
        conn.execute("INSERT INTO contact_groups VALUES ('g1', 'Flu 2026', NULL, ?, ?)", (now, now))
        for i in range(int(sys.argv[2])):
            number = "+1202555%04d" % (200 + i)
            idx = store.blind_index(number)
            conn.execute(
                "INSERT INTO contacts (idx, number_ct, language, created_at, updated_at)"
                " VALUES (?, ?, 'en', ?, ?)",
                (idx, cipher.encrypt(number, contact_row_id(idx), "number"), now, now),
            )
            conn.execute("INSERT INTO contact_group_members VALUES ('g1', ?, ?)", (idx, now))
        ledger.append(conn, cipher, ledger.Entry(
            contact_idx=store.blind_index(sys.argv[3]), number=sys.argv[3],
            decision="opt_out", scope="all", program="*", source="api", at=now))
        draft = Draft("flu", "en", "informational", (), (
            Variant("A", "Flu shots at the clinic this week.", 1),
            Variant("B", "Get your flu shot this week at the clinic.", 1)))
        templates.save(conn, draft, "seed", now)
    await store.writer.run(job)
    await store.close()

asyncio.run(main())
"""


def _restart(gw: Gateway) -> Gateway:
    again = Gateway(
        subprocess.Popen(
            [*SMSGW, "run", "--config", str(gw.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        ),
        gw.url,
        gw.config,
        gw.db,
        gw.token,
    )
    again.start_reader()
    again.wait_log(lambda e: e.get("event") == "listening")
    return again


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    first = start_gateway(tmp_path_factory.mktemp("campaigns"))
    first.stop()
    subprocess.run([sys.executable, "-c", SEED, str(first.config), str(CONTACTS), OPTED_OUT],
                   check=True, timeout=60)  # fmt: skip
    gw = _restart(first)
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def operator(browser: Any, gw: Gateway) -> Iterator[Any]:
    context = operator_context(browser, gw, OPERATOR)
    yield context
    context.close()


def _count(page: Any, variant: str, what: str) -> int:
    cell = page.locator(f"#progress-table tr[data-variant='{variant}'] td[data-count={what}]")
    return int(cell.inner_text())


def test_compose_to_a_group_shows_the_blocked_count_then_runs(
    operator: Any, gw: Gateway, artifacts: Path
) -> None:
    page = new_page(operator)
    page.goto(gw.url + "/compose")
    page.select_option("#c-groups", "g1")
    page.check("#c-source-text")
    page.fill("#c-text", "The flu clinic is open late on Thursday.")
    preview = page.locator("#compose-preview")
    expect(preview.locator("#preview-recipients")).to_have_text(str(CONTACTS))
    expect(preview.locator("#preview-blocked")).to_have_text("1")
    expect(preview.locator("li[data-reason=opted_out]")).to_contain_text("opted out: 1")
    expect(preview.locator(".preview-encoding")).to_have_text("GSM-7")
    shot(page, artifacts, "campaigns-01-compose-preview")
    assert gw.api("GET", "/api/v1/campaigns")["campaigns"] == []  # nothing queued yet
    page.click("#compose-form button[type=submit]")
    page.wait_for_url(re.compile(r"/campaigns/cmp_[0-9a-f]{16}$"))
    expect(page.locator("#campaign-state")).to_have_text("running")
    # The default rate (10 a second) finishes 19 messages within seconds; the page follows.
    expect(page.locator("#campaign-progress")).to_have_attribute(
        "data-state", "finished", timeout=20_000
    )
    expect(page.locator("li[data-reason=opted_out]")).to_be_visible()
    assert _count(page, "All", "queued") == CONTACTS - 1


def test_a_campaign_with_two_variants_moves_live_and_pauses(
    operator: Any, gw: Gateway, artifacts: Path
) -> None:
    page = new_page(operator)
    page.goto(gw.url + "/campaigns/new")
    page.fill("#c-name", "Flu drive A/B")
    page.select_option("#c-groups", "g1")
    page.select_option("#c-template", "flu")
    page.fill("#c-split", "A:1, B:1")
    page.fill("#c-rate", "2")
    preview = page.locator("#campaign-preview")
    expect(preview.locator(".preview-text")).to_have_count(2)
    expect(preview.locator("#preview-allowed")).to_have_text(str(CONTACTS - 1))
    page.click("button[name=then][value=start]")
    page.wait_for_url(re.compile(r"/campaigns/cmp_[0-9a-f]{16}$"))
    url = page.url
    # The numbers move without a reload: the progress panel polls itself.
    queued = page.locator("#progress-table tr[data-variant='All'] td[data-count=queued]")
    expect(queued).not_to_have_text("0", timeout=10_000)
    first = int(queued.inner_text())
    expect(queued).not_to_have_text(str(first), timeout=10_000)
    assert page.url == url
    shot(page, artifacts, "campaigns-02-running")
    page.click("#campaign-pause")
    page.wait_for_url(re.compile(r"\?notice=pause$"))
    expect(page.locator("#campaign-state")).to_have_text("paused")
    paused_at = _count(page, "All", "queued")
    assert 0 < paused_at < CONTACTS - 1
    page.click("#campaign-resume")
    expect(page.locator("#campaign-state")).to_have_text("running")
    expect(page.locator("#campaign-progress")).to_have_attribute(
        "data-state", "finished", timeout=30_000
    )
    a, b = _count(page, "A", "queued"), _count(page, "B", "queued")
    assert a + b == CONTACTS - 1 and a > 0 and b > 0
    detail = gw.api("GET", url.replace(gw.url, "/api/v1"))
    assert detail["progress"]["totals"]["queued"] == CONTACTS - 1
    shot(page, artifacts, "campaigns-03-finished")


def test_the_campaign_pages_pass_axe(browser: Any, operator: Any, gw: Gateway) -> None:
    if not AXE.exists():
        pytest.skip("admin_ui/node_modules/axe-core is not installed: run `make unit`")
    context = axe_context(browser, storage_state=operator.storage_state())
    page = context.new_page()
    listed = gw.api("GET", "/api/v1/campaigns")["campaigns"]
    problems = []
    for path in ("/campaigns", "/campaigns/new", "/compose", f"/campaigns/{listed[0]['id']}"):
        response = page.goto(gw.url + path)
        assert response is not None and response.status == 200, path
        if path in ("/campaigns/new", "/compose"):
            page.wait_for_selector(".preview-text, #preview-problem")
        problems.extend(f"{path} {v}" for v in axe_violations(page))
    context.close()
    assert problems == []
