"""The SMSC simulator, seen by smpplib (a client neither it nor we wrote) and by our own
ESME `Session` over real TCP.

smpplib blocks on its socket, so its calls run in worker threads, every read bounded by
the socket timeout and every wait by a deadline. The in-process ESME runs its session
timers on the event loop with small real timeouts; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import pytest
import smpplib.client
import smpplib.consts
import smpplib.exceptions
import smpplib.gsm
from structlog.testing import capture_logs

from drivers.clock import FakeClock
from drivers.smpp.pdu import Command, Tag, Value
from drivers.smpp.session import (
    Bound,
    Event,
    LinkDead,
    PeerProtocolError,
    ProtocolViolation,
    Response,
    Role,
    Session,
    SessionConfig,
    Unbound,
)
from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from drivers.smpp.status import Status
from tests.peers.smpplib_esme import RECIPIENT, SENDER, SmpplibEsme

SYSTEM_ID = "smsgw-test"
PASSWORD = "sim-pw"
SOCKET_TIMEOUT = 2.0
WAIT = 5.0

RECEIPT = re.compile(
    r"id:(?P<id>\w+) sub:001 dlvrd:(?P<dlvrd>\d{3}) submit date:\d{10} done date:\d{10} "
    r"stat:(?P<stat>[A-Z]+) err:(?P<err>\d{3}) text:"
)

E = TypeVar("E", bound=Event)


def simulator(clock: FakeClock | None = None, **options: Any) -> SmscSimulator:
    options = {"receipt_delay": 0.0, "redelivery_delay": 0.0, "shutdown_grace": 1.0, **options}
    config = SimulatorConfig(system_id=SYSTEM_ID, password=PASSWORD, **options)
    return SmscSimulator(config, clock or FakeClock())


async def until(sim: SmscSimulator, predicate: Callable[[], bool]) -> None:
    await asyncio.wait_for(sim.wait_until(predicate), WAIT)


def Esme(port: int) -> SmpplibEsme:
    return SmpplibEsme(
        port, system_id=SYSTEM_ID, password=PASSWORD, socket_timeout=SOCKET_TIMEOUT, wait=WAIT
    )


@pytest.fixture
async def sim() -> AsyncIterator[SmscSimulator]:
    async with simulator() as running:
        yield running


@pytest.fixture
async def esme(sim: SmscSimulator) -> AsyncIterator[SmpplibEsme]:
    client = await asyncio.to_thread(Esme, sim.port)
    yield client
    await asyncio.to_thread(client.close)


# -- smpplib ---------------------------------------------------------------------------


async def test_bind_checks_system_id_and_password(sim: SmscSimulator, esme: SmpplibEsme) -> None:
    with pytest.raises(smpplib.exceptions.PDUError) as refused:
        await asyncio.to_thread(esme.bind, "transceiver", "wrong-pw")
    assert refused.value.args[1] == smpplib.consts.SMPP_ESME_RINVPASWD
    with pytest.raises(smpplib.exceptions.PDUError) as refused:
        await asyncio.to_thread(esme.bind, "transceiver", PASSWORD, system_id="someone")
    assert refused.value.args[1] == smpplib.consts.SMPP_ESME_RINVSYSID
    assert sim.binds == 0

    await asyncio.to_thread(esme.bind)  # the same connection, back in OPEN
    assert esme.client.state == smpplib.consts.SMPP_CLIENT_STATE_BOUND_TRX
    assert (sim.binds, sim.connections, sim.open_connections) == (1, 1, 1)

    await asyncio.to_thread(esme.close)  # unbind, answered
    await until(sim, lambda: sim.open_connections == 0)


async def test_submits_are_recorded_as_sent(sim: SmscSimulator, esme: SmpplibEsme) -> None:
    await asyncio.to_thread(esme.bind)
    await asyncio.to_thread(esme.submit, "Ward 7B @ £5")  # GSM 03.38: @ is 0x00, £ is 0x01
    await asyncio.to_thread(esme.submit, "Привет ☃")  # not GSM: UCS-2
    await asyncio.to_thread(esme.submit, "long " * 40)  # 200 GSM chars: 2 parts with a UDH
    await asyncio.to_thread(esme.read_until, lambda: len(esme.message_ids) == 4)

    assert [m.message_id for m in sim.submitted] == esme.message_ids
    assert len(set(esme.message_ids)) == 4 and all(i.isdigit() for i in esme.message_ids)
    assert sim.submits == 4 and sim.receipts_sent == 0
    gsm, ucs2, *parts = sim.submitted
    assert (gsm.command, gsm.system_id) == (Command.SUBMIT_SM, SYSTEM_ID)
    assert (gsm.source, gsm.destination) == (SENDER, RECIPIENT)
    assert (gsm.data_coding, gsm.esm_class, gsm.registered_delivery) == (0, 0, 0)
    assert gsm.short_message == b"Ward 7B \x00 \x015" and gsm.text == "Ward 7B @ £5"
    assert gsm.concat is None and gsm.tlvs == {}
    assert (ucs2.data_coding, ucs2.esm_class) == (8, 0)
    assert ucs2.short_message == "Привет ☃".encode("utf-16-be") and ucs2.text == "Привет ☃"

    assert [(p.data_coding, p.esm_class) for p in parts] == [(0, 0x40)] * 2
    assert [p.short_message[:3] for p in parts] == [b"\x05\x00\x03"] * 2  # 8-bit reference
    first, second = (p.concat for p in parts)
    assert first is not None and second is not None
    assert (first.total, first.seq, second.total, second.seq) == (2, 1, 2, 2)
    assert first.reference == second.reference
    assert "".join(p.text for p in parts) == "long " * 40  # parts kept apart, not joined
    assert "addr" not in repr(gsm) and "Ward" not in repr(gsm) and RECIPIENT not in repr(gsm)


async def test_receipt_follows_a_registered_submit(sim: SmscSimulator, esme: SmpplibEsme) -> None:
    await asyncio.to_thread(esme.bind)
    await asyncio.to_thread(esme.submit, "no receipt please")
    await asyncio.to_thread(esme.submit, "receipt please", registered_delivery=1)
    await asyncio.to_thread(
        esme.read_until, lambda: len(esme.message_ids) == 2 and bool(esme.delivered)
    )
    await until(sim, lambda: sim.receipts_sent == 1)

    (receipt,) = esme.delivered
    second_id = esme.message_ids[1]
    assert receipt.esm_class == 0x04  # message type: SMSC delivery receipt
    assert receipt.receipted_message_id.decode() == second_id
    assert receipt.message_state == smpplib.consts.SMPP_MESSAGE_STATE_DELIVERED
    match = RECEIPT.fullmatch(receipt.short_message.decode("ascii"))
    assert match is not None, receipt.short_message
    assert (match["id"], match["dlvrd"], match["stat"], match["err"]) == (
        second_id,
        "001",
        "DELIVRD",
        "000",
    )
    # Back from the recipient to the sender; the body is not echoed.
    assert (receipt.source_addr.decode(), receipt.destination_addr.decode()) == (
        RECIPIENT,
        SENDER,
    )
    assert b"please" not in receipt.short_message
    assert sim.redelivered == 0


async def test_receipt_waits_for_the_clock_and_a_receiver_with_hex_ids() -> None:
    clock = FakeClock()
    options = {"receipt_delay": 30.0, "hex_ids": True, "receipt_ids_decimal": True}
    async with simulator(clock, undeliverable=1.0, **options) as sim:
        tx = await asyncio.to_thread(Esme, sim.port)
        rx = await asyncio.to_thread(Esme, sim.port)
        try:
            await asyncio.to_thread(tx.bind, "transmitter")
            await asyncio.to_thread(tx.submit, "kept for later", registered_delivery=1)
            await asyncio.to_thread(tx.read_until, lambda: bool(tx.message_ids))
            (hex_id,) = tx.message_ids
            assert hex_id == f"{int(hex_id, 16):x}" and not hex_id.isdigit()

            await asyncio.wait_for(clock.wait_sleeping(1), WAIT)  # it waits on the clock
            clock.advance(30.0)
            await until(sim, lambda: clock.sleeping == 0)
            assert sim.receipts_sent == 0  # no receiver bound yet: it waits in the outbox

            await asyncio.to_thread(rx.bind, "receiver")
            await asyncio.to_thread(rx.read_until, lambda: bool(rx.delivered))
            await until(sim, lambda: sim.receipts_sent == 1)
        finally:
            await asyncio.to_thread(tx.close)
            await asyncio.to_thread(rx.close)

    (receipt,) = rx.delivered
    assert receipt.receipted_message_id.decode() == hex_id  # the id as answered
    assert receipt.message_state == smpplib.consts.SMPP_MESSAGE_STATE_UNDELIVERABLE
    match = RECEIPT.fullmatch(receipt.short_message.decode("ascii"))
    assert match is not None
    assert int(match["id"]) == int(hex_id, 16)  # the text spells it in decimal
    assert (match["stat"], match["dlvrd"], match["err"]) == ("UNDELIV", "000", "001")


async def test_refused_and_lost_receipts_are_delivered_again(
    sim: SmscSimulator, esme: SmpplibEsme
) -> None:
    esme.answers = [Status.ESME_RSYSERR]  # the first deliver_sm is refused
    await asyncio.to_thread(esme.bind)
    await asyncio.to_thread(esme.submit, "one", registered_delivery=1)
    await asyncio.to_thread(esme.read_until, lambda: len(esme.delivered) == 2)
    await until(sim, lambda: sim.receipts_sent == 1)
    assert sim.redelivered == 1
    first, again = esme.delivered
    assert first.short_message == again.short_message

    # The next receipt is written right behind its submit_sm_resp; the link drops before
    # smpplib reads it, so it is in doubt and goes to the next receiver that binds.
    await asyncio.to_thread(esme.submit, "two", registered_delivery=1)
    await asyncio.to_thread(esme.read_until, lambda: len(esme.message_ids) == 2)
    sim.drop_connections()
    with pytest.raises(smpplib.exceptions.ConnectionError):
        await asyncio.to_thread(esme.read_until, lambda: False)
    await until(sim, lambda: sim.open_connections == 0)

    rx = await asyncio.to_thread(Esme, sim.port)
    try:
        await asyncio.to_thread(rx.bind, "receiver")
        await asyncio.to_thread(rx.read_until, lambda: bool(rx.delivered))
        await until(sim, lambda: sim.receipts_sent == 2)
    finally:
        await asyncio.to_thread(rx.close)
    assert rx.delivered[0].receipted_message_id.decode() == esme.message_ids[1]
    assert sim.redelivered == 2


async def test_a_temporary_error_is_retried_after_the_delay_and_attempts_are_bounded() -> None:
    """As a real SMSC: a deliver_sm answered ESME_RX_T_APPN goes again after
    `redelivery_delay` (on the simulator's clock), at most `max_delivery_attempts`
    times; one answered ESME_RX_P_APPN (permanent) is given up at once."""
    clock = FakeClock()
    async with simulator(clock, redelivery_delay=5.0, max_delivery_attempts=3) as sim:
        esme = await asyncio.to_thread(Esme, sim.port)
        try:
            esme.answers = [Status.ESME_RX_T_APPN] * 3 + [Status.ESME_RX_P_APPN]
            await asyncio.to_thread(esme.bind, "receiver")
            sim.inject_mo("+12025550147", "4000", "C")
            for attempt in (1, 2, 3):
                await asyncio.to_thread(esme.read_until, lambda n=attempt: len(esme.delivered) == n)
                await until(sim, lambda n=attempt: sim.delivery_errors == n)  # type: ignore[misc]
                if attempt < 3:
                    await clock.wait_sleeping(1)
                    assert clock.next_deadline == 5.0 and sim.deliveries == attempt
                    clock.advance(5.0)
            await until(sim, lambda: sim.abandoned == 1)
            assert (sim.deliveries, sim.redelivered, sim.mo_sent, clock.sleeping) == (3, 2, 0, 0)

            sim.inject_mo("+12025550147", "4000", "R")  # refused for good: never again
            await asyncio.to_thread(esme.read_until, lambda: len(esme.delivered) == 4)
            await until(sim, lambda: sim.abandoned == 2)
            assert (sim.deliveries, sim.delivery_errors, clock.sleeping) == (4, 4, 0)
        finally:
            await asyncio.to_thread(esme.close)


async def test_injected_mo_reaches_a_receiver(sim: SmscSimulator, esme: SmpplibEsme) -> None:
    await asyncio.to_thread(esme.bind, "receiver")
    sim.inject_mo("+12025550147", "4000", "Yes @ 5£")
    sim.inject_mo("+12025550147", "4000", "Да, приду ☃")
    sim.inject_mo("+12025550147", "4000", "two " * 50, parts=2)
    await asyncio.to_thread(esme.read_until, lambda: len(esme.delivered) == 4)
    await until(sim, lambda: sim.mo_sent == 4)

    gsm, ucs2, *parts = esme.delivered
    assert (gsm.data_coding, gsm.esm_class, gsm.short_message) == (0, 0, b"Yes \x00 5\x01")
    assert (gsm.source_addr.decode(), gsm.source_addr_ton) == ("12025550147", 1)
    assert (gsm.destination_addr.decode(), gsm.dest_addr_ton) == ("4000", 0)
    assert (ucs2.data_coding, ucs2.esm_class) == (8, 0)
    assert ucs2.short_message.decode("utf-16-be") == "Да, приду ☃"
    udhs = [p.short_message[:6] for p in parts]
    assert [(p.data_coding, p.esm_class) for p in parts] == [(0, 0x40)] * 2
    assert [u[:3] for u in udhs] == [b"\x05\x00\x03"] * 2 and udhs[0][3] == udhs[1][3]
    assert [u[4:] for u in udhs] == [b"\x02\x01", b"\x02\x02"]
    assert b"".join(p.short_message[6:] for p in parts) == b"two " * 50


def test_inject_mo_refuses_what_does_not_fit() -> None:
    sim = simulator()
    with pytest.raises(ValueError, match="does not fit"):
        sim.inject_mo(SENDER, "4000", "x" * 161)
    with pytest.raises(ValueError, match="parts"):
        sim.inject_mo(SENDER, "4000", "ab", parts=3)
    with pytest.raises(ValueError, match="data_coding"):
        sim.inject_mo(SENDER, "4000", "ab", data_coding=4)
    with pytest.raises(ValueError, match="fractions"):
        SimulatorConfig(undeliverable=0.7, expired=0.5)


async def test_throttle_and_reject_answer_the_next_submits(
    sim: SmscSimulator, esme: SmpplibEsme
) -> None:
    await asyncio.to_thread(esme.bind)
    sim.throttle(1)
    sim.reject_next(Status.ESME_RINVDSTADR)
    for expected in (Status.ESME_RTHROTTLED, Status.ESME_RINVDSTADR):
        await asyncio.to_thread(esme.submit, "refused")
        with pytest.raises(smpplib.exceptions.PDUError) as refused:
            await asyncio.to_thread(esme.read_until, lambda: bool(esme.message_ids))
        assert refused.value.args[1] == expected
    await asyncio.to_thread(esme.submit, "accepted")
    await asyncio.to_thread(esme.read_until, lambda: bool(esme.message_ids))
    assert (sim.submits, sim.throttled) == (3, 1)
    assert [m.text for m in sim.submitted] == ["accepted"]


async def test_drop_connections_closes_the_socket(sim: SmscSimulator, esme: SmpplibEsme) -> None:
    await asyncio.to_thread(esme.bind)
    sim.drop_connections()
    with pytest.raises(smpplib.exceptions.ConnectionError):
        await asyncio.to_thread(esme.read_until, lambda: False)
    await until(sim, lambda: sim.open_connections == 0)


async def test_logs_hold_no_numbers_texts_or_passwords() -> None:
    with capture_logs() as logs:
        async with simulator() as sim:
            esme = await asyncio.to_thread(Esme, sim.port)
            try:
                with pytest.raises(smpplib.exceptions.PDUError):
                    await asyncio.to_thread(esme.bind, "transceiver", "wrong-pw")
                await asyncio.to_thread(esme.bind)
                await asyncio.to_thread(esme.submit, "CANARY potassium", registered_delivery=1)
                sim.inject_mo("+12025550199", "4000", "CANARY reply")
                await asyncio.to_thread(esme.read_until, lambda: len(esme.delivered) == 2)
            finally:
                await asyncio.to_thread(esme.close)
    text = repr(logs)
    assert {"simulator_bound", "simulator_bind_refused", "simulator_stopped"} <= {
        entry["event"] for entry in logs
    }
    for secret in ("CANARY", "2025550", "4000", "wrong-pw", PASSWORD):
        assert secret not in text


# -- our own ESME session over TCP -------------------------------------------------------


class OurEsme(asyncio.Protocol):
    """A `Session(Role.ESME)` on a real connection, its timers run by the loop."""

    def __init__(self, config: SessionConfig) -> None:
        self.loop = asyncio.get_running_loop()
        self.session = Session(Role.ESME, config, now=self.loop.time())
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.received = asyncio.Event()
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.sync()

    def data_received(self, data: bytes) -> None:
        self.received.set()
        self.feed(self.session.receive_data(data, self.loop.time()))

    def connection_lost(self, exc: Exception | None) -> None:
        self.feed(self.session.receive_data(b"", self.loop.time()))

    def feed(self, events: list[Event]) -> None:
        for event in events:
            self.events.put_nowait(event)
        self.sync()

    def sync(self) -> None:
        assert self.transport is not None
        if data := self.session.data_to_send():
            self.transport.write(data)
        if self.session.closed:
            self.transport.close()
        if self._timer is not None:
            self._timer.cancel()
        deadline = self.session.next_deadline()
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._fire, deadline)

    def _fire(self, deadline: float) -> None:
        self.feed(self.session.on_timer(max(self.loop.time(), deadline)))

    async def expect(self, kind: type[E]) -> E:
        """The next event of `kind`, skipping others."""
        while True:
            event = await asyncio.wait_for(self.events.get(), WAIT)
            if isinstance(event, kind):
                return event

    async def bind(self) -> Bound:
        self.session.bind("transceiver", SYSTEM_ID, PASSWORD, now=self.loop.time())
        self.sync()
        return await self.expect(Bound)


async def connect(sim: SmscSimulator, config: SessionConfig | None = None) -> OurEsme:
    loop = asyncio.get_running_loop()
    _, esme = await loop.create_connection(
        lambda: OurEsme(config or SessionConfig()), "127.0.0.1", sim.port
    )
    return esme


async def test_stop_answering_leaves_a_half_open_link(sim: SmscSimulator) -> None:
    config = SessionConfig(enquire_link_interval=0.1, response_timeout=0.2)
    esme = await connect(sim, config)
    await esme.bind()
    esme.received.clear()
    await asyncio.wait_for(esme.received.wait(), WAIT)  # an enquire_link_resp came back

    sim.stop_answering()
    stopped = esme.loop.time()
    params: dict[str, Value] = {"source_addr": SENDER, "destination_addr": RECIPIENT}
    esme.session.send_request(Command.SUBMIT_SM, params, now=stopped)
    esme.sync()
    dead = await esme.expect(LinkDead)  # after the submit's ResponseTimeout
    assert dead.reason == "enquire_link"
    assert esme.loop.time() - stopped < 2.0  # interval + response timeout, and some slack
    assert (sim.submits, sim.open_connections) == (0, 1)  # nothing read, not even the close

    sim.resume_answering()  # reads the submit, the probes and the end of the stream
    await until(sim, lambda: sim.open_connections == 0)
    assert sim.submits == 1
    again = await connect(sim)
    assert (await again.bind()).system_id == "smsgw-sim"


async def test_data_sm_is_recorded_from_its_payload(sim: SmscSimulator) -> None:
    esme = await connect(sim)
    await esme.bind()
    params: dict[str, Value] = {"source_addr": SENDER, "destination_addr": RECIPIENT}
    tlvs: dict[int, Value] = {Tag.MESSAGE_PAYLOAD: b"in the payload"}
    esme.session.send_request(Command.DATA_SM, params, tlvs, now=esme.loop.time())
    esme.sync()
    response = await esme.expect(Response)
    assert (response.pdu.command, response.pdu.status) == (Command.DATA_SM_RESP, 0)

    (record,) = sim.submitted
    assert record.command is Command.DATA_SM
    assert record.message_id == response.pdu.params["message_id"]
    assert (record.short_message, record.text) == (b"", "in the payload")
    assert record.tlvs == {Tag.MESSAGE_PAYLOAD: b"in the payload"}


async def test_garbage_is_refused_then_breaks_the_stream(sim: SmscSimulator) -> None:
    esme = await connect(sim)
    await esme.bind()
    sim.send_garbage()
    refused = await esme.expect(PeerProtocolError)
    assert refused.status == Status.ESME_RINVCMDID  # answered with generic_nack
    violation = await esme.expect(ProtocolViolation)
    assert violation.status == Status.ESME_RINVCMDLEN
    await until(sim, lambda: sim.open_connections == 0)  # the generic_nack broke nothing


async def test_aclose_unbinds_bound_clients() -> None:
    sim = simulator(shutdown_grace=WAIT)
    await sim.start()
    esme = await connect(sim)
    await esme.bind()
    started = esme.loop.time()
    closing = asyncio.create_task(sim.aclose())
    unbound = await esme.expect(Unbound)
    assert unbound.by_peer
    await asyncio.wait_for(closing, WAIT)
    assert esme.loop.time() - started < 1.0  # answered, not waited out
    assert sim.open_connections == 0
    with pytest.raises(ConnectionRefusedError):
        await esme.loop.create_connection(asyncio.Protocol, "127.0.0.1", sim.port)


async def test_a_session_cap_refuses_binds_beyond_it_and_lost_sessions_linger() -> None:
    async with simulator(max_sessions=1, lost_session_hold=3600.0) as sim:
        first = await asyncio.to_thread(Esme, sim.port)
        await asyncio.to_thread(first.bind, system_type="gw1")
        second = await asyncio.to_thread(Esme, sim.port)
        try:
            with pytest.raises(smpplib.exceptions.PDUError) as refused:
                await asyncio.to_thread(second.bind)
            assert refused.value.args[1] == smpplib.consts.SMPP_ESME_RALYBND
            assert sim.already_bound == 1
            await asyncio.to_thread(first.submit, "counted")
            await asyncio.to_thread(first.read_until, lambda: bool(first.message_ids))
            (record,) = sim.submit_log
            assert (record.status, record.system_type) == (Status.ESME_ROK, "gw1")
            assert record.connection == 1
            # Lost without an unbind: the carrier holds that session for a while.
            await asyncio.to_thread(first.client.disconnect)
            await until(sim, lambda: sim.open_connections == 1)
            with pytest.raises(smpplib.exceptions.PDUError) as refused:
                await asyncio.to_thread(second.bind)
            assert refused.value.args[1] == smpplib.consts.SMPP_ESME_RALYBND
        finally:
            await asyncio.to_thread(second.close)
    async with simulator(max_sessions=1) as sim:  # unbound cleanly: free at once
        first = await asyncio.to_thread(Esme, sim.port)
        await asyncio.to_thread(first.bind)
        await asyncio.to_thread(first.close)
        await until(sim, lambda: sim.open_connections == 0)
        second = await asyncio.to_thread(Esme, sim.port)
        await asyncio.to_thread(second.bind)
        await asyncio.to_thread(second.close)
        assert (sim.binds, sim.already_bound) == (2, 0)
