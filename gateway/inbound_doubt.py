"""Inbound messages the carrier will send again: the id each was stored under, if it was.

A message in one piece carries nothing the carrier keeps the same when it delivers it
again (SMPP's deliver_sm has no message id), so a delivery we did not acknowledge
(ESME_RX_T_APPN) after our attempt to store it committed after all (the database's
answer to COMMIT lost when it went away; the commit done, then the step after it
failed) came back as a second message. The sink now keeps, for each delivery it did
not acknowledge, the inbound id that attempt used, under a digest of what the carrier
will send again (route, sender, recipient, text); the next delivery with that digest
is stored under the same id, and a store that already has that id stores nothing
(`insert_inbound(..., again=True)`). Two genuinely separate messages with the same
text from one sender are still two: each not acknowledged delivery leaves one id, and
each later delivery takes one (the oldest first).

In memory only, bounded and forgotten after `KEEP_SECONDS`: a node that restarts
meanwhile, or a delivery the carrier sends to another node, is stored again as before.
The digest is keyed with a random key of this process; nothing here is logged.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict, deque

KEEP_SECONDS = 86_400.0  # a carrier's validity period is a day or two at most
MAX_KEPT = 10_000  # ids kept at most (the oldest go first)


class InDoubt:
    def __init__(self, keep_seconds: float = KEEP_SECONDS, max_kept: int = MAX_KEPT) -> None:
        self._key = os.urandom(32)
        self._keep = keep_seconds
        self._max = max_kept
        self._ids: OrderedDict[bytes, deque[tuple[str, float]]] = OrderedDict()
        self._count = 0

    def digest(self, route: str, sender: str, recipient: str | None, body: str) -> bytes:
        mac = hashlib.blake2b(key=self._key, digest_size=16)
        for value in (route, sender, recipient or "", body):
            data = value.encode("utf-8", "surrogatepass")
            mac.update(len(data).to_bytes(4, "big") + data)
        return mac.digest()

    def take(self, digest: bytes, now: float) -> str | None:
        """The id of the oldest delivery with this digest not acknowledged, forgotten
        here; None if there is none."""
        ids = self._ids.get(digest)
        while ids:
            inbound_id, at = ids.popleft()
            self._count -= 1
            if at + self._keep > now:
                if not ids:
                    del self._ids[digest]
                return inbound_id
        self._ids.pop(digest, None)
        return None

    def put(self, digest: bytes, inbound_id: str, now: float) -> None:
        """A delivery with this digest, tried under `inbound_id`, not acknowledged."""
        self._ids.setdefault(digest, deque()).append((inbound_id, now))
        self._ids.move_to_end(digest)
        self._count += 1
        while self._count > self._max:
            oldest, ids = next(iter(self._ids.items()))
            ids.popleft()
            self._count -= 1
            if not ids:
                del self._ids[oldest]

    def __len__(self) -> int:
        return self._count
