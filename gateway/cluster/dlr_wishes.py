"""Kannel dlr-url wishes in the cluster's PostgreSQL (`DlrWishes`, cluster migration
13): SQLite's `kannel_dlr` rows beside the shared messages, so whichever node leads the
dlr-url lane reads the wish of a message accepted on any node.

The row is written in the accept's PostgreSQL transaction (`ClusterQueue.accept`'s
`extra`), sealed with the shared keyring as SQLite seals it; a wish sealed by a key
generation this node has not taken up yet (a rotation on another node since its last
heartbeat) makes it reload the keyring first, as the shared reads do.
"""

from __future__ import annotations

from typing import Any

from gateway.cluster.lease import Pool
from gateway.cluster.shared_keys import KeyringWatch
from gateway.integrations.dlr_wishes import RECEIVER_COLUMN, URL_COLUMN, DlrWish
from gateway.store.crypto import FieldCipher, header_generation
from gateway.store.writer import Statement

_INSERT = (
    "INSERT INTO kannel_dlr (message_id, url_ct, mask, receiver_ct, sender, username,"
    " created_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
)


class SharedDlrWishes:
    def __init__(self, pool: Pool, cipher: FieldCipher, keys: KeyringWatch | None = None) -> None:
        self._pool = pool
        self._cipher = cipher
        self._keys = keys

    def statement(self, message_id: str, wish: DlrWish, now: float) -> Statement:
        c = self._cipher
        return (
            _INSERT,
            (
                message_id,
                c.encrypt(wish.url, message_id, URL_COLUMN),
                wish.mask,
                c.encrypt(wish.receiver, message_id, RECEIVER_COLUMN),
                wish.sender,
                wish.username,
                now,
            ),
        )

    async def wish(self, message_id: str) -> DlrWish | None:
        row = await self._one(
            "SELECT url_ct, mask, receiver_ct, sender, username FROM kannel_dlr"
            " WHERE message_id = %s",
            (message_id,),
        )
        if row is None:
            return None
        url_ct, receiver_ct = bytes(row[0]), bytes(row[2])
        if self._keys is not None and not {
            header_generation(url_ct),
            header_generation(receiver_ct),
        } <= set(self._cipher.generations):
            await self._keys.check()
        c = self._cipher
        return DlrWish(
            c.decrypt(url_ct, message_id, URL_COLUMN),
            int(row[1]),
            c.decrypt(receiver_ct, message_id, RECEIVER_COLUMN),
            row[3],
            row[4],
        )

    async def carrier_id(self, message_id: str, route: str | None) -> str | None:
        row = await self._one(
            "SELECT carrier_id FROM message_events WHERE message_id = %s AND state = 'sent'"
            " AND carrier_id IS NOT NULL AND (route = %s OR %s::text IS NULL)"
            " ORDER BY seq LIMIT 1",
            (message_id, route, route),
        )
        return None if row is None else str(row[0]).split(",")[0]

    async def _one(self, sql: str, params: tuple[Any, ...]) -> Any:
        async with self._pool.connection() as conn:
            return await (await conn.execute(sql.encode(), params)).fetchone()
