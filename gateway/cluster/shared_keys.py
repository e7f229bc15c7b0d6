"""A node's field keys from the shared keyring, and taking up a rotation while running.

At start the node reads the keyring in PostgreSQL (`keyring.py`: data keys wrapped by
the site's master key, as in SQLite) and builds its queue's cipher from it. A cluster
whose keyring is still empty (nodes started before any `smsgw store migrate` or
rotation) gets this node's own wrapped keys, copied as they are, by the first node to
start (under a table lock: two first nodes cannot both seed it). The node refuses to
start if the shared keyring is not the one its data directory holds (another blind-
index or root key): its numbers would not be found and its audit chain would not
verify under the cluster's key.

`KeyringWatch.check()` runs every heartbeat: when the shared keyring's field
generations differ from the cipher's (`smsgw keys rotate --postgresql` on any node),
it unwraps them again and installs them, so the next accept is sealed under the new
generation while every older ciphertext still opens (older generations stay until
retired). SQLite's keyring poll (`gateway/keys/rekey.py`) does the same locally.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog

from gateway.cluster import keyring
from gateway.cluster.lease import Pool
from gateway.store import crypto
from gateway.store.keyring_sql import Keys

log = structlog.get_logger("smsgw.cluster")

PROBE = "+10000000000"  # a number no one has: compares two blind-index keys


class KeyringMismatch(Exception):
    """The shared keyring is not the one this node's data directory holds."""


async def shared_keys(pool: Pool, master: bytes, local_rows: Sequence[Sequence[Any]]) -> Keys:
    """The cluster's keys, after seeding an empty shared keyring with `local_rows`
    (SQLite's `keyring` rows: purpose, generation, wrapped, created_at)."""
    async with pool.connection() as conn:
        async with conn.transaction():
            await conn.execute("LOCK TABLE keyring IN SHARE ROW EXCLUSIVE MODE")
            cur = await conn.execute("SELECT count(*) FROM keyring")
            row = await cur.fetchone()
            if row is not None and int(row[0]) == 0 and local_rows:
                async with conn.cursor() as c:
                    await c.executemany(
                        "INSERT INTO keyring (purpose, generation, wrapped, created_at)"
                        " VALUES (%s, %s, %s, %s)",
                        [(str(p), int(g), bytes(w), float(t)) for p, g, w, t in local_rows],
                    )
                log.info("cluster_keyring_seeded", keys=len(local_rows))
        return await keyring.load(conn, master)


def check_same(keys: Keys, local: crypto.FieldCipher, local_root: bytes) -> None:
    """Raise `KeyringMismatch` unless the shared blind-index and root keys are this
    node's own."""
    shared = crypto.FieldCipher(keys.field, keys.blind)
    if shared.blind_index(PROBE) != local.blind_index(PROBE) or keys.root != local_root:
        raise KeyringMismatch(
            "the cluster's keyring is not this data directory's (another blind-index or"
            " root key): start every node from a copy of the first node's data directory"
        )


class KeyringWatch:
    """Takes up field key generations added (or retired) in the shared keyring."""

    def __init__(self, pool: Pool, master: bytes, cipher: crypto.FieldCipher) -> None:
        self._pool = pool
        self._master = master
        self._cipher = cipher

    async def check(self) -> int | None:
        """The newest generation if the cipher took up a change, else None."""
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT generation FROM keyring WHERE purpose = 'field'")
            generations = {int(r[0]) for r in await cur.fetchall()}
            if not generations or generations == self._cipher.generations:
                return None
            keys = await keyring.load(conn, self._master)
        self._cipher.install(keys.field)
        log.info("keyring_reloaded", generation=self._cipher.generation)
        return self._cipher.generation
