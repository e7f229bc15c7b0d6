"""The panel's appointments pages: the list (masked number, clinic, start in the
clinic's zone, status, version) and one appointment with its notices and changes;
viewers see no numbers, auditors no page."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.appointments.usecase import AppointmentRequest
from gateway.panel_users import Role
from gateway.usecases import Caller
from tests.admin_support import PanelClient
from tests.conftest import CANARY_DIGITS, CANARY_NUMBER
from tests.test_admin_pages import MASKED, signed_in

DAY = 86400.0
API = Caller.for_panel_user("user:test", reads_phi=True, acts=True)


async def _book(
    panel: PanelClient, key: str, days: float, status: str = "booked", kind: str | None = None
) -> str:
    start = datetime.fromtimestamp(panel.gw.clock.time() + days * DAY, UTC)
    saved = await panel.gw.usecases.appointments.upsert(
        API,
        AppointmentRequest(
            key, "MRN-CANARY-7731", start, status=status, number=CANARY_NUMBER,
            clinic="North Clinic", location="Room 4", appt_type=kind,
        ),
    )  # fmt: skip
    return saved.id


async def test_operator_sees_the_list_and_one_appointment_with_notices(
    panel: PanelClient,
) -> None:
    first = await _book(panel, "k1", 3)
    await _book(panel, "k1", 3, status="cancelled")
    second = await _book(panel, "k2", 4, kind="NEWPT")
    await signed_in(panel, Role.OPERATOR)
    r = await panel.client.get("/appointments")
    page = await r.text()
    assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
    assert MASKED in page and CANARY_DIGITS not in page and "MRN-CANARY" not in page
    assert "North Clinic · Room 4" in page and "2027-01-18 08:00 UTC" in page
    assert "cancelled: 1" in page and "booked: 1" in page
    assert 'href="/appointments"' in page
    page = await (await panel.client.get("/appointments?status=cancelled")).text()
    assert page.count('href="/appointments/apt_') == 1
    page = await (await panel.client.get(f"/appointments/{first}")).text()
    assert "appointment_moved" not in page  # k2 was booked for the same patient: moved
    assert "superseded" in page and "rebooked" in page
    assert ">booked<" in page and ">cancelled<" in page and MASKED in page
    page = await (await panel.client.get(f"/appointments/{second}")).text()
    assert "<dt>Type</dt><dd>NEWPT</dd>" in page
    r = await panel.client.get("/appointments/apt_0000000000000000")
    assert r.status == 404


async def test_viewer_sees_no_number_and_auditor_no_page(panel: PanelClient) -> None:
    await _book(panel, "k1", 3)
    await signed_in(panel, Role.VIEWER)
    page = await (await panel.client.get("/appointments")).text()
    assert "North Clinic" in page and MASKED not in page and CANARY_DIGITS not in page
    panel.client.session.cookie_jar.clear()
    await signed_in(panel, Role.AUDITOR)
    assert (await panel.client.get("/appointments")).status == 403
