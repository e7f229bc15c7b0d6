"""The messages whose text is due for removal, found without an index of the rows whose
text is kept (migration 39 dropped `messages_text_kept`: every accept wrote a page of
it, bench/README.md "Disk writes per message").

The sweep walks the index by state and creation time (`messages_state`, each state's
range merged in creation order; migration 41 dropped the index by creation time alone,
which cost every accept a page) from a floor kept per purpose in `retention_floors`:
every message of that purpose at or before the floor's (created_at, id) has had its
text removed or is listed in `retention_later`. Purpose `''` is a message with none;
`'*'` is the floor of every purpose without a row of its own. A group of purposes walks
from the lowest floor of its members up to its cutoff and then raises its members'
floors to where it stopped, so a purpose kept for years holds back only its own floor,
and each run walks the messages created since the last run, not years of removed texts.

A message the walk passes that is not due yet (still waiting, or changed since the
cutoff) goes to `retention_later`, a handful of rows each run reads first. A message
inserted at or below its purpose's floor (a clock set back) lowers that floor, by a
trigger (migration 39), so it is walked like any other.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from gateway.models import State

ANY = "*"  # the floor of every purpose without a row of its own
FINISHED = ("sent", "delivered", "failed", "expired", "cancelled", "blocked")
FINISHED_SQL = "state IN (" + ", ".join(f"'{s}'" for s in FINISHED) + ")"
Floor = tuple[float, str]  # (created_at, id): rows at or before it are handled

_COLUMNS = "id, created_at, coalesce(purpose, ''), state, updated_at, redacted"
_RANGE = "(created_at, id) > (?1, ?2) AND created_at < ?3"


def _walk_sql() -> str:
    """Every state's range of `messages_state` (by state, then creation time), merged in
    (created_at, id) order: ?1, ?2 the position, ?3 the cutoff, ?4 the batch."""
    arms = [
        f"SELECT {_COLUMNS} FROM messages WHERE state = '{s.value}' AND {_RANGE}"  # noqa: S608 - our states
        for s in State
    ]
    return " UNION ALL ".join(arms) + " ORDER BY created_at, id LIMIT ?4"


_WALK = _walk_sql()


def _floors(conn: sqlite3.Connection) -> dict[str, Floor]:
    rows = conn.execute("SELECT purpose, created_at, id FROM retention_floors").fetchall()
    return {str(p): (float(c), str(i)) for p, c, i in rows}


def members(floors: dict[str, Floor], purposes: tuple[str, ...], rest: bool) -> list[str]:
    """The floors a group walks from: its named purpose, or (the rest) every purpose
    with a floor of its own that no group names, and `'*'`."""
    if not rest:
        return list(purposes)
    return [p for p in floors if p not in purposes]


def start(floors: dict[str, Floor], keys: Iterable[str]) -> Floor:
    default = floors.get(ANY, (0.0, ""))
    return min((floors.get(k, default) for k in keys), default=default)


def in_group(purpose: str, purposes: tuple[str, ...], rest: bool) -> bool:
    return purpose not in purposes if rest else purpose in purposes


def _due(where: str) -> str:
    """A message of the group (`where` on `purpose`) whose text is kept and due: its two
    `?` are the time before which it was created and last changed."""
    return f"redacted = 0 AND created_at < ? AND updated_at < ? AND {FINISHED_SQL} AND ({where})"


def count_due(
    conn: sqlite3.Connection,
    where: str,
    params: tuple[Any, ...],
    purposes: tuple[str, ...],
    rest: bool,
    before: float,
) -> int:
    """Messages of the group (`where` on `purpose`) whose text is kept and due before
    `before`: those waiting in `retention_later` and those past the group's floor."""
    due = _due(where)
    (later,) = conn.execute(
        f"SELECT count(*) FROM retention_later l JOIN messages m ON m.id = l.id WHERE {due}",  # noqa: S608 - our conditions
        (before, before, *params),
    ).fetchone()
    floors = _floors(conn)
    fc, fid = start(floors, members(floors, purposes, rest))
    (walked,) = conn.execute(
        f"SELECT count(*) FROM messages INDEXED BY messages_state"  # noqa: S608 - our conditions
        f" WHERE (created_at, id) > (?, ?) AND {due}"
        " AND id NOT IN (SELECT id FROM retention_later)",
        (fc, fid, before, before, *params),
    ).fetchone()
    return int(later) + int(walked)


def due_ids(
    conn: sqlite3.Connection,
    where: str,
    params: tuple[Any, ...],
    purposes: tuple[str, ...],
    rest: bool,
    before: float,
    limit: int,
) -> list[str]:
    """Up to `limit` ids of the group's messages whose text is due before `before`,
    the waiting list first; the group's floors are raised past what was walked and
    what is not due yet is listed to be looked at again."""
    due = _due(where)
    ids = [
        str(r[0])
        for r in conn.execute(
            f"SELECT l.id FROM retention_later l JOIN messages m ON m.id = l.id"  # noqa: S608 - our conditions
            f" WHERE {due} LIMIT ?",
            (before, before, *params, limit),
        )
    ]
    conn.executemany("DELETE FROM retention_later WHERE id = ?", [(i,) for i in ids])
    floors = _floors(conn)
    keys = members(floors, purposes, rest)
    position = start(floors, keys)
    later: list[tuple[str]] = []
    while len(ids) < limit:
        chunk = limit - len(ids)  # at most `limit` ids in all
        rows = conn.execute(_WALK, (*position, before, chunk)).fetchall()
        for mid, _created_at, purpose, state, updated_at, redacted in rows:
            if redacted or not in_group(purpose, purposes, rest):
                continue
            if state in FINISHED and updated_at < before:
                ids.append(mid)
            else:
                later.append((mid,))
        if len(rows) < chunk:  # the walk reached the cutoff: all before it handled
            position = (before, "")
            break
        position = (float(rows[-1][1]), str(rows[-1][0]))
    conn.executemany("INSERT OR IGNORE INTO retention_later (id) VALUES (?)", later)
    _raise(conn, floors, keys, position)
    return list(dict.fromkeys(ids))  # a floor lowered may walk a waiting one again


def _raise(
    conn: sqlite3.Connection, floors: dict[str, Floor], keys: list[str], position: Floor
) -> None:
    conn.executemany(
        "INSERT INTO retention_floors (purpose, created_at, id) VALUES (?, ?, ?)"
        " ON CONFLICT (purpose) DO UPDATE SET created_at = excluded.created_at, id = excluded.id",
        [(k, *position) for k in keys if floors.get(k, floors.get(ANY, (0.0, ""))) < position],
    )


def forget_done(conn: sqlite3.Connection) -> None:
    """Waiting-list rows whose text went another way (an erasure) or whose message is gone."""
    conn.execute(
        "DELETE FROM retention_later WHERE NOT EXISTS"
        " (SELECT 1 FROM messages m WHERE m.id = retention_later.id AND m.redacted = 0)"
    )
