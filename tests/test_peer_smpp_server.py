"""The SMPP interop peer (tests/peers/smpp_server.js) works, as seen by smpplib, a client
neither it nor we wrote. Later tests point our own SMPP driver at the same peer.

smpplib blocks on its socket, so each of its calls runs in a worker thread; every read is
bounded by the socket timeout and every wait by a deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import smpplib.client
import smpplib.consts
import smpplib.exceptions
import smpplib.gsm
import smpplib.smpp

from tests.peers.smpp_peer import SmppPeer, smpp_server
from tests.peers.smpplib_esme import RECEIPT, RECIPIENT, SENDER, SmpplibEsme

SYSTEM_ID = "smsgw-test"
PASSWORD = "peer-pw"
SOCKET_TIMEOUT = 5.0
WAIT = 10.0


def Esme(port: int) -> SmpplibEsme:
    return SmpplibEsme(
        port, system_id=SYSTEM_ID, password=PASSWORD, socket_timeout=SOCKET_TIMEOUT, wait=WAIT
    )


@pytest.fixture
async def peer(tmp_path: Path) -> AsyncIterator[SmppPeer]:
    async with smpp_server(tmp_path, SYSTEM_ID, PASSWORD, receipt_delay=0.05) as running:
        yield running


@pytest.fixture
async def esme(peer: SmppPeer) -> AsyncIterator[SmpplibEsme]:
    client = await asyncio.to_thread(Esme, peer.port)
    yield client
    await asyncio.to_thread(client.close)


async def test_bad_password_is_refused_then_bind_transceiver_works(
    peer: SmppPeer, esme: SmpplibEsme
) -> None:
    with pytest.raises(smpplib.exceptions.PDUError) as refused:
        await asyncio.to_thread(esme.bind, "transceiver", "wrong-pw")
    assert refused.value.args[1] == smpplib.consts.SMPP_ESME_RINVPASWD
    await asyncio.to_thread(esme.bind, "transceiver")
    assert esme.client.state == smpplib.consts.SMPP_CLIENT_STATE_BOUND_TRX

    first = await peer.expect_pdu("bind_transceiver")
    second = await peer.expect_pdu("bind_transceiver")
    assert first["system_id"] == second["system_id"] == SYSTEM_ID
    assert second["interface_version"] == 0x34
    assert "password" not in first and "wrong-pw" not in peer.transcript()

    await asyncio.to_thread(esme.close)
    await peer.expect_pdu("unbind")
    await peer.expect("closed")


async def test_submits_are_logged_with_data_coding_bytes_udh_and_tlvs(
    peer: SmppPeer, esme: SmpplibEsme
) -> None:
    await asyncio.to_thread(esme.bind)
    await asyncio.to_thread(esme.submit, "Ward 7B @ £5")  # GSM 03.38: @ is 0x00, £ is 0x01
    await asyncio.to_thread(esme.submit, "Привет ☃")  # not GSM: UCS-2
    await asyncio.to_thread(esme.submit, "long " * 40)  # 200 GSM chars: 2 parts with a UDH
    await asyncio.to_thread(
        esme.client.send_message,
        source_addr=SENDER,
        destination_addr=RECIPIENT,
        short_message=None,
        message_payload=b"in the payload",
    )
    await asyncio.to_thread(esme.read_until, lambda: len(esme.message_ids) == 5)
    assert len(set(esme.message_ids)) == 5 and all(i.isdigit() for i in esme.message_ids)

    gsm = await peer.expect_pdu("submit_sm")
    assert gsm["data_coding"] == 0 and gsm["esm_class"] == 0
    assert bytes.fromhex(gsm["short_message_hex"]) == b"Ward 7B \x00 \x015"
    assert (gsm["source_addr"], gsm["source_addr_ton"], gsm["source_addr_npi"]) == (SENDER, 1, 1)
    assert (gsm["destination_addr"], gsm["dest_addr_ton"]) == (RECIPIENT, 1)
    assert gsm["tlvs"] == {}

    ucs2 = await peer.expect_pdu("submit_sm")
    assert ucs2["data_coding"] == 8
    assert bytes.fromhex(ucs2["short_message_hex"]) == "Привет ☃".encode("utf-16-be")

    parts = [await peer.expect_pdu("submit_sm", esm_class=0x40) for _ in range(2)]
    udhs = [bytes.fromhex(p["short_message_hex"])[:6] for p in parts]
    # IEI 0x00 (8-bit reference), same reference, 2 parts, numbered 1 and 2.
    assert [u[:3] for u in udhs] == [b"\x05\x00\x03"] * 2
    assert udhs[0][3] == udhs[1][3] and [u[4:] for u in udhs] == [b"\x02\x01", b"\x02\x02"]

    payload = await peer.expect_pdu("submit_sm")
    assert payload["short_message_hex"] == ""
    assert payload["tlvs"] == {"message_payload": b"in the payload".hex()}


async def test_registered_delivery_gets_a_receipt(tmp_path: Path) -> None:
    async with smpp_server(tmp_path, SYSTEM_ID, PASSWORD, receipt_delay=0.05, hex_ids=True) as p:
        esme = await asyncio.to_thread(Esme, p.port)
        try:
            await asyncio.to_thread(esme.bind)
            # Receipts follow their submit_sm after the same delay: had the first one (no
            # receipt asked for) been given one, it would come before the second's.
            await asyncio.to_thread(esme.submit, "no receipt please")
            await asyncio.to_thread(
                esme.submit,
                "receipt please",
                registered_delivery=smpplib.consts.SMPP_SMSC_DELIVERY_RECEIPT_BOTH,
            )
            await asyncio.to_thread(
                esme.read_until, lambda: len(esme.message_ids) == 2 and bool(esme.delivered)
            )
        finally:
            await asyncio.to_thread(esme.close)

        first_id, second_id = esme.message_ids
        assert first_id != second_id and int(second_id, 16) == int(first_id, 16) + 1
        (receipt,) = esme.delivered
        assert receipt.esm_class == 0x04  # message type: SMSC delivery receipt
        assert receipt.receipted_message_id.decode() == second_id
        assert receipt.message_state == smpplib.consts.SMPP_MESSAGE_STATE_DELIVERED
        match = RECEIPT.fullmatch(receipt.short_message.decode("ascii"))
        assert match is not None, receipt.short_message
        assert match["id"] == second_id and match["text"] == "receipt please"
        # It went back to the sender, from the recipient.
        assert (receipt.source_addr.decode(), receipt.destination_addr.decode()) == (
            RECIPIENT,
            SENDER,
        )
        sent = await p.expect("receipt_sent", message_id=second_id)
        assert sent["command_status"] == 0
        assert await p.expect_pdu("deliver_sm_resp", sequence=sent["sequence"])


async def test_mo_reaches_a_bound_receiver(peer: SmppPeer, esme: SmpplibEsme) -> None:
    await asyncio.to_thread(esme.bind, "receiver")
    await peer.expect_pdu("bind_receiver")
    texts = [("Да, приду ☃", 8), ("Yes @ 5£", 0)]
    for n, (text, data_coding) in enumerate(texts, 1):
        reading = asyncio.create_task(
            asyncio.to_thread(esme.read_until, lambda n=n: len(esme.delivered) == n)
        )
        sent = await peer.send_mo("+12025550147", "4000", text, data_coding=data_coding)
        await reading
        assert sent["command_status"] == 0

    ucs2, gsm = esme.delivered
    assert (ucs2.data_coding, ucs2.esm_class) == (8, 0)
    assert ucs2.short_message.decode("utf-16-be") == "Да, приду ☃"
    assert (ucs2.source_addr.decode(), ucs2.source_addr_ton) == ("12025550147", 1)
    assert ucs2.destination_addr.decode() == "4000"
    assert (gsm.data_coding, gsm.short_message) == (0, b"Yes \x00 5\x01")


async def test_stop_unbinds_clients_and_exits_cleanly(tmp_path: Path) -> None:
    async with smpp_server(tmp_path, SYSTEM_ID, PASSWORD) as p:
        esme = await asyncio.to_thread(Esme, p.port)
        try:
            await asyncio.to_thread(esme.bind)
            stopping = asyncio.create_task(p.stop())
            unbind = await asyncio.to_thread(esme.client.read_pdu)
            assert unbind.command == "unbind"
            resp = smpplib.smpp.make_pdu("unbind_resp", client=esme.client)
            resp.sequence = unbind.sequence
            await asyncio.to_thread(esme.client.send_pdu, resp)
            assert await stopping == 0
        finally:
            await asyncio.to_thread(esme.client.disconnect)
    assert [e["event"] for e in p.events][-2:] == ["closed", "stopped"]
    assert [e["command"] for e in p.received()] == ["bind_transceiver", "unbind_resp"]
    assert '"event": "stopped"' in (tmp_path / "smpp_peer.log").read_text()


async def test_receipt_waits_for_a_receiver_and_the_control_commands(tmp_path: Path) -> None:
    """Transmitter and receiver apart; hex ids answered, decimal ids reported; reject; drop."""
    async with smpp_server(
        tmp_path, SYSTEM_ID, PASSWORD, receipt_delay=0.0, hex_ids=True, receipt_hex_ids=False
    ) as p:
        tx = await asyncio.to_thread(Esme, p.port)
        rx = await asyncio.to_thread(Esme, p.port)
        try:
            await asyncio.to_thread(tx.bind, "transmitter")
            with pytest.raises(ValueError, match="unknown status"):
                await p.reject_next("ESME_RNOSUCHTHING")
            await p.reject_next("ESME_RTHROTTLED")
            await asyncio.to_thread(tx.submit, "throttled")
            with pytest.raises(smpplib.exceptions.PDUError) as throttled:
                await asyncio.to_thread(tx.read_until, lambda: bool(tx.message_ids))
            assert throttled.value.args[1] == smpplib.consts.SMPP_ESME_RTHROTTLED

            await asyncio.to_thread(tx.submit, "kept for later", registered_delivery=1)
            await asyncio.to_thread(tx.read_until, lambda: bool(tx.message_ids))
            (hex_id,) = tx.message_ids
            answered = await p.expect("submit_sm_resp", message_id=hex_id)
            submitted = await p.expect_pdu("submit_sm", sequence=answered["sequence"])
            assert bytes.fromhex(submitted["short_message_hex"]) == b"kept for later"

            await asyncio.to_thread(rx.bind, "receiver")  # the receipt was waiting for this
            await asyncio.to_thread(rx.read_until, lambda: bool(rx.delivered))
            (receipt,) = rx.delivered
            assert receipt.receipted_message_id.decode() == hex_id
            match = RECEIPT.fullmatch(receipt.short_message.decode("ascii"))
            assert match is not None and int(match["id"]) == int(hex_id, 16)

            await p.drop_connections()
            assert {(await p.expect("closed"))["session"] for _ in range(2)} == {1, 2}
        finally:
            for client in (tx, rx):
                await asyncio.to_thread(client.client.disconnect)
