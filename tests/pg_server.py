"""A throwaway PostgreSQL cluster from Debian's packages, for the cluster tests.

`PgServer.start()` runs `initdb` and `pg_ctl` from the installed PostgreSQL (found by
`pg_config --bindir`, else the newest `/usr/lib/postgresql/*/bin`) in a fresh temp dir,
on 127.0.0.1 and a free port, with the unix socket in that dir and fsync on (the
default, written out so nobody turns it off here). `initdb` refuses to run as root: as
root the data dir is given to the `postgres` user and both tools run through `runuser`.
`make peers` installs `postgresql` from Debian when it is missing; `find_bindir()`
returning None is the one reason the tests skip.

S8 (database failover): `standby_of(primary, name)` makes a streaming standby with
`pg_basebackup`, `primary.synchronous(name)` (before it) makes the primary wait for it
at each commit, `kill_postmaster()` is kill -9 of the primary's postmaster and `promote()` turns
the standby into the new primary.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

from tests.ports import free_port

START_ATTEMPTS = 3  # a free port may be taken by someone else before the server binds it


def find_bindir() -> Path | None:
    config = shutil.which("pg_config")
    if config:
        out = subprocess.run([config, "--bindir"], capture_output=True, text=True, check=False)
        path = Path(out.stdout.strip())
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4])
    )
    return Path(found[-1]).parent if found else None


SKIP_REASON = "PostgreSQL is not installed (`make peers` installs Debian's postgresql)"


class PgServer:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="smsgw-pg-"))
        self.data = self.root / "data"
        self.port = 0
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=False, cwd=self.root)

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
                f"unix_socket_directories = '{self.root}'\nmax_connections = 60\n{extra}"
            )

    def _launch(self) -> None:
        for _ in range(START_ATTEMPTS):
            self.port = free_port()
            done = self._run(
                "pg_ctl", "start", "-w", "-t", "30", "-D", str(self.data),
                "-l", str(self.root / "server.log"), "-o", f"-p {self.port}",
            )  # fmt: skip
            if done.returncode == 0:
                return
        log = (self.root / "server.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip()}\n{log}")

    @classmethod
    def standby_of(cls, primary: PgServer, name: str) -> PgServer:
        """A started hot standby streaming from `primary` (initdb's pg_hba trusts
        replication on 127.0.0.1), known to it as `name` (its application_name)."""
        standby = cls(primary.bindir)
        done = standby._run(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
            "-D", str(standby.data), "-X", "stream", "-c", "fast",
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"pg_basebackup failed: {done.stderr.strip()}")
        (standby.data / "standby.signal").touch()
        if standby._as_postgres:
            shutil.chown(standby.data / "standby.signal", "postgres", "postgres")
        standby._configure(
            "hot_standby = on\n"
            f"primary_conninfo = 'host=127.0.0.1 port={primary.port} user=postgres"
            f" application_name={name}'\n"
        )
        standby._launch()
        return standby

    def synchronous(self, name: str) -> None:
        """Commits wait for the standby `name` (call before starting it: until it
        streams, a commit waits)."""
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{name}'")
            conn.execute("SELECT pg_reload_conf()")

    def sync_state(self, name: str) -> str | None:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            row = conn.execute(
                "SELECT sync_state FROM pg_stat_replication WHERE application_name = %s", (name,)
            ).fetchone()
        return None if row is None else str(row[0])

    def kill_postmaster(self) -> None:
        """kill -9 of the postmaster (its backends notice and exit)."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)

    def promote(self) -> None:
        done = self._run("pg_ctl", "promote", "-w", "-t", "30", "-D", str(self.data))
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl promote failed: {done.stderr.strip()}")
        # Its copy of the primary's settings names itself as the synchronous standby:
        # alone now, it would make every commit wait forever. Patroni's synchronous_mode
        # (not strict) does the same when no standby is left.
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM RESET synchronous_standby_names")
            conn.execute("SELECT pg_reload_conf()")

    def stop(self) -> None:
        self._run("pg_ctl", "stop", "-m", "immediate", "-D", str(self.data))
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def create_database(self, template: str | None = None) -> str:
        """A new database, empty or a copy of the database `template` (which nobody may
        be connected to); its conninfo string."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        copy = "" if template is None else f" TEMPLATE {template}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}{copy}")  # names made here, not input
        return self.dsn(name)
