"""`smsgw run` that cannot start: it says why in one line, exits non-zero, and does not
hang; a second gateway on the same data directory is refused, naming the first's pid.

Each case starts a real `smsgw run` subprocess and waits for the one line, then for the
process to end (within two seconds of the line), with no traceback on either stream.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gateway.cli import main
from tests.conftest import smsgw_process
from tests.ports import free_port
from tests.test_cli import TOKEN_RE, Daemon

EXIT_AFTER_LINE = 2.0  # the promise: the process ends within two seconds of the fault


@pytest.fixture
def conf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert main(["init", "--data-dir", str(tmp_path)]) == 0
    assert TOKEN_RE.search(capsys.readouterr().out)
    path = tmp_path / "smsgw.toml"
    path.write_text(path.read_text().replace("127.0.0.1:8080", f"127.0.0.1:{free_port()}"))
    return path


def _edit(path: Path, change: Callable[[str], str]) -> None:
    path.write_text(change(path.read_text()))


def _with_port(text: str, port: int) -> str:
    return re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{port}", text)


async def _run(conf: Path) -> asyncio.subprocess.Process:
    return await smsgw_process("run", "--config", str(conf))


async def _refused(proc: asyncio.subprocess.Process) -> tuple[str, int]:
    """The one `smsgw:` line on stderr and the exit code, the process gone within the bound."""
    assert proc.stderr is not None and proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(30):  # the imports on a busy machine; the fault comes after
            while not (lines and lines[-1].startswith("smsgw:")):
                raw = await proc.stderr.readline()
                assert raw, "exited without saying why:\n" + "".join(lines)
                lines.append(raw.decode())
        code = await asyncio.wait_for(proc.wait(), EXIT_AFTER_LINE)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    rest = (await proc.stderr.read()).decode() + (await proc.stdout.read()).decode()
    everything = "".join(lines) + rest
    assert "Traceback" not in everything, everything
    said = [line for line in everything.splitlines() if line.startswith("smsgw:")]
    assert said == [lines[-1].rstrip("\n")], everything
    assert code != 0
    return said[0], code


async def test_port_in_use_ends_with_one_line(conf: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        _edit(conf, lambda text: _with_port(text, port))
        line, _ = await _refused(await _run(conf))
    assert f"cannot listen on 127.0.0.1:{port}" in line and "already in use" in line


async def test_missing_password_file_ends_with_one_line(conf: Path, tmp_path: Path) -> None:
    missing = tmp_path / "carrier.password"
    _edit(
        conf,
        lambda text: (
            text + f'\n[[routes]]\nname = "carrier"\ntype = "smpp"\nhost = "127.0.0.1"\nport = 1\n'
            f'system_id = "hosp"\npassword_file = "{missing}"\n'
        ),
    )
    line, code = await _refused(await _run(conf))
    assert "carrier" in line and str(missing) in line and "No such file" in line
    assert code == 2


async def test_unreadable_tls_key_ends_with_one_line(conf: Path, tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate\n")
    (tmp_path / "key.pem").write_text("not a key\n")
    _edit(
        conf,
        lambda text: text.replace(
            "[http]\n", '[http]\ntls_cert_file = "cert.pem"\ntls_key_file = "key.pem"\n'
        ),
    )
    line, _ = await _refused(await _run(conf))
    assert "http.tls_cert_file" in line and "cannot load" in line


async def test_store_that_is_not_a_database_ends_with_one_line(conf: Path, tmp_path: Path) -> None:
    (tmp_path / "smsgw.db").write_bytes(b"this is not SQLite" * 100)
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"smsgw.db{suffix}").unlink(missing_ok=True)
    line, _ = await _refused(await _run(conf))
    assert "store" in line and "smsgw.db" in line


async def test_bad_master_key_ends_with_one_line(conf: Path, tmp_path: Path) -> None:
    key = tmp_path / "master.key"
    key.unlink()
    key.mkdir()
    line, _ = await _refused(await _run(conf))
    assert "master.key" in line


@pytest.fixture
async def first(conf: Path) -> AsyncIterator[Daemon]:
    proc = await _run(conf)
    d = Daemon(proc, "")
    await d.wait_log(lambda e: e.get("event") == "listening")
    try:
        yield d
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_second_instance_on_the_data_dir_is_refused_naming_the_first(
    first: Daemon, conf: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other.toml"  # another port: only the data directory is shared
    shutil.copy(conf, other)
    _edit(other, lambda text: _with_port(text, free_port()))
    line, _ = await _refused(await _run(other))
    assert f"pid {first.proc.pid}" in line and str(tmp_path) in line
    assert first.proc.returncode is None, "the first gateway keeps running"


async def test_lock_is_released_when_the_holder_is_killed(first: Daemon, conf: Path) -> None:
    first.proc.kill()
    await first.proc.wait()
    again = await _run(conf)
    d = Daemon(again, "")
    try:
        await d.wait_log(lambda e: e.get("event") == "listening")
    finally:
        again.kill()
        await again.wait()


async def test_data_dir_that_cannot_be_made_ends_with_one_line(conf: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    _edit(conf, lambda text: re.sub(r"(?m)^data_dir = .*$", f'data_dir = "{blocker}/data"', text))
    line, _ = await _refused(await _run(conf))
    assert f"{blocker}/data" in line


async def test_unusable_notify_socket_is_no_start_up_fault(conf: Path, tmp_path: Path) -> None:
    proc = await smsgw_process(
        "run", "--config", str(conf), NOTIFY_SOCKET=str(tmp_path / "no-such-socket")
    )
    d = Daemon(proc, "")
    try:
        await d.wait_log(lambda e: e.get("event") == "listening")
        await d.wait_log(lambda e: e.get("event") == "systemd_notify_failed")
    finally:
        proc.kill()
        await proc.wait()


async def test_bad_config_key_ends_with_one_line(conf: Path) -> None:
    _edit(conf, lambda text: text.replace("rate = 50", 'rate = "fast"'))
    line, code = await _refused(await _run(conf))
    assert (
        line == 'smsgw: configuration error: routes[0].rate: expected a positive number, got "fast"'
    )
    assert code == 2
