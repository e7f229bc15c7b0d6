"""The SMPP driver against an SMSC nobody here wrote: the npm `smpp` server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from drivers.base import (
    DriverAuthFailed,
    DriverNotReady,
    InboundPart,
    OutboundSms,
    PermanentSendError,
    ReceiptState,
    RouteState,
)
from drivers.clock import SystemClock
from drivers.smpp.driver import SmppDriver, SmppOptions
from drivers.text import split
from tests.peers.smpp_peer import SmppPeer, smpp_server
from tests.sinks import RecordingSink

PASSWORD = "s3cret"


Sink = RecordingSink


def _sms(body: str, to: str = "+12025550147", reference: int = 0x1234) -> OutboundSms:
    plan = split(body)
    return OutboundSms(
        message_id="m", to=to, parts=plan.parts, encoding=plan.encoding.value, reference=reference
    )


@pytest.fixture
async def peer(tmp_path: Path) -> AsyncIterator[SmppPeer]:
    async with smpp_server(
        tmp_path, "hospital", PASSWORD, receipt_delay=0.05, hex_ids=True, receipt_hex_ids=False
    ) as p:
        yield p


async def _driver(peer: SmppPeer, **options: Any) -> tuple[SmppDriver, Sink]:
    sink = Sink()
    opts = SmppOptions(
        host=peer.host,
        port=peer.port,
        system_id="hospital",
        password=PASSWORD,
        reconnect_min=0.05,
        reconnect_max=0.2,
        **options,
    )
    driver = SmppDriver("carrier", opts, sink, SystemClock())
    await driver.start()
    await sink.until(lambda: driver.health().state is RouteState.UP)
    return driver, sink


async def test_gsm_ucs2_and_long_messages_reach_the_smsc_as_sent(peer: SmppPeer) -> None:
    driver, _ = await _driver(peer)
    try:
        one = await driver.submit(_sms("Your results are ready"))
        assert len(one.carrier_ids) == 1
        pdu = await peer.expect_pdu("submit_sm")
        assert pdu["data_coding"] == 0 and pdu["destination_addr"] == "12025550147"
        assert bytes.fromhex(pdu["short_message_hex"]) == b"Your results are ready"

        await driver.submit(_sms("Результаты готовы"))
        pdu = await peer.expect_pdu("submit_sm")
        assert pdu["data_coding"] == 8
        assert bytes.fromhex(pdu["short_message_hex"]).decode("utf-16-be") == "Результаты готовы"

        three = await driver.submit(_sms("x" * 400))
        assert len(three.carrier_ids) == 3
        parts = [await peer.expect_pdu("submit_sm") for _ in range(3)]
        assert all(p["esm_class"] & 0x40 for p in parts)
        udhs = [bytes.fromhex(p["short_message_hex"])[:6] for p in parts]
        assert udhs == [bytes([5, 0, 3, 0x34, 3, n]) for n in (1, 2, 3)]
    finally:
        await driver.aclose()


async def test_receipts_correlate_even_when_hex_and_decimal_disagree(peer: SmppPeer) -> None:
    driver, sink = await _driver(peer)
    try:
        result = await driver.submit(_sms("ping"))
        await sink.until(lambda: sink.receipts)
        receipt = sink.receipts[0]
        assert receipt.state is ReceiptState.DELIVERED
        # The answer carried a hex id, the receipt a decimal one: one of the spellings
        # the driver offers must be the id the gateway stored.
        assert result.carrier_ids[0] in (receipt.carrier_id, *receipt.alternate_ids)
    finally:
        await driver.aclose()


async def test_inbound_messages_reach_the_sink(peer: SmppPeer) -> None:
    driver, sink = await _driver(peer)
    try:
        await peer.send_mo("+12025550147", "4000", text="STOP", data_coding=0)
        await peer.send_mo("+12025550148", "4000", text="Да, приду", data_coding=8)
        await sink.until(lambda: len(sink.inbounds) == 2)
        assert [(m.sender, m.body) for m in sink.inbounds] == [
            ("+12025550147", "STOP"),
            ("+12025550148", "Да, приду"),
        ]
    finally:
        await driver.aclose()


async def test_concatenated_parts_reach_the_sink_one_by_one(peer: SmppPeer) -> None:
    """The driver does not reassemble: every part goes to the sink as it comes (here a
    16-bit UDH reference, last part first), so each is durable before it is acked."""
    driver, sink = await _driver(peer)

    def udh16(seq: int) -> bytes:
        return bytes((6, 8, 4, 0x12, 0x34, 2, seq))  # IEI 0x08: 16-bit reference 0x1234

    try:
        for seq, text in ((2, b"world"), (1, b"hello ")):
            sent = await peer.send_mo(
                "+12025550147", "4000", short_message=udh16(seq) + text, esm_class=0x40
            )
            assert sent["command_status"] == 0
        await sink.until(lambda: len(sink.inbounds) == 2)
        assert [(m.sender, m.body, m.part) for m in sink.inbounds] == [
            ("+12025550147", "world", InboundPart(0x1234, 16, 2, 2)),
            ("+12025550147", "hello ", InboundPart(0x1234, 16, 2, 1)),
        ]
    finally:
        await driver.aclose()


async def test_throttling_parks_the_link_without_costing_an_attempt(peer: SmppPeer) -> None:
    driver, _ = await _driver(peer, throttle_min=0.5)
    try:
        await peer.reject_next("ESME_RTHROTTLED")
        with pytest.raises(DriverNotReady) as e:
            await driver.submit(_sms("hello"))
        assert e.value.retry_after == pytest.approx(0.5)
        with pytest.raises(DriverNotReady):  # still paused: nothing is sent
            await driver.submit(_sms("hello"))
    finally:
        await driver.aclose()


async def test_a_window_of_throttles_pauses_the_link_once(peer: SmppPeer) -> None:
    """Issue 16, point 4: five submits in flight come back throttled for one overload;
    the pause is `throttle_min` once, not doubled per throttled PDU (which reached
    `throttle_max` within a window and held a route at a fraction of the carrier's rate)."""
    driver, _ = await _driver(peer, throttle_min=5.0, throttle_max=300.0, session_window=5)
    try:
        await peer.reject_next("ESME_RTHROTTLED", count=5)
        results = await asyncio.gather(
            *(driver.submit(_sms(f"hello {i}")) for i in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, DriverNotReady) for r in results), results
        assert driver.health().counters["throttled"] == 5  # all five were in flight
        waits = [r.retry_after for r in results if isinstance(r, DriverNotReady)]
        assert all(w is not None and w <= 5.0 for w in waits), waits
    finally:
        await driver.aclose()


async def test_permanent_rejection(peer: SmppPeer) -> None:
    driver, _ = await _driver(peer)
    try:
        await peer.reject_next("ESME_RINVDSTADR")
        with pytest.raises(PermanentSendError) as e:
            await driver.submit(_sms("hello"))
        assert e.value.code == "smpp:0x0000000b"
    finally:
        await driver.aclose()


async def test_wrong_password_parks_the_route(peer: SmppPeer) -> None:
    """A bind refused for its credentials parks the route (no rebinds on a timer:
    carriers lock accounts); sends get `DriverAuthFailed` until an operator resumes."""
    sink = Sink()
    opts = SmppOptions(
        host=peer.host,
        port=peer.port,
        system_id="hospital",
        password="wrong",
        reconnect_min=0.05,
        reconnect_max=0.1,
    )
    driver = SmppDriver("carrier", opts, sink, SystemClock())
    await driver.start()
    try:
        await sink.until(lambda: driver.health().state is RouteState.PARKED)
        assert "refused the credentials" in driver.health().detail
        assert not driver.health().can_send
        with pytest.raises(DriverAuthFailed):
            await driver.submit(_sms("hello"))
    finally:
        await driver.aclose()


async def test_reconnects_after_the_link_drops(peer: SmppPeer) -> None:
    driver, sink = await _driver(peer)
    try:
        await peer.drop_connections()
        await sink.until(lambda: driver.health().state is RouteState.DOWN)
        await sink.until(lambda: driver.health().state is RouteState.UP)
        assert driver.health().counters["reconnects"] >= 1
        assert len((await driver.submit(_sms("after"))).carrier_ids) == 1
    finally:
        await driver.aclose()


async def test_a_group_goes_together_and_each_message_keeps_its_outcome(peer: SmppPeer) -> None:
    """`submit_many`: the one-part messages of a group are written together on one link;
    a long one goes its own way (parts on one link); each answer settles its message
    as `submit()` would: refused, throttled or accepted."""
    driver, _ = await _driver(peer, throttle_min=0.5)
    try:
        await peer.reject_next("ESME_RINVDSTADR")
        group = [
            _sms("first", to="+12025550101"),
            _sms("second", to="+12025550102"),
            _sms("x" * 400, to="+12025550103"),
            _sms("fourth", to="+12025550104"),
        ]
        outcomes = await asyncio.gather(*driver.submit_many(group), return_exceptions=True)
        assert isinstance(outcomes[0], PermanentSendError)
        assert outcomes[0].code == "smpp:0x0000000b"
        assert [len(o.carrier_ids) for o in outcomes[1:]] == [1, 3, 1]  # type: ignore[union-attr]
        arrived = [(await peer.expect_pdu("submit_sm"))["destination_addr"] for _ in range(6)]
        # The one-part messages first, in order, then the long one's three parts.
        assert arrived[:3] == ["12025550101", "12025550102", "12025550104"]
        assert arrived[3:] == ["12025550103"] * 3

        await peer.reject_next("ESME_RTHROTTLED")
        first, second = await asyncio.gather(
            *driver.submit_many([_sms("a"), _sms("b")]), return_exceptions=True
        )
        assert isinstance(first, DriverNotReady) and first.throttled
        assert first.retry_after == pytest.approx(0.5)
        assert not isinstance(second, BaseException)  # already written: the carrier took it
        with pytest.raises(DriverNotReady):  # the link is paused now: nothing is sent
            await driver.submit_many([_sms("c")])[0]
    finally:
        await driver.aclose()
