"""The options of the commands on a PostgreSQL shared store (`store migrate`, and
`--postgresql` on `audit verify` and `keys rotate`); the commands themselves are in
`gateway/cluster/commands.py`, imported only when one runs: psycopg is the optional
`[postgresql]` extra, and every other command works without it."""

from __future__ import annotations

import argparse
import socket
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


def refuse_cluster_options(args: argparse.Namespace) -> None:
    """The options that only mean something with --postgresql, given without it."""
    for option in ("password_file", "node_id"):
        if getattr(args, option, None):
            flag = "--" + option.replace("_", "-")
            raise ConfigError(f"{flag}: only with --postgresql")


def add_parser(sub: Any, load: Callable[[str | None], Config]) -> None:
    store = sub.add_parser("store", help="the store itself (move it to PostgreSQL)")
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


def add_verify_options(verify: argparse.ArgumentParser) -> None:
    """`smsgw audit verify --postgresql CONNINFO`: the cluster's chains and anchors."""
    verify.add_argument("--postgresql", metavar="CONNINFO", help="verify this shared store")
    verify.add_argument("--password-file", help="with --postgresql: the database password")
