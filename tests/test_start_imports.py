"""`smsgw run` imports no more than a start on SQLite runs (issue 16, point 5: start-up).

Each module imported is CPU of every start, before ready: the commands' own tools (backup,
the simulators, the demo's seeds, python-hl7's MLLP server) and the optional backends
(PostgreSQL, LDAP, MQTT) are imported where they are used, not by `gateway.cli`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

NOT_FOR_A_SQLITE_START = (
    "psycopg",  # [cluster]
    "gateway.cluster.node",
    "ldap3",  # [directory]
    "aiomqtt",  # [mqtt]
    "drivers.smpp.simulator",  # smsgw simulate, the embedded default's demo
    "drivers.modem.emulator",
    "gateway.backup.ops",  # smsgw backup, restore
    "gateway.backup.restore",
    "hl7.mllp",  # smsgw hl7 listen
    "gateway.campaigns.demo",  # the embedded default's seeds
    "gateway.links.demo",
    "gateway.reminders.demo",
    "gateway.surveys.demo",
)


def test_the_cli_imports_nothing_a_sqlite_start_does_not_run() -> None:
    code = "import sys, json, gateway.cli; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    imported = set(json.loads(out))
    assert "gateway.app" in imported  # the check itself sees what it should
    assert sorted(imported.intersection(NOT_FOR_A_SQLITE_START)) == []
