"""The writer's connection leaves out the `message.status` rows no consumer takes before
SQLite sees them (`outbox_sql.write_status`), with the same result as the trigger that
`keep_only` installs, which stays in force on every other connection."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gateway.integrations.events import MESSAGE_INBOUND, MESSAGE_STATUS
from gateway.store.outbox_sql import keep_only, write_status
from gateway.store.schema import migrate

# message_events rows: (message_id, at, state, route, carrier_id, error_code, attempt)
EVENTS: list[tuple[Any, ...]] = [
    ("m1", 1.0, "sending", "r", None, None, 1),
    ("m1", 2.0, "sent", "r", "c1", None, 1),
    ("m1", 3.0, "delivered", "r", "c1", None, 1),
    ("m2", 4.0, "failed", "r", None, "smpp:0x0b", 1),
]


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn)
    return conn


def _states(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT state FROM outbox WHERE type = ? ORDER BY seq", (MESSAGE_STATUS,))
    return [r[0] for r in rows]


@pytest.mark.parametrize(
    ("types", "states", "expected"),
    [
        ({MESSAGE_STATUS}, {"delivered", "failed"}, ["delivered", "failed"]),
        ({MESSAGE_STATUS}, None, ["sending", "sent", "delivered", "failed"]),
        ({MESSAGE_INBOUND}, None, []),
        ((), None, []),
        ({MESSAGE_STATUS}, set(), []),
    ],
)
def test_rows_left_out_as_the_trigger_drops_them(
    tmp_path: Path, types: Any, states: set[str] | None, expected: list[str]
) -> None:
    writer = _connect(tmp_path / "a.db")
    keep_only(writer, types, states)
    # The filter alone, without the trigger behind it, gives the trigger's rows.
    writer.execute("DROP TRIGGER IF EXISTS temp.outbox_unwanted")
    write_status(writer, EVENTS)
    assert _states(writer) == expected
    # Another connection with the same trigger and no filter of its own (keep_only was
    # last called on the writer's): the trigger drops the same rows.
    other = _connect(tmp_path / "b.db")
    keep_only(other, types, states)
    keep_only(writer, types, states)
    write_status(other, EVENTS)
    assert _states(other) == expected
    writer.close()
    other.close()


def test_a_connection_never_told_writes_every_row(tmp_path: Path) -> None:
    writer = _connect(tmp_path / "a.db")
    keep_only(writer, ())  # the writer takes none
    fresh = _connect(tmp_path / "b.db")
    write_status(fresh, EVENTS)
    assert _states(fresh) == ["sending", "sent", "delivered", "failed"]
    writer.close()
    fresh.close()
