"""The panel's "HL7 interfaces" page: counters, the quarantine with its reason and a
reprocess button (audited, CSRF-guarded), parked write-backs; no message content."""

from __future__ import annotations

import sqlite3

from aiohttp.test_utils import TestClient, TestServer

from gateway.clinical import outbound
from gateway.hl7 import framing
from gateway.http_app import build_app, runner_options
from gateway.panel_users import Role
from gateway.store.consent_sql import cipher_of
from tests.admin_support import PanelClient
from tests.conftest import FAST_PASSWORD_HASH, GatewayFactory
from tests.hl7_rig import Peer, message

IFACES = {"interfaces": [{"name": "ehr", "listen": "127.0.0.1:0"}]}


async def test_quarantine_shown_with_its_reason_and_reprocessed_from_the_panel(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway(hl7=IFACES, admin=FAST_PASSWORD_HASH)
    assert gw.hl7 is not None
    peer = await Peer.open(gw.hl7.listeners["ehr"].port)
    await peer.send(framing.encode(message("Z03", "QX", name="Müller^Anna").encode()))
    await peer.frames(1)
    await peer.aclose()
    [q] = await gw.hl7.messages("quarantined", None)

    def parked(conn: sqlite3.Connection) -> None:  # a write-back whose attempts got no answer
        row = outbound.enqueue(
            conn,
            cipher_of(gw.store),
            "ehr-out",
            "MSH|^~\\&|SMSGW|H|EHR|C|20261201090000||SIU^S14|W9|P|2.5.1\r",
            "W9",
            0.0,
            kind="appointment_reply",
            ref="r1",
        )
        conn.execute(
            "UPDATE hl7_outbound SET state = 'parked', possible_duplicate = 1,"
            " last_error = 'attempts exhausted' WHERE id = ?",
            (row,),
        )

    await gw.store.writer.run(parked)
    server = TestServer(build_app(gw))
    await server.start_server(**runner_options(gw))
    client = TestClient(server)
    await client.start_server()
    try:
        ui = PanelClient(gw, client)
        await ui.add_user("op", Role.OPERATOR)
        token = await ui.login_ok("op")
        page = await (await client.get("/hl7")).text()
        assert "QX" in page and "no identifier of the configured authority" in page
        assert "quarantined 1" in page and "HL7 interfaces" in page
        assert "Müller" not in page and "5550123" not in page
        assert "W9" in page and "The EHR may already have it" in page  # a flagged write-back
        form = {"id": q.id}
        assert (await ui.post("/hl7/reprocess", form)).status == 403  # no CSRF token
        r = await ui.post("/hl7/reprocess", form, token=token)
        assert r.status == 303
        assert r.headers["Location"] == "/hl7?done=reprocessed&state=quarantined"
        assert (await ui.audit_actions()).count("hl7_reprocessed") == 1
        r = await ui.post("/hl7/resend", {"id": "hlo_0000000000000000"}, token=token)
        assert r.headers["Location"] == "/hl7?done=not_parked"
    finally:
        await client.close()
