"""A token's default purpose (`smsgw token create --purpose P`), in `token_purposes`.

Kept apart from the token code: a send without a purpose takes its token's, so a
client that sends one kind of message (the pharmacy's reminders, a Kannel user) need
not name it each time. A token's default is set once, when it is created; the cache
keeps what it read for the life of the process (a token's row never changes).
"""

from __future__ import annotations

import sqlite3

from gateway.consent.purposes import CLIENT_PURPOSES
from gateway.store.store import Store

NAMES = tuple(p.value for p in CLIENT_PURPOSES)


class BadPurpose(ValueError):
    pass


def check(purpose: str) -> str:
    if purpose not in NAMES:
        raise BadPurpose(f"purpose must be one of {', '.join(NAMES)}")
    return purpose


async def set_default(store: Store, token_id: str, purpose: str) -> None:
    check(purpose)

    def job(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO token_purposes (token_id, default_purpose) VALUES (?, ?)"
            " ON CONFLICT (token_id) DO UPDATE SET default_purpose = excluded.default_purpose",
            (token_id, purpose),
        )

    await store.writer.run(job)


async def read_default(store: Store, token_id: str) -> str | None:
    cur = await store.reader.execute(
        "SELECT default_purpose FROM token_purposes WHERE token_id = ?", (token_id,)
    )
    row = await cur.fetchone()
    return None if row is None else str(row[0])


class TokenPurposes:
    """Each token's default purpose, read once per token."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._known: dict[str, str | None] = {}

    def known(self, token_id: str | None) -> tuple[str | None] | None:
        """`(default,)` if it needs no read (read before, or no token), else None."""
        if token_id is None:
            return (None,)
        if token_id in self._known:
            return (self._known[token_id],)
        return None

    async def default_for(self, token_id: str | None) -> str | None:
        if token_id is None:
            return None
        if token_id not in self._known:
            self._known[token_id] = await read_default(self._store, token_id)
        return self._known[token_id]
