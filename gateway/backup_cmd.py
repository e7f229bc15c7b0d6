"""`smsgw backup [--out DIR]`, `smsgw backup --verify FILE`, `smsgw restore FILE`.

Options become the ops' args (`gateway/backup/ops.py`). `backup` runs the op against
the running service through its admin socket, or in this process when none runs
(`gateway.ops.client.run`). `--verify` and `restore` open no store, so they call their
entries directly. Progress goes to stderr (`ProgressLine`), answers to stdout.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.config import Config, ConfigError, StoreConfig
from gateway.ops import client
from gateway.progress import ProgressLine
from gateway.store import crypto


def add_parser(sub: Any, load: Callable[[str | None], Config]) -> None:
    backup = sub.add_parser(
        "backup",
        help="take a consistent copy of the store while the gateway runs, or verify one",
        description="Without --verify: copy the store (still encrypted) with a manifest"
        " into --out. With --verify FILE: check a backup; exit 0 sound, 1 failed a check,"
        " 2 unreadable or no manifest, 3 the master key at hand is not the backup's.",
    )
    backup.add_argument(
        "--out", help="directory for the backup and its manifest (default: DATA_DIR/backups)"
    )
    backup.add_argument("--verify", metavar="FILE", help="check this backup instead of taking one")
    backup.add_argument(
        "--key",
        help="with --verify: the master key file to check it with (default: the config's,"
        " if readable)",
    )
    backup.add_argument("--config", help="TOML file (default: $SMSGW_CONFIG, else embedded)")
    backup.set_defaults(func=lambda args: cmd_backup(args, load))

    restore_parser = sub.add_parser(
        "restore",
        help="restore a backup into an empty data directory (the gateway must be stopped)",
        description="Verify FILE, then copy it in as the store of an empty data directory."
        " Refused (exit 4) if a gateway runs there, a store is there, or no master key is"
        " there; refused with verify's exit codes if the backup does not verify.",
    )
    restore_parser.add_argument("file", help="the backup (.db; its manifest must be beside it)")
    where = restore_parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--data-dir", help="an empty data directory (store smsgw.db, key master.key)"
    )
    where.add_argument("--config", help="TOML file: restore into its data_dir and store.path")
    restore_parser.add_argument(
        "--key", help="the master key file (default: master.key there, or the config's)"
    )
    restore_parser.set_defaults(func=lambda args: cmd_restore(args, load))


def cmd_backup(args: argparse.Namespace, load: Callable[[str | None], Config]) -> int:
    from gateway.backup import ops as backup_ops  # only for this command (smsgw run's start)

    config = load(args.config)
    progress = ProgressLine()
    try:
        if args.verify:
            if args.out:
                raise ConfigError("--out: not with --verify")
            return backup_ops.verify_file(
                Path(args.verify), _key_for_verify(args, config), print, progress
            )
        if args.key:
            raise ConfigError("--key: only with --verify (a backup uses the gateway's key)")
        if not config.db_path.exists():  # opening it here would create an empty one
            print(f"smsgw backup: no store at {config.db_path}; check --config", file=sys.stderr)
            return 2
        out = str(Path(args.out).resolve()) if args.out else None
        return client.run(config, "backup.create", {"out": out})
    finally:
        progress.close()


def _key_for_verify(args: argparse.Namespace, config: Config) -> bytes | None:
    if args.key:
        return crypto.read_master_key(Path(args.key))
    try:
        return crypto.read_master_key(config.master_key_path)
    except crypto.MasterKeyError as e:
        print(f"master key: {e}; checking without it", file=sys.stderr)
        return None


def cmd_restore(args: argparse.Namespace, load: Callable[[str | None], Config]) -> int:
    from gateway.backup.restore import restore  # only for this command (smsgw run's start)

    if args.config:
        config = load(args.config)
        data_dir, db_path, key_path = Path(config.data_dir), config.db_path, config.master_key_path
    else:
        data_dir = Path(args.data_dir).resolve()
        defaults = StoreConfig()
        db_path, key_path = data_dir / defaults.path, data_dir / defaults.master_key_file
    if args.key:
        key_path = Path(args.key)
    progress = ProgressLine()
    try:
        return restore(
            Path(args.file),
            data_dir,
            db_path,
            key_path,
            out=print,
            progress=progress,
            actor="console",
        )
    finally:
        progress.close()
