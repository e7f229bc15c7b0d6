"""`smsgw retention run|status` and `smsgw erase --number +CC...`: the retention and
erasure ops (`gateway/retention/ops.py`) from the console.

They run in the service through its admin socket, or against the data directory when
no service runs (`gateway.ops.client.run`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from gateway.config import Config
from gateway.ops import client


def add_parser(sub: Any, load: Callable[[str | None], Config]) -> None:
    retention = sub.add_parser(
        "retention", help="remove message texts and numbers past their retention period"
    )
    actions = retention.add_subparsers(dest="action", required=True)
    actions.add_parser("run", help="remove now what is due (audited, with counts)")
    actions.add_parser("status", help="the periods in force and how many rows are due now")
    for action in actions.choices.values():
        action.add_argument("--config", help="TOML file (default: embedded)")
    retention.set_defaults(func=lambda args: _retention(args, load(args.config)))

    erase = sub.add_parser(
        "erase", help="erase one person's data by number, keeping only the suppression entry"
    )
    erase.add_argument(
        "--number", required=True, help="the phone number, E.164 (+CC...) or national"
    )
    erase.add_argument("--config", help="TOML file (default: embedded)")
    erase.set_defaults(func=lambda args: _erase(args, load(args.config)))


def _retention(args: argparse.Namespace, config: Config) -> int:
    name = "retention.run" if args.action == "run" else "retention.status"
    return client.run(config, name, {})


def _erase(args: argparse.Namespace, config: Config) -> int:
    return client.run(config, "erase.number", {"number": args.number})
