"""Bench-only: where the time of an accept that claims its message goes.

Off unless the node is started with `SMSGW_ACCEPT_PHASES` naming a file (what
`bench/cluster.py --only-account` does); then each such accept appends one JSON line
there: its phases' ends, in ms since the accept began (the pool's connection, the
account's take, the insert, the claim, the commit, the settle, the opening). Off, an
accept pays one `None` check: nothing stays in the hot path.
"""

from __future__ import annotations

import json
import os
import time

_PATH = os.environ.get("SMSGW_ACCEPT_PHASES") or None


class Phases:
    """One accept's marks, written as one line when it ends."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._start = time.perf_counter()
        self._marks: dict[str, float] = {}

    def mark(self, name: str) -> None:
        self._marks[name] = round((time.perf_counter() - self._start) * 1000, 3)

    def write(self) -> None:
        with open(self._path, "a", encoding="utf-8") as f:
            f.write(json.dumps(self._marks) + "\n")


def start() -> Phases | None:
    """This accept's marks, or None when the breakdown is off."""
    return None if _PATH is None else Phases(_PATH)
