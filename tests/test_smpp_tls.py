"""An SMPP link over TLS: the driver verifies the SMSC's certificate."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from drivers.base import OutboundSms, RouteState
from drivers.clock import SystemClock
from drivers.smpp.driver import SmppDriver, SmppOptions
from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from tests.sinks import RecordingSink


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smsc.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "smsc.pem", tmp_path / "smsc.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
async def tls_smsc(tmp_path: Path) -> tuple[SmscSimulator, Path]:
    cert, key = _self_signed(tmp_path)
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
    other, _ = (
        _self_signed(tmp_path / "other") if (tmp_path / "other").mkdir() is None else (None, None)
    )
    assert other is not None
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
