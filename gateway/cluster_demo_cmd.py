"""`smsgw demo-cluster`'s options; the demo itself (gateway/cluster_demo.py) is imported
only when it runs: it needs psycopg, the optional `[postgresql]` extra, and every other
command works without it."""

from __future__ import annotations

import argparse
import sys
from typing import Any

DEFAULT_LISTENS = ["127.0.0.1:8081", "127.0.0.1:8082"]


def add_parser(sub: Any) -> None:
    demo = sub.add_parser(
        "demo-cluster",
        help="two nodes on a throwaway PostgreSQL and an SMSC simulator (Ctrl-C stops)",
    )
    demo.add_argument(
        "--listen",
        action="append",
        metavar="HOST:PORT",
        help="node 1's, then node 2's HTTP address (default 127.0.0.1:8081 and :8082)",
    )
    demo.add_argument(
        "--keep", action="store_true", help="keep the temporary directories (data, logs)"
    )
    demo.add_argument(
        "--stop-after", type=float, metavar="SECONDS", help="stop by itself after this long"
    )
    demo.set_defaults(func=cmd_demo_cluster)


def cmd_demo_cluster(args: argparse.Namespace) -> int:
    listens = args.listen or DEFAULT_LISTENS
    if len(listens) != len(DEFAULT_LISTENS):
        print("smsgw demo-cluster: give --listen twice (node 1, node 2) or not at all")
        return 2
    try:
        from gateway import cluster_demo
    except ImportError as e:
        if not (e.name or "").startswith("psycopg"):
            raise
        print(
            "smsgw demo-cluster: PostgreSQL support is not installed:"
            " pip install 'smsgw[postgresql]'",
            file=sys.stderr,
        )
        return 2
    return cluster_demo.run(listens, args.keep, args.stop_after)
