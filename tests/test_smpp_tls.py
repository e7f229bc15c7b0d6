"""An SMPP link over TLS: the driver verifies the SMSC's certificate."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from drivers.base import OutboundSms, RouteState
from drivers.clock import SystemClock
from drivers.smpp.driver import SmppDriver, SmppOptions
from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from tests.sinks import RecordingSink
from tests.tlsfiles import self_signed


@pytest.fixture
async def tls_smsc(tmp_path: Path) -> tuple[SmscSimulator, Path]:
    cert, key = self_signed(tmp_path, "smsc", "smsc.test")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    sim = SmscSimulator(SimulatorConfig(password="pw", receipt_delay=0.0, tls=context))
    await sim.start()
    yield sim, cert
    await sim.aclose()


async def test_submits_and_receipts_over_tls(tls_smsc: tuple[SmscSimulator, Path]) -> None:
    sim, cert = tls_smsc
    sink = RecordingSink()
    opts = SmppOptions(
        host="127.0.0.1",
        port=sim.port,
        system_id="smsgw",
        password="pw",
        tls=True,
        tls_ca_file=str(cert),
    )
    driver = SmppDriver("tls", opts, sink, SystemClock())
    await driver.start()
    try:
        await sink.until(lambda: driver.health().state is RouteState.UP)
        sms = OutboundSms(message_id="m", to="+12025550147", parts=("over TLS",), encoding="gsm7")
        result = await driver.submit(sms)
        await sink.until(lambda: len(sink.receipts) == 1)
        assert sink.receipts[0].carrier_id == result.carrier_ids[0]
        assert sim.submitted[0].text == "over TLS"
    finally:
        await driver.aclose()


async def test_an_untrusted_certificate_keeps_the_route_down(
    tls_smsc: tuple[SmscSimulator, Path], tmp_path: Path
) -> None:
    sim, _ = tls_smsc
    other, _ = self_signed(tmp_path, "other", "other.test")  # a CA the SMSC's is not
    sink = RecordingSink()
    opts = SmppOptions(
        host="127.0.0.1",
        port=sim.port,
        system_id="smsgw",
        password="pw",
        tls=True,
        tls_ca_file=str(other),
        reconnect_min=0.05,
        reconnect_max=0.1,
    )
    driver = SmppDriver("tls", opts, sink, SystemClock())
    await driver.start()
    try:
        await sink.until(lambda: "SSLCertVerificationError" in driver.health().detail)
        assert not driver.health().can_send
        assert sim.binds == 0
    finally:
        await driver.aclose()
