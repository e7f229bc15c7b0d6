"""`smsgw undecodable`: what an operator does with inbound records no codec could read.

`list` shows ids, routes, modems and times (never a record); `export FILE` writes
every record, decrypted, as JSON lines to a new owner-only file, for a person to read
or a tool to decode; `release ID` forgets one that was dealt with. Export and release
are written to the audit trail; the records themselves never reach a log.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.config import Config
from gateway.console import CONSOLE, audit_trail, with_store
from gateway.store.quarantine import Quarantine
from gateway.table import table


def add_parser(sub: Any, load: Callable[[str | None], Config]) -> None:
    parser = sub.add_parser(
        "undecodable", help="inbound records held because they could not be decoded"
    )
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="ids, routes, modems and times (no content)")
    export = actions.add_parser("export", help="write the records to a new 0600 file")
    export.add_argument("file", help="a new file to write (never overwritten)")
    release = actions.add_parser("release", help="forget a record that was dealt with")
    release.add_argument("id", help="the record's id, as `undecodable list` shows it")
    for action in actions.choices.values():
        action.add_argument("--config", help="TOML file (default: embedded)")
    parser.set_defaults(func=lambda args: run(args, load(args.config)))


def _stamp(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


def run(args: argparse.Namespace, config: Config) -> int:
    return asyncio.run(_run(args, config))


async def _run(args: argparse.Namespace, config: Config) -> int:
    store = await with_store(config)
    try:
        quarantine = Quarantine(store)
        if args.action == "list":
            rows = [
                (h.id, _stamp(h.received_at), h.route, h.source) for h in await quarantine.held()
            ]
            if rows:  # nothing at all when none is held (scripts test for empty output)
                print("\n".join(table(("ID", "RECEIVED (UTC)", "ROUTE", "SOURCE"), rows)))
            return 0
        audit = audit_trail(store, config)
        if args.action == "export":
            records = await quarantine.records()
            try:
                fd = os.open(args.file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                print(f"smsgw undecodable: {args.file} exists; not overwritten", file=sys.stderr)
                return 1
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                for held, record in records:
                    line = {
                        "id": held.id,
                        "route": held.route,
                        "source": held.source,
                        "received_at": held.received_at,
                        "record": record,
                    }
                    out.write(json.dumps(line) + "\n")
            await audit.record(CONSOLE, "undecodable_exported", "file", Path(args.file).name,
                               count=len(records))  # fmt: skip
            print(f"{len(records)} record(s) written to {args.file}")
            return 0
        if not await quarantine.release(args.id):
            print(f"smsgw undecodable: no held record {args.id}", file=sys.stderr)
            return 1
        await audit.record(CONSOLE, "undecodable_released", "undecodable", args.id)
        print(f"released {args.id}")
        return 0
    finally:
        await store.close()
