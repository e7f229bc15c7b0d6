"""A throwaway PostgreSQL from Debian's packages, for `smsgw demo-cluster` and the tests.

`ThrowawayPostgres.start()` runs `initdb` and `pg_ctl` from the installed PostgreSQL
(found by `pg_config --bindir`, else the newest `/usr/lib/postgresql/*/bin`) in a fresh
temp dir, on 127.0.0.1 and a free port, with the unix socket in that dir and fsync on
(the default, written out so nobody turns it off here). `initdb` refuses to run as root:
as root the data dir is given to the `postgres` user and both tools run through
`runuser`. Both run in a session of their own, so a Ctrl-C in the terminal reaches the
program that started them, which stops the server itself, and not the postmaster.
`stop()` stops it (immediate mode: it holds nothing worth a checkpoint) and removes the
directory.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

START_ATTEMPTS = 3  # a free port may be taken by someone else before the server binds it
MISSING = (
    "PostgreSQL's server programs (initdb, pg_ctl) are not installed: on Debian"
    " `make peers` installs them, or `apt-get install postgresql`"
)


def find_bindir() -> Path | None:
    config = shutil.which("pg_config")
    if config:
        out = subprocess.run(  # noqa: S603 - PostgreSQL's own tool, no shell
            [config, "--bindir"], capture_output=True, text=True, check=False
        )
        path = Path(out.stdout.strip())
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4])
    )
    return Path(found[-1]).parent if found else None


def any_free_port() -> int:
    """A loopback TCP port nothing listens on now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ThrowawayPostgres:
    def __init__(
        self, bindir: Path, free_port: Callable[[], int] = any_free_port, prefix: str = "smsgw-pg-"
    ) -> None:
        self.bindir = bindir
        self.free_port = free_port
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.data = self.root / "data"
        self.port = 0
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(  # noqa: S603 - PostgreSQL's own tools, no shell
            command, capture_output=True, text=True, check=False, cwd=self.root,
            start_new_session=True,
        )  # fmt: skip

    def start(self) -> None:
        done = self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.strip()}")
        self._configure()
        self._launch()

    def _configure(self, extra: str = "") -> None:
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "fsync = on\nsynchronous_commit = on\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\nmax_connections = 60\n"
                # in the data directory, not /dev/shm: an immediate stop (or kill -9)
                # leaves POSIX segments behind, and this server's directory is removed
                f"dynamic_shared_memory_type = mmap\n{extra}"
            )

    def _launch(self) -> None:
        for _ in range(START_ATTEMPTS):
            self.port = self.free_port()
            done = self._run(
                "pg_ctl", "start", "-w", "-t", "30", "-D", str(self.data),
                "-l", str(self.root / "server.log"), "-o", f"-p {self.port}",
            )  # fmt: skip
            if done.returncode == 0:
                return
        log = (self.root / "server.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip()}\n{log}")

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self, *, remove: bool = True) -> None:
        self._run("pg_ctl", "stop", "-m", "immediate", "-w", "-D", str(self.data))
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"
