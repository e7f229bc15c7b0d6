"""The options of the commands on a PostgreSQL shared store (`store migrate`, and
`--postgresql` on `audit verify` and `keys rotate|retire|status`); the commands themselves are in
`gateway/cluster/commands.py`, imported only when one runs: psycopg is the optional
`[postgresql]` extra, and every other command works without it."""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from gateway.config import Config, ConfigError


def _commands() -> ModuleType:
    try:
        from gateway.cluster import commands
    except ImportError as e:
        if not (e.name or "").startswith("psycopg"):
            raise
        raise ConfigError(
            "PostgreSQL support is not installed: pip install 'smsgw[postgresql]'"
        ) from None
    return commands


def cmd_migrate(args: argparse.Namespace, config: Config) -> int:
    code: int = _commands().cmd_migrate(args, config)
    return code


def cmd_verify_cluster(args: argparse.Namespace, config: Config) -> int:
    code: int = _commands().cmd_verify_cluster(args, config)
    return code


def cmd_rotate_cluster(args: argparse.Namespace, config: Config) -> int:
    if args.background:
        raise ConfigError("--background: not with --postgresql (it re-encrypts at once)")
    code: int = _commands().cmd_rotate_cluster(args, config)
    return code


def cmd_retire_cluster(args: argparse.Namespace, config: Config) -> int:
    code: int = _commands().cmd_retire_cluster(args, config)
    return code


def cmd_status_cluster(args: argparse.Namespace, config: Config) -> int:
    code: int = _commands().cmd_status_cluster(args, config)
    return code


def refuse_cluster_options(args: argparse.Namespace) -> None:
    """The options that only mean something with --postgresql, given without it."""
    for option in ("password_file", "node_id"):
        if getattr(args, option, None):
            flag = "--" + option.replace("_", "-")
            raise ConfigError(f"{flag}: only with --postgresql")


def add_parser(sub: Any, load: Callable[[str | None], Config]) -> None:
    store = sub.add_parser(
        "store", help="the store itself (move it to PostgreSQL, give it smaller pages)"
    )
    actions = store.add_subparsers(dest="action", required=True)
    migrate = actions.add_parser(
        "migrate",
        help="copy this SQLite store into an empty PostgreSQL database and verify it",
        description="Offline (the gateway must be stopped): copies messages in every state,"
        " their events and carrier ids, the keyring, the audit trail and consent decisions,"
        " ids kept, then verifies counts, ids, the audit chain and a decrypted sample of"
        " every encrypted column. Exit 0 done, 1 verification failed, 2 cannot connect or"
        " bad options, 4 refused (gateway running, target not empty). After a failure run"
        " it again: an unfinished target is emptied and copied afresh.",
    )
    migrate.add_argument("--to", required=True, help="postgresql://USER@HOST:PORT/DB, no password")
    migrate.add_argument("--password-file", help="the database password (first line)")
    migrate.add_argument(
        "--node-id",
        default=socket.gethostname(),
        help="the node whose audit chain continues this store's (default: this host's name)",
    )
    migrate.add_argument("--batch", type=int, default=5000, help="rows per transaction")
    migrate.add_argument("--sample", type=int, default=200, help="rows decrypted per column")
    migrate.add_argument("--config", help="TOML file (default: $SMSGW_CONFIG, else embedded)")
    migrate.set_defaults(func=lambda args: cmd_migrate(args, load(args.config)))
    repage = actions.add_parser(
        "repage",
        help="rewrite an older store with the smaller pages new stores get (fewer disk writes)",
        description="Offline (the gateway must be stopped): a store made before 2 KiB pages"
        " keeps 4 KiB ones and writes more per message. This rewrites it (VACUUM) with the"
        " page size new stores get. It needs free space of about twice the store and time in"
        " proportion to it. Exit 0 done or nothing to do, 2 no store or too little room,"
        " 4 refused (gateway running).",
    )
    repage.add_argument("--config", help="TOML file (default: $SMSGW_CONFIG, else embedded)")
    repage.set_defaults(func=lambda args: cmd_repage(load(args.config)))


def cmd_repage(config: Config) -> int:
    """Offline: rewrite the store with the page size new stores get (`store/repage.py`).
    Exit 0 done (or nothing to do), 2 no store or no room, 4 refused (gateway running)."""
    from gateway.startup import DataDirLock, StartupFault
    from gateway.store.repage import NoRoomToRepage, repage

    if not config.db_path.exists():
        print(f"smsgw store repage: no store at {config.db_path}; check --config", file=sys.stderr)
        return 2
    lock = DataDirLock(config.data_dir)
    try:
        lock.acquire()
    except StartupFault as e:
        print(f"store repage: refused: {e}")
        return 4
    try:
        done = repage(config.db_path)
    except NoRoomToRepage as e:
        print(f"smsgw store repage: {e}", file=sys.stderr)
        return 2
    finally:
        lock.release()
    if done.before == done.after:
        print(f"store repage: {config.db_path} already has {done.after}-byte pages")
    else:
        print(
            f"store repage: {config.db_path}: {done.before} -> {done.after}-byte pages,"
            f" {done.bytes_before:,} -> {done.bytes_after:,} bytes"
        )
    return 0


def add_verify_options(verify: argparse.ArgumentParser) -> None:
    """`smsgw audit verify --postgresql CONNINFO`: the cluster's chains and anchors."""
    verify.add_argument("--postgresql", metavar="CONNINFO", help="verify this shared store")
    verify.add_argument("--password-file", help="with --postgresql: the database password")
