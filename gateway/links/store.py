"""Links in SQLite: named links, the per-message tokens (by hash), and the clicks.

`links.destination` is kept in clear: it is a shared page from the allowlist, the same
for every recipient, never a person's data. Clicks go to `link_clicks` (migration 24,
read by the analytics), one row each, `human` 1 only for a person; `link_id` is the
named link's id, `message_id` the message the token was minted for.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.links.placeholders import Minted, NamedLink
from gateway.store.writer import Statement

ALL_SQL = (
    "SELECT id, name, destination, expires_at, created_at, created_by FROM links ORDER BY name"
)
ONE_SQL = "SELECT id, name, destination, expires_at, created_at, created_by FROM links WHERE id = ?"
TARGET_SQL = (
    "SELECT t.link_id, t.message_id, t.expires_at, l.destination, l.expires_at"
    " FROM link_tokens t JOIN links l ON l.id = t.link_id WHERE t.token_hash = ?"
)
# One pass over a link's clicks: people are the messages with a human click.
COUNTS_SQL = (
    "SELECT link_id, sum(human), sum(1 - human), count(DISTINCT CASE WHEN human = 1"
    " THEN message_id END) FROM link_clicks GROUP BY link_id"
)
COUNTS_OF_SQL = (
    "SELECT link_id, sum(human), sum(1 - human), count(DISTINCT CASE WHEN human = 1"
    " THEN message_id END) FROM link_clicks WHERE link_id = ? GROUP BY link_id"
)
CLASSES_OF_SQL = (
    "SELECT agent_class, count(*) FROM link_clicks WHERE link_id = ?"
    " GROUP BY agent_class ORDER BY agent_class"
)
_INSERT_MINTED = (
    "INSERT INTO link_tokens (token_hash, link_id, message_id, created_at, expires_at)"
    " VALUES (?, ?, ?, ?, ?)"
)
_INSERT_CLICK = (
    "INSERT INTO link_clicks (link_id, message_id, at, human, agent_class) VALUES (?, ?, ?, ?, ?)"
)


@dataclass(frozen=True, slots=True)
class Counts:
    human: int = 0  # clicks by people
    bots: int = 0  # previews, scanners, crawlers, prefetches, HEADs, scripts
    people: int = 0  # messages whose link a person followed


@dataclass(frozen=True, slots=True)
class Target:
    """What a token leads to, as the redirect listener needs it."""

    link_id: str
    message_id: str
    expires_at: float  # the token's (the earlier of its own and its link's)
    destination: str


def link_of(row: Sequence[object]) -> NamedLink:
    id_, name, destination, expires_at, created_at, created_by = row
    return NamedLink(
        str(id_),
        str(name),
        str(destination),
        None if expires_at is None else float(expires_at),  # type: ignore[arg-type]  # REAL
        float(created_at),  # type: ignore[arg-type]  # REAL
        str(created_by),
    )


def counts_of(rows: Sequence[Sequence[object]]) -> dict[str, Counts]:
    return {
        str(r[0]): Counts(int(r[1] or 0), int(r[2] or 0), int(r[3] or 0))  # type: ignore[call-overload]
        for r in rows
    }


def target_of(row: Sequence[object] | None) -> Target | None:
    if row is None:
        return None
    link_id, message_id, expires_at, destination, link_expires = row
    ends = float(expires_at)  # type: ignore[arg-type]  # REAL
    if link_expires is not None:
        ends = min(ends, float(link_expires))  # type: ignore[arg-type]  # REAL
    return Target(str(link_id), str(message_id), ends, str(destination))


def insert_link(
    conn: sqlite3.Connection,
    name: str,
    destination: str,
    expires_at: float | None,
    now: float,
    actor: str,
) -> NamedLink | None:
    """A new named link; None if the name is taken (one statement: no race)."""
    link = NamedLink("lnk_" + secrets.token_hex(8), name, destination, expires_at, now, actor)
    cur = conn.execute(
        "INSERT INTO links (id, name, destination, expires_at, created_at, created_by)"
        " VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (name) DO NOTHING",
        (link.id, name, destination, expires_at, now, actor),
    )
    return link if cur.rowcount == 1 else None


def token_statements(minted: Sequence[Minted]) -> list[Statement]:
    return [
        (_INSERT_MINTED, (m.token_hash, m.link_id, m.message_id, m.created_at, m.expires_at))
        for m in minted
    ]


def prune(conn: sqlite3.Connection, before: float) -> int:
    """Forget tokens that expired before `before`: they answer as unknown ones do."""
    return conn.execute("DELETE FROM link_tokens WHERE expires_at < ?", (before,)).rowcount


def insert_click(
    conn: sqlite3.Connection, target: Target, at: float, human: bool, agent_class: str
) -> None:
    conn.execute(_INSERT_CLICK, (target.link_id, target.message_id, at, int(human), agent_class))
