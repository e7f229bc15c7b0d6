"""`smsgw doctor` as an operator runs it: a real subprocess against the built-in SMSC
simulator (in this test's event loop) with right and wrong credentials, an unknown host,
a closed port and an untrusted TLS certificate. It exits 0 on a healthy configuration,
names each cause, and prints only its report on stdout.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from gateway import tls
from gateway.cli import main
from tests.conftest import smsgw_process
from tests.ports import free_port
from tests.test_cli import TOKEN_RE, Daemon

SYSTEM_ID, PASSWORD = "hosp", "right"


@pytest.fixture
def conf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert main(["init", "--data-dir", str(tmp_path)]) == 0
    assert TOKEN_RE.search(capsys.readouterr().out)
    path = tmp_path / "smsgw.toml"
    path.write_text(path.read_text().replace("127.0.0.1:8080", f"127.0.0.1:{free_port()}"))
    return path


@pytest.fixture
async def smsc() -> AsyncIterator[SmscSimulator]:
    sim = SmscSimulator(SimulatorConfig(system_id=SYSTEM_ID, password=PASSWORD))
    await sim.start()
    try:
        yield sim
    finally:
        await sim.aclose()


def _add_route(conf: Path, **options: object) -> None:
    lines = ["[[routes]]", 'name = "carrier"', 'type = "smpp"', f'system_id = "{SYSTEM_ID}"']
    for key, value in options.items():
        shown = str(value).lower() if isinstance(value, bool) else value
        lines.append(f'{key} = "{shown}"' if isinstance(value, str) else f"{key} = {shown}")
    _edit(conf, lambda text: text + "\n" + "\n".join(lines) + "\n")


def _edit(path: Path, change: Callable[[str], str]) -> None:
    path.write_text(change(path.read_text()))


async def _doctor(conf: Path, *extra: str) -> tuple[int, str, str]:
    proc = await smsgw_process("doctor", "--config", str(conf), *extra)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _report_only(out: str) -> None:
    for line in out.splitlines():
        assert not line.startswith("{") and "smpp_" not in line and "event" not in line, out
    assert "Traceback" not in out


def _route_line(out: str) -> str:
    return next(line for line in out.splitlines() if line.startswith("route carrier:"))


async def test_healthy_config_with_an_smpp_route_exits_0(conf: Path, smsc: SmscSimulator) -> None:
    _add_route(conf, host="127.0.0.1", port=smsc.port, password=PASSWORD)
    code, out, err = await _doctor(conf)
    assert code == 0, out + err
    assert "all checks passed" in out
    assert _route_line(out).startswith("route carrier: smpp, up")
    _report_only(out)


async def test_wrong_password_is_named(conf: Path, smsc: SmscSimulator) -> None:
    _add_route(conf, host="127.0.0.1", port=smsc.port, password="wrong")
    code, out, _ = await _doctor(conf)
    assert code == 1
    line = _route_line(out)
    assert "refused the bind" in line and "wrong password" in line, out
    _report_only(out)


async def test_unknown_system_id_is_named(conf: Path, smsc: SmscSimulator) -> None:
    _add_route(conf, host="127.0.0.1", port=smsc.port, password=PASSWORD)
    _edit(conf, lambda text: text.replace(f'system_id = "{SYSTEM_ID}"', 'system_id = "nobody"'))
    code, out, _ = await _doctor(conf)
    assert code == 1 and "unknown system_id" in _route_line(out), out


async def test_unknown_host_is_named_as_dns(conf: Path) -> None:
    _add_route(conf, host="nonexistent.invalid", port=2775, password=PASSWORD)
    code, out, _ = await _doctor(conf)
    assert code == 1
    line = _route_line(out)
    assert "nonexistent.invalid does not resolve" in line and "DNS" in line, out
    assert "password" not in line
    _report_only(out)


async def test_closed_port_is_named_as_refused(conf: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        _add_route(conf, host="127.0.0.1", port=port, password=PASSWORD)
        code, out, _ = await _doctor(conf)
    assert code == 1 and "refused" in _route_line(out), out


async def test_untrusted_tls_certificate_is_named(conf: Path, tmp_path: Path) -> None:
    cert, key = tmp_path / "smsc-cert.pem", tmp_path / "smsc-key.pem"
    tls.generate_self_signed(cert, key, ["127.0.0.1"])
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    sim = SmscSimulator(SimulatorConfig(system_id=SYSTEM_ID, password=PASSWORD, tls=server))
    await sim.start()
    try:
        _add_route(conf, host="127.0.0.1", port=sim.port, password=PASSWORD, tls=True)
        code, out, _ = await _doctor(conf)
        assert code == 1
        assert "TLS" in _route_line(out) and "not trusted" in _route_line(out), out
        _edit(conf, lambda text: text + f'tls_ca_file = "{cert}"\n')
        code, out, err = await _doctor(conf)
        assert code == 0, out + err
    finally:
        await sim.aclose()


async def test_verbose_sends_driver_logs_to_stderr_only(conf: Path, smsc: SmscSimulator) -> None:
    _add_route(conf, host="127.0.0.1", port=smsc.port, password="wrong")
    code, out, err = await _doctor(conf, "--verbose")
    assert code == 1
    _report_only(out)
    assert "smpp_bind_rejected" in err


async def test_master_key_problem_is_reported(conf: Path, tmp_path: Path) -> None:
    code, out, _ = await _doctor(conf)
    assert code == 0 and "all checks passed" in out
    (tmp_path / "master.key").chmod(0o644)
    code, out, _ = await _doctor(conf)
    assert code == 1
    assert "master key" in out and "chmod 600" in out


async def test_a_running_gateway_is_not_probed_twice(conf: Path) -> None:
    proc = await smsgw_process("run", "--config", str(conf))
    d = Daemon(proc, "")
    try:
        await d.wait_log(lambda e: e.get("event") == "listening")
        code, out, err = await _doctor(conf)
        assert code == 0, out + err
        assert f"running on this data directory (pid {proc.pid})" in out
        assert "cannot listen" not in out
    finally:
        proc.kill()
        await proc.wait()
