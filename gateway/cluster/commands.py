"""The console commands on the shared store: `smsgw store migrate --to CONNINFO`,
`smsgw audit verify --postgresql CONNINFO`, `smsgw keys rotate|retire|status
--postgresql CONNINFO`
(their options: `gateway/store_migrate_cmd.py`, which imports this only when used, so
an install without the `[postgresql]` extra keeps every other command).

The connection string names where (host, port, database, user) but never a password:
one inside it is refused, since command lines end up in shell history and `ps`. The
password comes from `--password-file` (its first line; a systemd credential's path
works), else from what libpq reads itself (`PGPASSWORD`, `~/.pgpass`). It is never
printed: the target is shown as host:port/database, and an error from the connection
has the password blanked should libpq ever quote it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from gateway import custody
from gateway.cluster import audit, key_commands, keyring
from gateway.cluster.checked import CheckedAsyncConnection
from gateway.cluster.keyring import load as load_keys
from gateway.cluster.migrate import REFUSED, migrate_store
from gateway.config import Config, ConfigError
from gateway.progress import ProgressLine
from gateway.startup import DataDirLock, StartupFault
from gateway.store import crypto
from gateway.store.audit_log import audit_key

ENV_PASSWORD_FILE = "SMSGW_PG_PASSWORD_FILE"  # noqa: S105 - a variable's name


class Target:
    """A checked connection string and its password, kept apart until connecting."""

    def __init__(self, given: str, password_file: str | None, option: str) -> None:
        try:
            parts = conninfo_to_dict(given)
        except psycopg.ProgrammingError:
            raise ConfigError(f"{option}: not a PostgreSQL connection string") from None
        if "password" in parts:
            raise ConfigError(
                f"{option}: the connection string holds a password; give it with"
                " --password-file (or PGPASSWORD) instead, and change it if it was shared"
            )
        self._conninfo = given
        self.password: str | None = None
        path = password_file or os.environ.get(ENV_PASSWORD_FILE)
        if path:
            try:
                lines = Path(path).read_text(encoding="utf-8").splitlines()
            except OSError as e:
                raise ConfigError(f"--password-file: cannot read {path} ({e.strerror})") from None
            self.password = lines[0] if lines else ""
        host = parts.get("host") or parts.get("hostaddr") or "localhost"
        self.shown = f"{host}:{parts.get('port') or 5432}/{parts.get('dbname') or '(default)'}"

    def conninfo(self) -> str:
        if self.password is None:
            return self._conninfo
        return make_conninfo(self._conninfo, password=self.password)

    def scrub(self, text: str) -> str:
        return text.replace(self.password, "***") if self.password else text

    async def connect(self) -> psycopg.AsyncConnection[Any]:
        try:
            # the store migration and key commands commit through it: a lost COMMIT raises
            return await CheckedAsyncConnection.connect(self.conninfo(), autocommit=True)
        except psycopg.OperationalError as e:
            raise ConnectFailed(
                f"cannot connect to {self.shown}: {self.scrub(str(e)).strip()}"
            ) from None


class ConnectFailed(Exception):
    pass


def cmd_migrate(args: argparse.Namespace, config: Config) -> int:
    target = Target(args.to, args.password_file, "--to")
    if args.batch < 1 or args.sample < 1:
        raise ConfigError("--batch and --sample must be at least 1")
    if not config.db_path.exists():
        print(f"smsgw store migrate: no store at {config.db_path}; check --config", file=sys.stderr)
        return 2
    lock = DataDirLock(config.data_dir)
    try:
        lock.acquire()
    except StartupFault as e:
        print(f"store migrate: refused: {e}")
        return REFUSED
    try:
        master = custody.load_master_key(config)
        print(f"store migrate: {config.db_path} -> {target.shown} (node {args.node_id})")
        return asyncio.run(_migrate(args, config, target, master))
    except ConnectFailed as e:
        print(f"smsgw store migrate: {e}", file=sys.stderr)
        return 2
    except psycopg.Error as e:  # the connection lost half-way, the server stopping...
        primary = e.diag.message_primary or target.scrub(str(e)).strip()
        print(f"smsgw store migrate: stopped: {primary}; run it again", file=sys.stderr)
        return 1
    finally:
        lock.release()


async def _migrate(args: argparse.Namespace, config: Config, target: Target, key: bytes) -> int:
    progress = ProgressLine()
    conn = await target.connect()
    try:
        return await migrate_store(
            config.db_path, key, conn, node_id=args.node_id,
            actor=f"console:{_user()}", now=_now(), out=lambda s: print(s, flush=True),
            progress=progress, batch=args.batch, sample=args.sample,
        )  # fmt: skip
    finally:
        progress.close()
        await conn.close()


def cmd_verify_cluster(args: argparse.Namespace, config: Config) -> int:
    """Exit 0 if every node's chain and every anchor verify, 1 with what does not."""
    target = Target(args.postgresql, args.password_file, "--postgresql")
    master = custody.load_master_key(config)
    try:
        return asyncio.run(_verify(target, master))
    except ConnectFailed as e:
        print(f"smsgw audit verify: {e}", file=sys.stderr)
        return 2
    except crypto.MasterKeyError as e:
        print(f"smsgw audit verify: {e}", file=sys.stderr)
        return 2


async def _verify(target: Target, master: bytes) -> int:
    conn = await target.connect()
    try:
        keys = await load_keys(conn, master)
        result = await audit.verify(conn, audit_key(keys.root))
    finally:
        await conn.close()
    for head in result.heads:
        print(f"node {head.node_id}: {head.entries} entries, head {head.seq} {head.hash}")
    if result.ok:
        print(f"audit chains intact: {len(result.heads)} nodes, {result.anchors} anchors")
        return 0
    for problem in result.problems:
        print(f"audit chain BROKEN: {problem}")
    return 1


def cmd_rotate_cluster(args: argparse.Namespace, config: Config) -> int:
    """`smsgw keys rotate --postgresql CONNINFO`: a new field key generation in the
    shared keyring, every encrypted field re-encrypted under it and the older
    generations retired once every node seals under it, refused (exit 4) while another
    node rotates; recorded in this node's audit chain. Exit 1: older ones kept."""
    return _keys(args, config, _rotate)


def cmd_retire_cluster(args: argparse.Namespace, config: Config) -> int:
    """`smsgw keys retire --postgresql CONNINFO`: the retirement that ends a rotation,
    again (nodes had not taken the rotation up, or a row was sealed under an older key)."""
    return _keys(args, config, _retire)


def cmd_status_cluster(args: argparse.Namespace, config: Config) -> int:
    """`smsgw keys status --postgresql CONNINFO`: the shared keyring's generations."""
    return _keys(args, config, _status)


Keys = Callable[[psycopg.AsyncConnection[Any], bytes, str], Awaitable[int]]


def _keys(args: argparse.Namespace, config: Config, run: Keys) -> int:
    target = Target(args.postgresql, args.password_file, "--postgresql")
    master = custody.load_master_key(config)
    node_id = getattr(args, "node_id", None) or socket.gethostname()

    async def connected() -> int:
        conn = await target.connect()
        try:
            return await run(conn, master, node_id)
        except keyring.RotationBusy as e:
            print(f"keys {args.action}: refused: {e}; run it again when that one has finished")
            return REFUSED
        finally:
            await conn.close()

    try:
        return asyncio.run(connected())
    except ConnectFailed as e:
        print(f"smsgw keys: {e}", file=sys.stderr)
        return 2
    except crypto.MasterKeyError as e:
        print(f"smsgw keys: {e}", file=sys.stderr)
        return 2


async def _rotate(conn: psycopg.AsyncConnection[Any], master: bytes, node_id: str) -> int:
    keys = await load_keys(conn, master)
    progress = ProgressLine()

    async def shown(done: int) -> None:
        progress(done, 0, "rows re-encrypted")

    try:
        generation, done = await keyring.rotate(conn, master, after_batch=shown)
    finally:
        progress.close()
    await audit.append(
        conn, audit_key(keys.root), node_id, _now(), f"console:{_user()}", "key_rotated",
        "key", f"field:{generation}", generation=generation, rows=done,
    )  # fmt: skip
    print(
        f"field key generation {generation} is current;"
        f" {done} rows re-encrypted (every encrypted field of the shared store)"
    )
    return await _retire(conn, master, node_id)


async def _retire(conn: psycopg.AsyncConnection[Any], master: bytes, node_id: str) -> int:
    keys = await load_keys(conn, master)
    return await key_commands.retire_older(
        conn, master, audit_key(keys.root), node_id, f"console:{_user()}", _now, print
    )


async def _status(conn: psycopg.AsyncConnection[Any], master: bytes, node_id: str) -> int:
    del master, node_id
    return await key_commands.status(conn, print)


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _now() -> float:
    return time.time()
