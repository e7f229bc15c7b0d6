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

from collections.abc import Callable, Sequence
from typing import Any

import structlog
from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from gateway.cluster import keyring
from gateway.cluster.lease import Pool
from gateway.cluster.nodes import Incarnation
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
    """Takes up field key generations added (or retired) in the shared keyring, and
    says which one this incarnation seals under (`nodes.key_generation`, read by the
    retirement: `key_retire.py`)."""

    def __init__(
        self,
        pool: Pool,
        master: bytes,
        cipher: crypto.FieldCipher,
        me: Callable[[], Incarnation] | None = None,
    ) -> None:
        self._pool = pool
        self._master = master
        self._cipher = cipher
        self._me = me
        # The generation the cipher held at the previous heartbeat's check. One is
        # reported a heartbeat after it was installed at the latest: a value sealed
        # under the generation before has reached the database (or failed) by then.
        self._held: int | None = cipher.generation
        self._reported: tuple[int, int] | None = None  # (incarnation, generation)

    async def check(self, *, heartbeat: bool = False) -> int | None:
        """The newest generation if the cipher took up a change, else None. The
        heartbeat's check (`heartbeat`) also reports the generation in use; a read that
        met an unknown generation checks between heartbeats."""
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT generation FROM keyring WHERE purpose = 'field'")
            generations = {int(r[0]) for r in await cur.fetchall()}
            if not generations or generations == self._cipher.generations:
                if heartbeat:
                    if self._held == self._cipher.generation:
                        await self._report(conn, self._held)
                    self._held = self._cipher.generation
                return None
            keys = await keyring.load(conn, self._master)
        if self._cipher.generation not in generations:  # cut off through a retirement:
            # what it sealed since was refused by the database (`seal_guard.py`)
            log.warning("keyring_behind_retirement", generation=self._cipher.generation)
        self._cipher.install(keys.field)
        self._held = self._cipher.generation if heartbeat else None
        log.info("keyring_reloaded", generation=self._cipher.generation)
        return self._cipher.generation

    async def _report(self, conn: AsyncConnection[TupleRow], generation: int) -> None:
        if self._me is None:
            return
        me = self._me()
        if self._reported == (me.incarnation, generation):
            return
        await conn.execute(
            "UPDATE nodes SET key_generation = %s WHERE incarnation = %s",
            (generation, me.incarnation),
        )
        await conn.commit()
        self._reported = (me.incarnation, generation)
