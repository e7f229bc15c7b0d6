"""`smsgw analytics`: the analytics figures from the console (`analytics.report`), in
the running service through its admin socket, or against the data directory."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from gateway.analytics.figures import Dimension
from gateway.config import Config
from gateway.ops import client


def add_parser(sub: Any, load: Callable[[str | None], Config]) -> None:
    p = sub.add_parser("analytics", help="figures per day range, in total or per dimension")
    p.add_argument("--from", dest="first", help="first day, YYYY-MM-DD (default: 29 days ago)")
    p.add_argument("--to", dest="last", help="last day, included (default: today)")
    p.add_argument(
        "--by", choices=[d.value for d in Dimension], default="total",
        help="per key of a dimension (default: the total)",
    )  # fmt: skip
    p.add_argument("--csv", action="store_true", help="CSV on stdout (audited)")
    p.add_argument("--refresh", action="store_true", help="count what is new first")
    p.add_argument("--config", help="TOML file (default: embedded)")
    p.set_defaults(func=lambda args: _run(args, load(args.config)))


def _run(args: argparse.Namespace, config: Config) -> int:
    options = {"from": args.first, "to": args.last, "by": args.by, "csv": args.csv,
               "refresh": args.refresh}  # fmt: skip
    return client.run(config, "analytics.report", options)
