"""A throwaway PostgreSQL cluster from Debian's packages, for the cluster tests.

`PgServer` is `gateway/cluster/throwaway_pg.py`'s server (`smsgw demo-cluster` starts
one too) on a port from `tests/ports.py`, with what only the tests need.
`make peers` installs `postgresql` from Debian when it is missing; `find_bindir()`
returning None is the one reason the tests skip.

S8 (database failover): `standby_of(primary, name)` makes a streaming standby with
`pg_basebackup`, `primary.synchronous(name)` (before it) makes the primary wait for it
at each commit, `kill_postmaster()` is kill -9 of the primary's postmaster and `promote()` turns
the standby into the new primary.
"""

from __future__ import annotations

import os
import shutil
import signal
import uuid
from pathlib import Path

import psycopg

from gateway.cluster.throwaway_pg import ThrowawayPostgres, find_bindir
from tests.ports import free_port

__all__ = ["SKIP_REASON", "PgServer", "find_bindir"]

SKIP_REASON = "PostgreSQL is not installed (`make peers` installs Debian's postgresql)"


class PgServer(ThrowawayPostgres):
    def __init__(self, bindir: Path) -> None:
        super().__init__(bindir, free_port)

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
        pid = self.postmaster_pid()
        assert pid is not None, "no postmaster.pid"
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

    def create_database(self, template: str | None = None) -> str:
        """A new database, empty or a copy of the database `template` (which nobody may
        be connected to); its conninfo string."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        copy = "" if template is None else f" TEMPLATE {template}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}{copy}")  # names made here, not input
        return self.dsn(name)
