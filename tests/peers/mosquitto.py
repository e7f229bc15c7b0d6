"""Debian's mosquitto, started by the tests on loopback (`make peers` installs it).

`Mosquitto` writes a config into a temp dir, runs `mosquitto -c` on an ephemeral
port, and returns once the broker logs that it is running; `stop()` ends it and
`start()` brings it back on the same port. Optional: a password file (made with
`mosquitto_passwd`) and a TLS listener with a certificate made here.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.ports import free_port
from tests.tlsfiles import self_signed

START_TIMEOUT = 10.0


def binary(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()),
        None,
    )


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the self-signed certificate clients trust
    cert: Path
    key: Path


def make_tls(directory: Path) -> TlsFiles:
    """A self-signed certificate for 127.0.0.1 (it is its own CA)."""
    cert_path, key_path = self_signed(directory, "broker", "broker.test")
    return TlsFiles(cert_path, cert_path, key_path)


class Mosquitto:
    def __init__(
        self,
        directory: Path,
        *,
        users: dict[str, str] | None = None,
        tls: bool = False,
    ) -> None:
        self.directory = directory
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.tls = make_tls(directory) if tls else None
        self._users = users
        self._process: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None
        self.log: list[str] = []

    def _config(self) -> Path:
        lines = [
            "per_listener_settings false",
            f"allow_anonymous {'false' if self._users else 'true'}",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "user root",  # as root, mosquitto would drop to its own user: keep our files readable
            f"listener {self.port} 127.0.0.1",
        ]
        if self._users:
            passwd = self.directory / "passwd"
            tool = binary("mosquitto_passwd")
            assert tool, "mosquitto_passwd not installed (make peers)"
            passwd.write_text("")
            for user, password in self._users.items():
                subprocess.run([tool, "-b", str(passwd), user, password], check=True)
            lines.append(f"password_file {passwd}")
        if self.tls is not None:
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"certfile {self.tls.cert}",
                f"keyfile {self.tls.key}",
            ]
        path = self.directory / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    async def start(self) -> None:
        """Run the broker and return once it says it is running."""
        program = binary("mosquitto")
        assert program, "mosquitto not installed (make peers)"
        self._process = await asyncio.create_subprocess_exec(
            program,
            "-c",
            str(self._config()),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        stream = self._process.stderr
        assert stream is not None
        async with asyncio.timeout(START_TIMEOUT):
            while True:
                line = (await stream.readline()).decode(errors="replace")
                if not line:
                    raise RuntimeError("mosquitto exited: " + " | ".join(self.log[-5:]))
                self.log.append(line.rstrip())
                if " running" in line:
                    break
        self._drain = asyncio.create_task(self._keep_reading(stream))

    async def _keep_reading(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.log.append(line.decode(errors="replace").rstrip())

    async def stop(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            await self._process.wait()
        if self._drain is not None:
            await asyncio.gather(self._drain, return_exceptions=True)
        self._process = None
