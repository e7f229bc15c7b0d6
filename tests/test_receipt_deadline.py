"""A `sent` message whose receipt never comes is reported after `[queue]
receipt_deadline`, not failed (issue 10, point 14): on a fake clock, through the
scheduler's own timer, the store and the HTTP API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from drivers.clock import FakeClock
from gateway.app import Gateway
from gateway.config import ConfigError
from tests.conftest import GatewayFactory, accept, make_config, settle_receipts, state_of
from tests.store_rows import message_row
from tests.test_api import _api

HOUR = 3600.0


def late_receipts(**extra: Any) -> list[dict[str, Any]]:
    """A loopback route whose receipts come two hours after the submit."""
    return [{"name": "main", "type": "loopback", "latency": 0, "receipt_delay": 2 * HOUR, **extra}]


def overdue_count(gw: Gateway, route: str = "main") -> float:
    value = gw.metrics.registry.get_sample_value("smsgw_receipts_overdue_total", {"route": route})
    return value or 0.0


async def overdue_flag(gw: Gateway, message_id: str) -> int:
    row = await message_row(gw.store, message_id)
    assert row is not None
    return int(row["receipt_overdue"])


async def test_sent_without_receipt_is_reported_overdue_and_a_late_receipt_completes_it(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(late_receipts(), queue={"receipt_deadline": HOUR})
    mid = await accept(gw)
    await gw.scheduler.run_until_idle()
    assert await state_of(gw, mid) == "sent"
    # The scheduler's timer: its next wake-up is the moment the receipt falls due.
    assert await gw.scheduler._round() == pytest.approx(HOUR)

    clock.advance(HOUR - 1)
    await gw.scheduler.run_until_idle()
    assert await overdue_flag(gw, mid) == 0
    clock.advance(1)
    await gw.scheduler.run_until_idle()
    assert (await state_of(gw, mid), await overdue_flag(gw, mid)) == ("sent", 1)
    assert overdue_count(gw) == 1
    events = [(e.state, e.error_code) for e in await gw.store.events(mid)]
    assert events[-1] == ("receipt_overdue", "gateway:receipt_overdue")
    clock.advance(HOUR)  # reported once, not on every sweep
    await gw.scheduler.run_until_idle()
    assert overdue_count(gw) == 1

    await settle_receipts(gw)  # the receipt, late
    assert await state_of(gw, mid) == "delivered"
    assert await overdue_flag(gw, mid) == 1  # the history keeps that it was late


async def test_overdue_is_in_the_message_record_and_filterable(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(late_receipts(), queue={"receipt_deadline": HOUR})
    late = await accept(gw)
    await gw.scheduler.run_until_idle()
    clock.advance(HOUR)
    fresh = await accept(gw)
    await gw.scheduler.run_until_idle()
    # Accepted here without a token: only an admin token sees such messages.
    async for api in _api(gw, frozenset({"read", "admin"})):
        view = await (await api.get(f"/api/v1/messages/{late}")).json()
        assert (view["status"], view["receipt_overdue"]) == ("sent", True)
        page = await (await api.get("/api/v1/messages?receipt_overdue=true")).json()
        assert [m["id"] for m in page["messages"]] == [late]
        page = await (await api.get("/api/v1/messages?receipt_overdue=false")).json()
        assert [m["id"] for m in page["messages"]] == [fresh]
        refused = await api.get("/api/v1/messages?receipt_overdue=CANARY")
        assert refused.status == 400
        body = await refused.json()
        assert body["error"]["code"] == "invalid_query"
        assert body["error"]["field"] == "receipt_overdue"
        assert "CANARY" not in await refused.text()


async def test_no_deadline_and_classes_without_receipts_are_never_reported(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(
        late_receipts(receipt_delay=30 * 24 * HOUR),
        queue={
            "receipt_deadline": HOUR,
            "classes": {"bulk": {"expires_after": HOUR, "max_attempts": 3, "want_receipt": False}},
        },
    )
    bulk = await accept(gw, priority="bulk")
    normal = await accept(gw)
    await gw.scheduler.run_until_idle()
    clock.advance(2 * HOUR)
    await gw.scheduler.run_until_idle()
    assert await overdue_flag(gw, normal) == 1
    assert await overdue_flag(gw, bulk) == 2  # set aside: no receipt was asked for
    assert overdue_count(gw) == 1
    assert "receipt_overdue" not in [e.state for e in await gw.store.events(bulk)]


async def test_a_deadline_of_zero_reports_nothing(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(
        late_receipts(receipt_delay=30 * 24 * HOUR), queue={"receipt_deadline": 0}
    )
    mid = await accept(gw)
    await gw.scheduler.run_until_idle()
    clock.advance(10 * 24 * HOUR)
    await gw.scheduler.run_until_idle()
    assert (await state_of(gw, mid), await overdue_flag(gw, mid)) == ("sent", 0)


async def test_a_full_batch_is_swept_again_at_once(
    open_gateway: GatewayFactory, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway import scheduler

    monkeypatch.setattr(scheduler, "RECEIPT_BATCH", 2)
    gw = await open_gateway(late_receipts(), queue={"receipt_deadline": HOUR})
    ids = [await accept(gw, body=f"m{i}") for i in range(5)]
    await gw.scheduler.run_until_idle()
    clock.advance(HOUR)
    assert await gw.scheduler._round() == 0  # more were due than one batch holds
    await gw.scheduler._round()
    await gw.scheduler._round()
    assert [await overdue_flag(gw, m) for m in ids] == [1] * 5
    assert overdue_count(gw) == 5


def test_a_negative_deadline_is_refused_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"queue\.receipt_deadline"):
        make_config(tmp_path, queue={"receipt_deadline": -1})
