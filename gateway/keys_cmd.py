"""`smsgw keys`: rotate the field key, watch the re-encryption, replace the master key
(docs/ops/keys.md). Each action is an op (`gateway/keys/ops.py`) run in the service
through its admin socket, or here when none runs (`gateway.ops.client`);
`recover-master` opens no store until it has put the right key in place, so it is a
plain function here."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.config import Config, ConfigError
from gateway.ops import client
from gateway.store import crypto


def add_parser(sub: Any) -> Any:
    """Add `smsgw keys ...`; returns its sub-command table (for more `keys` commands)."""
    parser = sub.add_parser("keys", help="rotate data keys, replace the master key")
    actions = parser.add_subparsers(dest="action", required=True)
    rotate = actions.add_parser(
        "rotate", help="make a new data key current and re-encrypt older rows under it"
    )
    rotate.add_argument(
        "--background",
        action="store_true",
        help="with no gateway running, leave the re-encryption to the next `smsgw run`"
        " instead of doing it now",
    )
    status = actions.add_parser(
        "status", help="key generations, rows left under each, re-encryption"
    )
    retire = actions.add_parser(
        "retire",
        help="with --postgresql: retire the shared keyring's older generations (a rotation"
        " does it itself once every node has taken it up)",
    )
    for action, what in ((rotate, "rotate"), (status, "read"), (retire, "retire")):
        action.add_argument(
            "--postgresql", metavar="CONNINFO", help=f"{what} the shared store's keys (a cluster)"
        )
        action.add_argument("--password-file", help="with --postgresql: the database password")
    for action in (rotate, retire):
        action.add_argument("--node-id", help="with --postgresql: this node's id (for its audit)")
    replace = actions.add_parser(
        "replace-master", help="re-wrap every data key under a new master key"
    )
    replace.add_argument(
        "--new-key-file",
        help="the new master key (base64 of 32 bytes, mode 0600); default: a new random one",
    )
    actions.add_parser(
        "recover-master", help="finish or undo a replace-master that was interrupted"
    )
    for action in actions.choices.values():
        action.add_argument("--config", help="TOML file (default: $SMSGW_CONFIG, else embedded)")
        action.set_defaults(func=run)  # on each, so commands added later bring their own
    return actions


CLUSTER = {
    "rotate": "cmd_rotate_cluster",
    "retire": "cmd_retire_cluster",
    "status": "cmd_status_cluster",
}


def _load(path: str | None) -> Config:
    from gateway.cli import _load as load  # the console's own loader (env, embedded default)

    return load(path)


def run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if args.action == "recover-master":
        return recover(config)
    if args.action in CLUSTER:  # --postgresql: the shared store's keyring
        from gateway import store_migrate_cmd

        if args.postgresql:
            run_cluster: Callable[[argparse.Namespace, Config], int] = getattr(
                store_migrate_cmd, CLUSTER[args.action]
            )
            return run_cluster(args, config)
        store_migrate_cmd.refuse_cluster_options(args)
        if args.action == "retire":
            raise ConfigError(
                "keys retire: only with --postgresql (on one node the gateway retires older"
                " generations itself once their rows are re-encrypted)"
            )
    op_args: dict[str, Any] = {}
    if args.action == "rotate":
        op_args["background"] = args.background
    elif args.action == "replace-master":
        # resolved here: the op may run in the service, whose working directory differs
        op_args["new_key_file"] = args.new_key_file and str(Path(args.new_key_file).resolve())
    try:
        return client.run(config, f"keys.{args.action}", op_args)
    except crypto.MasterKeyError as e:
        print(f"smsgw keys: {e}", file=sys.stderr)
        return 2


def recover(config: Config) -> int:
    from gateway.console import CONSOLE, audit_trail, with_store
    from gateway.keys import master

    try:
        done = master.recover(config.master_key_path, config.db_path)
    except crypto.MasterKeyError as e:
        print(f"smsgw keys: {e}", file=sys.stderr)
        return 2
    if done is None:
        print("nothing to recover: no interrupted replace-master")
        return 0
    print(done)

    async def audit() -> None:
        store = await with_store(config)
        try:
            trail = audit_trail(store, config)
            await trail.record(CONSOLE, "master_key_recovered", "key", "master")
        finally:
            await store.close()

    asyncio.run(audit())
    return 0
