"""`/api/v1/hl7/...` on a gateway with a real MLLP feed and a real write-back peer:
counters, the quarantine, reprocess (one winner), the raw reveal (phi scope, audited),
parked write-backs re-sent; no content in any list or error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.clinical import outbound
from gateway.hl7 import framing
from gateway.store.consent_sql import cipher_of
from gateway.tokens import create_token
from tests.conftest import GatewayFactory
from tests.hl7_rig import Peer, message, msa
from tests.ports import free_port
from tests.test_api import Api, _api, _error
from tests.tlsfiles import self_signed

SET_FIXED = "UPDATE hl7_messages SET interface = 'fixed' WHERE id = ?"
IFACES = {
    "interfaces": [
        {"name": "ehr", "listen": "127.0.0.1:0"},
        {"name": "fixed", "listen": "127.0.0.1:0", "mrn_authority": "HOSP"},
        {"name": "ehr-out", "direction": "out", "host": "127.0.0.1", "port": 9, "retries": 0},
    ]
}


@pytest.fixture
async def api(open_gateway: GatewayFactory) -> AsyncIterator[Api]:
    gw = await open_gateway(hl7=IFACES)
    async for a in _api(gw, frozenset({"read"})):
        yield a


async def _send(api: Api, iface: str, *messages: str) -> list[bytes]:
    assert api.gw.hl7 is not None
    peer = await Peer.open(api.gw.hl7.listeners[iface].port)
    await peer.send(b"".join(framing.encode(m.encode()) for m in messages))
    acks = await peer.frames(len(messages))
    await peer.aclose()
    return acks


async def test_counters_quarantine_and_a_reprocess_that_wins_once(api: Api) -> None:
    acks = await _send(api, "ehr", message("Z01", "A"), message("Z03", "Q"), message("Z01", "A"))
    assert [msa(a)[0] for a in acks] == ["AA", "AE", "AA"]
    r = await api.get("/api/v1/hl7/interfaces")
    body = await r.json()
    by_name = {i["name"]: i for i in body["interfaces"]}
    assert by_name["ehr"]["counters"] == {
        "mapped": 1,
        "ignored": 0,
        "quarantined": 1,
        "rejected": 0,
        "duplicate": 1,
    }
    assert by_name["ehr-out"]["direction"] == "out"
    r = await api.get("/api/v1/hl7/messages?state=quarantined")
    [q] = (await r.json())["messages"]
    assert q["error_code"] == 103 and q["error_location"] == "PID-3" and q["control_id"] == "Q"
    text = await (await api.get("/api/v1/hl7/messages")).text()
    assert "Doe" not in text and "5550123" not in text and "MRN42" not in text
    await _error(await api.get("/api/v1/hl7/messages?state=bogus"), 400, "invalid_query")
    admin = (await create_token(api.gw.store, "a", frozenset({"admin"}), api.gw.clock)).text
    path = f"/api/v1/hl7/messages/{q['id']}/reprocess"
    await _error(await api.post(path, {}), 403, "forbidden")  # read scope only
    again = await api.post(path, {}, token=admin)
    assert (await again.json())["state"] == "quarantined"  # the profile is not fixed


async def test_reprocess_after_a_profile_fix(open_gateway: GatewayFactory) -> None:
    # the same feed, its profile fixed in the config and the gateway restarted
    gw = await open_gateway(hl7=IFACES)
    async for api in _api(gw, frozenset({"admin"})):
        await _send(api, "fixed", message("Z03", "Q"))  # maps: the authority is set
        acks = await _send(api, "ehr", message("Z03", "Q2"))
        assert msa(acks[0])[0] == "AE"
        [q] = (await (await api.get("/api/v1/hl7/messages?state=quarantined")).json())["messages"]
        assert api.gw.hl7 is not None
        # move the quarantined row to the fixed interface's name, as a renamed feed would
        qid = q["id"]
        await api.gw.store.writer.run(lambda c, qid=qid: c.execute(SET_FIXED, (qid,)))
        path = f"/api/v1/hl7/messages/{q['id']}/reprocess"
        a, b = await asyncio.gather(api.post(path, {}), api.post(path, {}))
        assert sorted([a.status, b.status]) == [200, 409]
        entries = await api.gw.audit.entries(limit=50)
        assert [e for e in entries if e.action == "hl7_reprocessed"]


async def test_raw_needs_phi_and_is_audited(api: Api) -> None:
    await _send(api, "ehr", message("Z01", "R", name="Müller^Anna"))
    [m] = (await (await api.get("/api/v1/hl7/messages")).json())["messages"]
    raw_path = f"/api/v1/hl7/messages/{m['id']}/raw"
    await _error(await api.get(raw_path), 403, "forbidden")
    phi = (await create_token(api.gw.store, "p", frozenset({"read", "phi"}), api.gw.clock)).text
    r = await api.get(raw_path, token=phi)
    assert "Müller" in (await r.json())["message"]
    entries = await api.gw.audit.entries(limit=50)
    assert [e.target_id for e in entries if e.action == "hl7_raw_revealed"] == [m["id"]]
    await _error(
        await api.get("/api/v1/hl7/messages/hl7_0000000000000000/raw", token=phi), 404, "not_found"
    )


async def test_a_parked_write_back_is_listed_and_resent(api: Api) -> None:
    gw = api.gw

    def job(conn: Any) -> str:
        return outbound.enqueue(
            conn,
            cipher_of(gw.store),
            "ehr-out",
            "MSH|^~\\&|A|B|C|D|1||ACK|W1|P|2.5.1\r",
            "W1",
            gw.clock.time(),
            kind="appointment_reply",
        )

    rid = await gw.store.writer.run(job)
    assert gw.hl7 is not None
    await gw.hl7.lanes["ehr-out"].run_due()  # nothing listens on port 9: parked (retries 0)
    r = await api.get("/api/v1/hl7/outbound?state=parked")
    [row] = (await r.json())["messages"]
    assert row["id"] == rid and row["attempts"] == 1
    admin = (await create_token(gw.store, "a", frozenset({"admin"}), gw.clock)).text
    unknown = "/api/v1/hl7/outbound/hlo_0000000000000000/resend"
    await _error(await api.post(unknown, {}, token=admin), 404, "not_found")
    ok = await api.post(f"/api/v1/hl7/outbound/{rid}/resend", {}, token=admin)
    assert ok.status == 200
    await _error(
        await api.post(f"/api/v1/hl7/outbound/{rid}/resend", {}, token=admin), 409, "not_parked"
    )


async def test_tls_feed_and_a_tls_write_back_to_it(
    open_gateway: GatewayFactory, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path, "mllp", "127.0.0.1")
    port = free_port()
    gw = await open_gateway(
        hl7={
            "interfaces": [
                {
                    "name": "secure",
                    "listen": f"127.0.0.1:{port}",
                    "tls_cert_file": str(cert),
                    "tls_key_file": str(key),
                },
                {
                    "name": "back",
                    "direction": "out",
                    "host": "127.0.0.1",
                    "port": port,
                    "tls": True,
                    "tls_ca_file": str(cert),
                    "ack_timeout": 5.0,
                },
            ]
        }
    )
    assert gw.hl7 is not None

    def job(conn: Any) -> str:
        return outbound.enqueue(
            conn,
            cipher_of(gw.store),
            "back",
            message("Z02", "T1"),
            "T1",
            gw.clock.time(),
            kind="appointment_reply",
        )

    rid = await gw.store.writer.run(job)
    assert await gw.hl7.lanes["back"].run_due() == 1
    [row] = await gw.hl7.outbound("acked")
    assert row.id == rid and row.ack_code == "AA"
    plain = await Peer.open(port)  # no TLS: the handshake fails, nothing is stored
    await plain.send(framing.encode(message("Z01", "P1").encode()))
    assert b"MSA" not in await plain.closed()
    await plain.aclose()
    assert [m.control_id for m in await gw.hl7.messages(None, None)] == ["T1"]
