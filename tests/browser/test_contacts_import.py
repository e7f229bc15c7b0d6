"""Issue 15 point 9 (contacts): a CSV with errors imported in a real browser. Upload,
the mapping step (the usual names chosen already, an unusual one chosen by hand), the
progress bar reaching 100 %, the refused lines listed by number and code, and the
contacts listed with their numbers masked; the pages pass axe at a phone's and a
laptop's width."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import OPERATOR, Gateway
from tests.browser.test_accessibility import (
    VIEWPORTS,
    axe_context,
    axe_violations,
    overflow,
)
from tests.browser.test_panel import new_page, operator_context, shot

ROWS = 1000
pytestmark = pytest.mark.timeout(120)  # a gateway and a browser start for the module
BAD_NUMBER = "+1202555"  # too short: line 3
PAGES: dict[str, str] = {}  # what the import made: a job's page, a contact's page


def _file() -> bytes:
    lines = ["Mobile,Idioma,Age group,Site,Tags"]
    lines.append("+12025550147,es,65+,north,vip")
    lines.append(f"{BAD_NUMBER},en,,,")
    lines.append("+12025550148,fr,18-34,south,")  # no French replies configured: line 4
    lines += [f"+1202{300 + i // 10_000}{i % 10_000:04d},en,35-49,east," for i in range(ROWS)]
    return ("\n".join(lines) + "\n").encode("latin-1")


@pytest.fixture(scope="module")
def operator(browser: Any, gateway: Gateway) -> Iterator[Any]:
    context = operator_context(browser, gateway, OPERATOR)
    yield context
    context.close()


def test_a_csv_with_errors_is_imported_with_progress_and_listed_masked(
    operator: Any, browser: Any, gateway: Gateway, artifacts: Path
) -> None:
    page = new_page(operator)
    page.goto(gateway.url + "/contacts")
    page.click("a:text('Import a CSV file')")
    page.set_input_files(
        "#u-file", files=[{"name": "spring.csv", "mimeType": "text/csv", "buffer": _file()}]
    )
    page.click("main form button[type=submit]")
    page.wait_for_selector("#m-number")
    # The usual names are chosen; "Idioma" is not one: the operator picks it.
    assert page.locator("#m-number option:checked").inner_text() == "Mobile"
    assert page.locator("#m-clinic option:checked").inner_text() == "Site"
    page.select_option("#m-language", label="Idioma")
    shot(page, artifacts, "contacts-01-mapping")
    page.click("main form button[type=submit]")
    page.wait_for_url("**/contacts/imports/*")
    expect(page.locator("#import-status")).to_have_text("Done: 100 %.", timeout=60_000)
    expect(page.locator("progress.meter")).to_have_attribute("value", "100")
    expect(page.locator("#import-created")).to_have_text(str(ROWS + 1))
    errors = page.locator("#import-errors tbody tr")
    expect(errors).to_have_count(2)
    expect(errors.nth(0)).to_contain_text("invalid_number")
    expect(errors.nth(1)).to_contain_text("invalid_language")
    assert BAD_NUMBER not in page.content()
    shot(page, artifacts, "contacts-02-done")
    PAGES["job"] = page.url

    page.goto(gateway.url + "/contacts?clinic=north")
    expect(page.locator("#contacts-total")).to_have_text("1")
    expect(page.locator("#contacts tbody tr")).to_have_count(1)
    expect(page.locator("#contacts tbody td.mono")).to_have_text("+1 202 ••• ••47")
    assert "5550147" not in page.content()
    page.click("#contacts tbody td.mono a")
    expect(page.locator("#c-clinic")).to_have_value("north")
    shot(page, artifacts, "contacts-03-contact")
    PAGES["contact"] = page.url
    assert page.problems == []  # no script error, no CSP violation
    page.close()


def test_the_contacts_pages_pass_axe_and_reflow(
    operator: Any, browser: Any, gateway: Gateway
) -> None:
    assert PAGES, "the import test runs first and names the pages it made"

    # The pages pass axe at a phone's and a laptop's width (axe injected: CSP bypassed).
    axe = axe_context(browser, storage_state=operator.storage_state())
    problems: list[str] = []
    for viewport in ("phone", "laptop"):
        page = axe.new_page()
        page.set_viewport_size(VIEWPORTS[viewport])
        for url in (
            gateway.url + "/contacts",
            PAGES["contact"],
            gateway.url + "/contacts/import",
            PAGES["job"],
            gateway.url + "/groups",
        ):
            response = page.goto(url)
            assert response is not None and response.status == 200, url
            wide = overflow(page)
            if wide:
                problems.append(f"{url} wider than the viewport: {wide}")
            problems.extend(f"{url} {v}" for v in axe_violations(page))
        # The mapping step: a small file uploaded, its columns to choose.
        page.goto(gateway.url + "/contacts/import")
        small = b"Mobile,Site\n+12025550149,north\n"
        page.set_input_files(
            "#u-file", files=[{"name": "s.csv", "mimeType": "text/csv", "buffer": small}]
        )
        page.click("main form button[type=submit]")
        page.wait_for_selector("#m-number")
        problems.extend(f"mapping {v}" for v in axe_violations(page))
        wide = overflow(page)
        if wide:
            problems.append(f"mapping wider than the viewport: {wide}")
        page.close()
    axe.close()
    assert problems == []
