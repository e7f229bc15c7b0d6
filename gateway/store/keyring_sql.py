"""The keyring table: data keys wrapped by the master key.

Purposes: `field` (one AES-256-GCM key per generation; the newest seals new writes,
older ones only open what is not re-encrypted yet), `blind` (the blind index's HMAC
key, generation 1, never rotated: see docs/ops/keys.md), and `root` (the key the audit
chain's and route credentials' MAC keys are derived from). Those were derived from the
master key itself before the master could be replaced, so the root is the store's
first master key: with no `root` row the root IS the master key (not stored, so the
master is never wrapped under itself); the first replacement writes the old master as
the `root` row, wrapped under the new one, and the audit chain stays verifiable.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass

from gateway.store import crypto


@dataclass(frozen=True, slots=True)
class Keys:
    field: dict[int, bytes]
    blind: bytes
    root: bytes


def load(conn: sqlite3.Connection, master: bytes, *, create: bool, now: float) -> Keys:
    """Unwrap every key; with `create`, make the missing ones (a new store, a store
    from before `root`)."""
    rows = conn.execute("SELECT purpose, generation, wrapped FROM keyring").fetchall()
    keys: dict[str, dict[int, bytes]] = {"field": {}, "blind": {}, "root": {}}
    for purpose, generation, wrapped in rows:
        keys[purpose][generation] = crypto.unwrap_key(master, purpose, generation, wrapped)
    for purpose in ("field", "blind"):
        if keys[purpose]:
            continue
        if not create:
            raise crypto.MasterKeyError(f"the keyring has no {purpose} key")
        key = os.urandom(crypto.KEY_BYTES)
        conn.execute(
            "INSERT INTO keyring VALUES (?, 1, ?, ?)",
            (purpose, crypto.wrap_key(master, purpose, 1, key), now),
        )
        keys[purpose][1] = key
    return Keys(keys["field"], keys["blind"][1], keys["root"].get(1, master))


def add_field_generation(conn: sqlite3.Connection, master: bytes, now: float) -> int:
    """A new field key, one generation above every one there ever was; its number."""
    (top,) = conn.execute(
        "SELECT coalesce(max(generation), 0) FROM keyring WHERE purpose = 'field'"
    ).fetchone()
    generation = int(top) + 1
    key = os.urandom(crypto.KEY_BYTES)
    conn.execute(
        "INSERT INTO keyring VALUES ('field', ?, ?, ?)",
        (generation, crypto.wrap_key(master, "field", generation, key), now),
    )
    return generation


def field_generations(conn: sqlite3.Connection) -> list[tuple[int, float]]:
    """(generation, created_at) of every field key, oldest first."""
    rows = conn.execute(
        "SELECT generation, created_at FROM keyring WHERE purpose = 'field' ORDER BY generation"
    ).fetchall()
    return [(int(g), float(at)) for g, at in rows]


def retire_field(conn: sqlite3.Connection, generation: int) -> None:
    conn.execute("DELETE FROM keyring WHERE purpose = 'field' AND generation = ?", (generation,))


def rewrap(conn: sqlite3.Connection, old: bytes, new: bytes) -> int:
    """Every key wrapped under `new` instead of `old` (call inside one transaction),
    the root kept (see above); how many keys `new` wraps now."""
    rows = conn.execute("SELECT purpose, generation, wrapped FROM keyring").fetchall()
    root = old
    for purpose, generation, wrapped in rows:
        key = crypto.unwrap_key(old, purpose, generation, wrapped)
        if purpose == "root":
            root = key
            continue
        conn.execute(
            "UPDATE keyring SET wrapped = ? WHERE purpose = ? AND generation = ?",
            (crypto.wrap_key(new, purpose, generation, key), purpose, generation),
        )
    count = sum(1 for r in rows if r[0] != "root")
    conn.execute("DELETE FROM keyring WHERE purpose = 'root'")
    if root == new:  # the first master key again: it is the root without a row
        return count
    conn.execute(
        "INSERT INTO keyring VALUES ('root', 1, ?, ?)",
        (crypto.wrap_key(new, "root", 1, root), time.time()),
    )
    return count + 1


def opens(conn: sqlite3.Connection, master: bytes) -> bool:
    """Whether `master` unwraps this store's keys (recovery after an interrupted swap)."""
    row = conn.execute(
        "SELECT purpose, generation, wrapped FROM keyring ORDER BY purpose LIMIT 1"
    ).fetchone()
    if row is None:
        return True
    try:
        crypto.unwrap_key(master, row[0], row[1], row[2])
    except crypto.MasterKeyError:
        return False
    return True
