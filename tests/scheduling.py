"""How `make test` hands the suite's files to its xdist workers (`--dist loadfile`).

A file is a unit of work, run whole on one worker; the browser tests and the
PostgreSQL tests are one unit each (`ONE_WORKER`). xdist's own order is by number of
tests, which put the long files of one test (the API fuzz run, the walkthroughs) last:
the suite then waited up to a minute on one worker while the others were idle. Here the
units go longest first, by the seconds each took in a profiled run (`file_seconds.json`),
so the last ones are short and the workers end together. A worker still busy for a while
(xdist queues a unit behind the running one) gets the shortest unit left instead: the
long ones wait for a worker that is about to be free.

A file not in the table counts `UNKNOWN_TEST_S` a test. To refresh the table:
`pytest -n 3 --dist loadfile --junitxml=/tmp/suite.xml` then
`python -m tests.scheduling /tmp/suite.xml`.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

from xdist.scheduler import LoadFileScheduling

# The browser tests run on one worker: two Chromiums with their gateways at once starved
# each other on 2 cores. The PostgreSQL tests (tests/pg/) share one cluster per worker,
# in two units: those that run `smsgw run` nodes as processes (each starts two or three
# nodes and times leases, windows and failovers: one at a time, never two side by side),
# and the rest, in-process; one unit of all of them was the suite's long pole.
ONE_WORKER = ("tests/browser/", "tests/pg/")
PG_NODES = "tests/pg/:nodes"
PG_NODE_FILES = frozenset(
    f"tests/pg/{name}.py"
    for name in (
        "test_routes_e2e",
        "test_nodes_e2e",
        "test_cluster_demo",
        "test_fence_unbind",
        "test_cluster_reads_e2e",
        "test_partition_netns",
        "test_mqtt_share_drain",
        "test_db_failover",
        "test_outbox_nodes_e2e",
        "test_hl7_writeback_kill",
    )
)
TABLE = Path(__file__).resolve().parent / "file_seconds.json"
UNKNOWN_TEST_S = 0.5  # the suite's mean
# A worker with more than this left of the units it holds is "busy" (see above).
BUSY_S = 15.0


def unit_of(nodeid: str) -> str:
    if nodeid.split("::", 1)[0] in PG_NODE_FILES:
        return PG_NODES
    for prefix in ONE_WORKER:
        if nodeid.startswith(prefix):
            return prefix
    return nodeid.split("::", 1)[0]


def load_table() -> dict[str, float]:
    try:
        table = json.loads(TABLE.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in table.items()}


class LongestFirst(LoadFileScheduling):  # type: ignore[misc]  # xdist is untyped
    def __init__(self, config: Any, log: Any = None) -> None:
        super().__init__(config, log)
        self.seconds = load_table()

    def _split_scope(self, nodeid: str) -> str:
        return unit_of(nodeid)

    def weight(self, unit: str, tests: int) -> float:
        return self.seconds.get(unit, UNKNOWN_TEST_S * tests)

    def _left(self, node: Any) -> float:
        left = 0.0
        for unit, tests in self.assigned_work.get(node, {}).items():
            pending = sum(1 for done in tests.values() if not done)
            if pending:
                left += self.weight(unit, len(tests)) * pending / len(tests)
        return left

    def _assign_work_unit(self, node: Any) -> None:
        ordered = sorted(self.workqueue.items(), key=lambda u: -self.weight(u[0], len(u[1])))
        self.workqueue.clear()
        self.workqueue.update(ordered)
        if self._left(node) > BUSY_S:
            self.workqueue.move_to_end(next(reversed(self.workqueue)), last=False)
        super()._assign_work_unit(node)


def table_from_junit(path: Path) -> dict[str, float]:
    """Seconds per unit from a junit XML report (setup, call and teardown)."""
    seconds: Counter[str] = Counter()
    for case in ET.parse(path).iter("testcase"):  # noqa: S314 - our own pytest report
        module = case.get("classname", "")
        # classname is the dotted module, then the class if any: the file is the part
        # that names an existing test_*.py.
        parts = module.split(".")
        for end in range(len(parts), 0, -1):
            candidate = "/".join(parts[:end]) + ".py"
            if (TABLE.parent.parent / candidate).is_file():
                seconds[unit_of(candidate)] += float(case.get("time", 0))
                break
    return {unit: round(s, 1) for unit, s in seconds.most_common()}


if __name__ == "__main__":
    table = table_from_junit(Path(sys.argv[1]))
    TABLE.write_text(json.dumps(table, indent=0, sort_keys=True) + "\n")
    print(f"{TABLE}: {len(table)} units, {sum(table.values()):.0f} s")
