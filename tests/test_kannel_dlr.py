"""Kannel dlr-url callbacks: the consumer the outbox delivers status events to, fed
`OutboxEvent`s directly; a real local HTTP receiver; the URL stored encrypted."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from drivers.clock import FakeClock
from gateway.app import Gateway
from gateway.config import from_mapping
from gateway.integrations.events import MESSAGE_STATUS, DeliveryFailed, OutboxEvent
from gateway.integrations.kannel_dlr import (
    CONSUMER_NAME,
    GuardedResolver,
    KannelDlrConsumer,
    build_consumer,
    fill_escapes,
    forbidden_address,
    report_type,
)
from tests.conftest import (
    CANARY_DIGITS,
    CANARY_NUMBER,
    LOOPBACK_TEST,
    GatewayFactory,
    settle_receipts,
    state_of,
)
from tests.test_kannel import messages, open_listener, q

SECRET_QUERY = "mrn-CANARY-4711"  # stands for PHI a client puts in its dlr-url


@dataclass
class Receiver:
    server: TestServer
    calls: list[dict[str, str]] = field(default_factory=list)
    status: int = 200

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    app = web.Application()
    box: list[Receiver] = []

    async def dlr(request: web.Request) -> web.Response:
        r = box[0]
        r.calls.append(dict(request.rel_url.query))
        if r.status in (301, 302, 307):
            return web.Response(status=r.status, headers={"Location": "/elsewhere"})
        return web.Response(status=r.status, text="ok")

    async def elsewhere(request: web.Request) -> web.Response:
        box[0].calls.append({"redirected": "yes"})
        return web.Response(text="ok")

    app.router.add_get("/dlr", dlr)
    app.router.add_get("/elsewhere", elsewhere)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    box.append(Receiver(server))
    yield box[0]
    await server.close()


PATTERN = (
    "/dlr?type=%d&answer=%A&id=%I&smsc=%i&to=%P&from=%p&user=%n&t=%T&fid=%F"
    f"&pct=%%&keep=%Z&ref={SECRET_QUERY}"
)


async def accepted_with_dlr(
    open_gateway: GatewayFactory, tmp_path: Path, origin: str, mask: str = "25"
) -> tuple[Gateway, str]:
    gw, server = await open_listener(open_gateway, tmp_path, origins=[origin], sender="HOSPITAL")
    query = q(to=CANARY_NUMBER, text="hi", dlr_mask=mask, dlr_url=origin + PATTERN)
    query += "&from=HOSPITAL"
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{server.port}/cgi-bin/sendsms?{query}") as r,
    ):
        assert (r.status, await r.text()) == (202, "0: Accepted for delivery")
    await server.close()
    (row,) = await messages(gw)
    return gw, str(row["id"])


def status_event(message_id: str, state: str, seq: int = 1, **data: str) -> OutboxEvent:
    return OutboxEvent(
        id=f"evt-{seq}",
        seq=seq,
        type=MESSAGE_STATUS,
        at=1_800_000_000.0,
        message_id=message_id,
        route="main",
        data={"state": state, **data},
    )


async def test_dlr_url_called_with_kannels_escapes_for_the_states_the_mask_asks(
    open_gateway: GatewayFactory, tmp_path: Path, receiver: Receiver
) -> None:
    gw, mid = await accepted_with_dlr(open_gateway, tmp_path, receiver.origin)
    consumer = KannelDlrConsumer(gw.dlr_wishes, frozenset({receiver.origin}))
    assert consumer.accepts(MESSAGE_STATUS) and not consumer.accepts("message.inbound")
    with capture_logs() as logs:
        await consumer.deliver(status_event(mid, "sent", 1, carrier_id="C-77"))
        await consumer.deliver(status_event(mid, "queued", 2))  # 4 is not in the mask
        await consumer.deliver(status_event(mid, "delivered", 3))
        await consumer.deliver(status_event(mid, "failed", 4, error_code="smpp:0x45"))
    await consumer.aclose()
    sent, delivered, failed = receiver.calls
    assert sent == {
        "type": "8",
        "answer": "ACK/",
        "id": mid,
        "smsc": "main",
        "to": CANARY_NUMBER,
        "from": "HOSPITAL",
        "user": "kannel-user",
        "t": "1800000000",
        "fid": "C-77",
        "pct": "%",
        "keep": "%Z",
        "ref": SECRET_QUERY,
    }
    assert (delivered["type"], delivered["answer"]) == ("1", "DELIVRD")
    assert (failed["type"], failed["answer"]) == ("16", "NACK/smpp:0x45")  # 2 not asked
    assert CANARY_DIGITS not in repr(logs) and SECRET_QUERY not in repr(logs)


async def test_dlr_url_is_stored_encrypted(
    open_gateway: GatewayFactory, tmp_path: Path, receiver: Receiver
) -> None:
    gw, _ = await accepted_with_dlr(open_gateway, tmp_path, receiver.origin)
    await gw.stop()
    stored = store_bytes(tmp_path)
    assert stored, "the store's files"
    assert SECRET_QUERY.encode() not in stored and CANARY_DIGITS.encode() not in stored


def store_bytes(data_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in data_dir.glob("*.db*"))


@pytest.mark.parametrize(("status", "reason"), [(500, "http_500"), (302, "redirect")])
async def test_failing_or_redirecting_receiver_is_retried_later_not_followed(
    open_gateway: GatewayFactory,
    tmp_path: Path,
    receiver: Receiver,
    status: int,
    reason: str,
) -> None:
    gw, mid = await accepted_with_dlr(open_gateway, tmp_path, receiver.origin)
    consumer = KannelDlrConsumer(gw.dlr_wishes, frozenset({receiver.origin}))
    receiver.status = status
    with pytest.raises(DeliveryFailed) as failed:
        await consumer.deliver(status_event(mid, "delivered"))
    await consumer.aclose()
    assert failed.value.reason == reason
    assert len(receiver.calls) == 1 and "redirected" not in receiver.calls[0]


async def test_origin_no_longer_allowed_or_message_without_dlr_is_not_called(
    open_gateway: GatewayFactory, tmp_path: Path, receiver: Receiver
) -> None:
    gw, mid = await accepted_with_dlr(open_gateway, tmp_path, receiver.origin)
    await KannelDlrConsumer(gw.dlr_wishes, frozenset()).deliver(status_event(mid, "delivered"))
    consumer = KannelDlrConsumer(gw.dlr_wishes, frozenset({receiver.origin}))
    await consumer.deliver(status_event("06H1X8ZQ0000000000000000AA", "delivered"))
    await consumer.aclose()
    assert receiver.calls == []


async def test_metadata_address_is_never_called(
    open_gateway: GatewayFactory, tmp_path: Path
) -> None:
    origin = "http://169.254.169.254"
    gw, mid = await accepted_with_dlr(open_gateway, tmp_path, origin)
    consumer = KannelDlrConsumer(gw.dlr_wishes, frozenset({origin}))
    with pytest.raises(DeliveryFailed) as failed:
        await consumer.deliver(status_event(mid, "delivered"))
    assert failed.value.reason == "forbidden_address"


@pytest.mark.parametrize(
    ("address", "forbidden"),
    [
        ("169.254.169.254", True),
        ("fe80::1", True),
        ("fd00:ec2::254", True),
        ("100.100.100.200", True),
        ("0.0.0.0", True),  # noqa: S104 - an address under test, not a bind
        ("::ffff:169.254.169.254", True),
        ("224.0.0.1", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("2001:db8::1", False),
    ],
)
def test_forbidden_addresses(address: str, forbidden: bool) -> None:
    assert forbidden_address(address) is forbidden


@pytest.mark.parametrize(
    ("state", "mask", "kind"),
    [
        ("delivered", 1, 1),
        ("delivered", 30, None),
        ("failed", 2, 2),
        ("failed", 16, 16),
        ("expired", 18, 2),
        ("sent", 8, 8),
        ("queued", 4, 4),
        ("sending", 31, None),
    ],
)
def test_report_type(state: str, mask: int, kind: int | None) -> None:
    assert report_type(state, mask) == kind


def test_escape_percent_at_the_end_is_kept() -> None:
    assert fill_escapes("a%d%", {"d": "1"}) == "a1%"
    assert fill_escapes("%%41", {}) == "%41"


class _Answers(AbstractResolver):
    """A name server that answers with fixed addresses (as a rebinding one would)."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0)
            for a in self.addresses
        ]

    async def close(self) -> None:
        pass


async def test_guarded_resolver_refuses_a_name_that_resolves_to_a_forbidden_address() -> None:
    with pytest.raises(OSError, match="forbidden"):
        await GuardedResolver(_Answers("10.0.0.1", "169.254.169.254")).resolve("ehr.example")
    (ok,) = await GuardedResolver(_Answers("10.0.0.1")).resolve("ehr.example", 443)
    assert (ok["host"], ok["port"]) == ("10.0.0.1", 443)


async def test_a_named_origin_goes_through_the_resolver(
    open_gateway: GatewayFactory, tmp_path: Path, receiver: Receiver
) -> None:
    origin = receiver.origin.replace("127.0.0.1", "localhost")
    gw, mid = await accepted_with_dlr(open_gateway, tmp_path, origin)
    consumer = build_consumer(gw.dlr_wishes, gw.config.kannel)
    assert consumer is not None
    await consumer.deliver(status_event(mid, "delivered"))
    assert [c["type"] for c in receiver.calls] == ["1"]
    assert isinstance(consumer, KannelDlrConsumer)
    await consumer.aclose()


def test_no_consumer_when_the_listener_is_off() -> None:
    assert build_consumer(None, from_mapping({}).kannel) is None  # type: ignore[arg-type]


async def test_parallel_sends_each_commit_their_message_with_its_dlr_row(
    open_gateway: GatewayFactory, tmp_path: Path
) -> None:
    origin = "http://127.0.0.1:9"
    gw, server = await open_listener(open_gateway, tmp_path, origins=[origin])
    url = f"http://127.0.0.1:{server.port}/cgi-bin/sendsms"

    async def one(session: aiohttp.ClientSession, i: int) -> int:
        query = q(to=f"+1202555{i:04d}", text="hi", dlr_mask="1", dlr_url=f"{origin}/d?n={i}")
        async with session.get(f"{url}?{query}") as r:
            return r.status

    async with aiohttp.ClientSession() as session:
        statuses = await asyncio.gather(*(one(session, 100 + i) for i in range(20)))
    await server.close()
    assert statuses == [202] * 20
    cur = await gw.store.reader.execute(
        "SELECT COUNT(*) FROM messages m JOIN kannel_dlr k ON k.message_id = m.id"
    )
    assert (await cur.fetchone())[0] == 20
    wishes = [await gw.dlr_wishes.wish(m["id"]) for m in await messages(gw)]
    assert {w.url for w in wishes if w is not None} == {
        f"{origin}/d?n={100 + i}" for i in range(20)
    }


async def test_a_sendsms_dlr_url_is_called_through_the_gateways_outbox(
    open_gateway: GatewayFactory, tmp_path: Path, receiver: Receiver, clock: FakeClock
) -> None:
    """End to end: the dlr-url consumer is registered with the gateway's outbox, so a
    message sent through sendsms reports "SMSC success" and then "delivered" to its
    dlr-url as Kannel would."""
    gw, message_id = await accepted_with_dlr(open_gateway, tmp_path, receiver.origin, mask="9")
    await gw.scheduler.run_until_idle()
    clock.advance(LOOPBACK_TEST["receipt_delay"])
    await settle_receipts(gw)
    assert await state_of(gw, message_id) == "delivered"
    await gw.outbox.run_once(CONSUMER_NAME)
    assert [c["type"] for c in receiver.calls] == ["8", "1"]
    assert all(c["id"] == message_id and c["ref"] == SECRET_QUERY for c in receiver.calls)


async def test_percent_f_is_the_carriers_message_id_through_the_outbox(
    open_gateway: GatewayFactory, tmp_path: Path, receiver: Receiver, clock: FakeClock
) -> None:
    """`%F` is the id the carrier gave the message (Kannel's foreign id), looked up for
    each report, the way a Kannel client matches reports against its SMSC's logs."""
    gw, message_id = await accepted_with_dlr(open_gateway, tmp_path, receiver.origin, mask="9")
    await gw.scheduler.run_until_idle()
    clock.advance(LOOPBACK_TEST["receipt_delay"])
    await settle_receipts(gw)
    await gw.outbox.run_once(CONSUMER_NAME)
    row = await gw.store.reader.one(
        "SELECT carrier_id FROM carrier_ids WHERE message_id = ? ORDER BY part", (message_id,)
    )
    assert row is not None and row[0]
    assert [(c["type"], c["fid"]) for c in receiver.calls] == [("8", row[0]), ("1", row[0])]
