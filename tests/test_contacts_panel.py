"""Issue 15 point 1 in the panel: contacts listed masked with filters and counts, one
contact's attributes edited (audited), groups created and filled from an audience,
saved audiences counted; the import's upload, mapping step, background progress and
line errors; roles and CSRF as on every panel page."""

from __future__ import annotations

import asyncio
import os
import re

import aiohttp

from gateway.panel_users import Role
from tests.admin_support import PanelClient
from tests.conftest import CANARY_DIGITS, CANARY_NUMBER
from tests.test_admin_pages import MASKED, signed_in

CSV = (
    "Cell,Idioma,Band,Site,Tags\n"
    f"{CANARY_NUMBER},es,65+,north,vip\n"
    "(202) 555-0148,en,18-34,south,\n"
    f"{CANARY_DIGITS}77,en,,,\n"
)


def _upload(text: str, **fields: str) -> aiohttp.FormData:
    data = aiohttp.FormData()
    for name, value in fields.items():
        data.add_field(name, value)
    data.add_field("file", text.encode(), filename="spring.csv", content_type="text/csv")
    return data


async def _import(panel: PanelClient, token: str, text: str = CSV) -> str:
    """Upload, map (Idioma is not a usual name: chosen by hand), start, wait; the page."""
    r = await panel.client.post(
        "/contacts/import",
        data=_upload(text),
        headers={"X-CSRF-Token": token, "HX-Request": "true", "Origin": panel.origin},
    )
    assert r.status == 204, await r.text()
    mapping = r.headers["HX-Redirect"]
    page = await (await panel.client.get(mapping)).text()
    selected = re.findall(r'<option value="(\d+)" selected>([^<]*)</option>', page)
    assert selected == [("0", "Cell"), ("2", "Band"), ("3", "Site"), ("4", "Tags")]
    form = {"col_number": "0", "col_language": "1", "col_age_band": "2", "col_clinic": "3"}
    r = await panel.post(mapping, {**form, "col_tags": "4", "region": "US"}, token=token)
    assert r.status == 303, await r.text()
    job_page = r.headers["Location"]
    job = panel.gw.contacts.imports.job(job_page.rsplit("/", 1)[1])
    assert "<progress" in await (await panel.client.get(job_page)).text()
    assert job.task is not None
    await asyncio.wait_for(job.task, 30)
    return await (await panel.client.get(job_page + "/progress")).text()


async def test_an_import_maps_columns_shows_progress_and_line_errors(panel: PanelClient) -> None:
    token = await signed_in(panel, Role.OPERATOR)
    fragment = await _import(panel, token)
    assert "Done: 100 %." in fragment and 'id="import-created">2<' in fragment
    assert "hx-trigger" not in fragment  # polling stops
    assert '<td data-label="Line">4</td><td data-label="Code">invalid_number' in fragment
    assert CANARY_DIGITS not in fragment
    left = [n for n in os.listdir(panel.gw.config.data_dir) if n.startswith("contacts-")]
    assert left == []  # the uploaded file is gone
    assert "contacts_imported" in await panel.audit_actions()
    again = await _import(panel, token)
    assert 'id="import-unchanged">2<' in again and 'id="import-created">0<' in again


async def test_contacts_are_listed_masked_filtered_and_edited(panel: PanelClient) -> None:
    token = await signed_in(panel, Role.OPERATOR)
    await _import(panel, token)
    r = await panel.client.get("/contacts")
    page = await r.text()
    assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
    assert MASKED in page and CANARY_DIGITS not in page
    assert '<span id="contacts-total">2</span>' in page
    south = await (await panel.client.get("/contacts?clinic=south")).text()
    assert '<span id="contacts-total">1</span>' in south and MASKED not in south
    key = panel.gw.store.blind_index(CANARY_NUMBER).hex()
    form = {"language": "en", "clinic": "east", "tags": "vip, flu", "preferences": "tips"}
    r = await panel.post(f"/contacts/{key}", form)
    assert r.status == 403  # no CSRF token
    r = await panel.post(f"/contacts/{key}", form, token=token)
    assert r.status == 303
    one = await (await panel.client.get(r.headers["Location"])).text()
    assert 'value="east"' in one and 'value="flu, vip"' in one and "Saved." in one
    r = await panel.post(f"/contacts/{key}", {**form, "clinic": "a b"}, token=token)
    assert r.status == 422 and "letters, digits" in await r.text()
    assert "contact_attributes_updated" in await panel.audit_actions()


async def test_a_group_filled_from_an_audience_and_a_saved_audience(panel: PanelClient) -> None:
    token = await signed_in(panel, Role.OPERATOR)
    await _import(panel, token)
    r = await panel.post("/groups", {"name": "Flu 2026"}, token=token)
    assert r.status == 303
    group_url = r.headers["Location"].split("?")[0]
    r = await panel.post(group_url + "/members", {"age_bands": "65+"}, token=token)
    assert r.status == 303 and "added=1" in r.headers["Location"]
    page = await (await panel.client.get(group_url)).text()
    assert '<span id="group-members">1</span>' in page
    r = await panel.post("/groups", {"name": "Flu 2026"}, token=token)
    assert r.status == 409 and "another group has this name" in await r.text()
    r = await panel.post("/audiences", {"name": "English", "languages": "en"}, token=token)
    assert r.status == 303
    groups = await (await panel.client.get("/groups")).text()
    assert "English" in groups and "<td>1</td>" in groups  # its size, counted now


async def test_viewer_and_auditor_have_no_contacts_pages(panel: PanelClient) -> None:
    for role in (Role.VIEWER, Role.AUDITOR):
        await signed_in(panel, role)
        for path in ("/contacts", "/groups", "/contacts/import"):
            assert (await panel.client.get(path)).status == 403
        panel.client.session.cookie_jar.clear()
