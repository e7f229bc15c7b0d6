"""API bearer tokens: `smsgw_<id>_<secret>`, stored only as a SHA-256 of the secret.

The secret is 256 random bits, so a plain hash is enough (no slow KDF needed: there is
nothing to guess). The id part lets the store find the row without scanning.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from drivers.clock import Clock
from gateway.store.store import Store
from gateway.store.tokens_sql import TokenRecord, TokenStore

__all__ = [
    "SCOPES",
    "BadScope",
    "NewToken",
    "TokenCache",
    "TokenRecord",
    "create_token",
    "parse_scopes",
    "secret_hash",
    "split_token",
]

# send: send messages, cancel its own. read: read its own messages (numbers masked),
# inbound, queue, routes, metrics. admin: all of those on every token's messages, and
# pause/resume routes. phi: look messages up by number (GET /messages?to=), read
# numbers, bodies, senders and texts (include=phi), each read audited; never implied
# by admin. A message's reference is shown only to the token that sent it. urgent:
# send outside a purpose's quiet hours (`quiet_hours_override` with a reason, audited).
# consent: record opt-outs, opt-ins and written consents, set contact details, import
# consent lists (looking a number up or exporting also needs phi).
SCOPES = ("send", "read", "admin", "phi", "urgent", "consent")
_FORMAT = re.compile(r"^smsgw_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


class BadScope(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class NewToken:
    id: str
    secret: str

    @property
    def text(self) -> str:
        return f"smsgw_{self.id}_{self.secret}"


def parse_scopes(text: str) -> frozenset[str]:
    scopes = frozenset(s.strip() for s in text.split(",") if s.strip())
    unknown = scopes - set(SCOPES)
    if unknown or not scopes:
        raise BadScope(f"scopes must be a comma-separated subset of {', '.join(SCOPES)}")
    return scopes


def secret_hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def split_token(text: str) -> tuple[str, str] | None:
    m = _FORMAT.match(text)
    return (m.group(1), m.group(2)) if m else None


async def create_token(store: Store, name: str, scopes: frozenset[str], clock: Clock) -> NewToken:
    """Store a new token (not audited: `gateway/usecases/tokens.py` is what front ends call)."""
    return await add_token(store.api_tokens, name, scopes, clock)


async def add_token(table: TokenStore, name: str, scopes: frozenset[str], clock: Clock) -> NewToken:
    token = NewToken(secrets.token_hex(6), secrets.token_urlsafe(32))
    await table.add(token.id, name, secret_hash(token.secret), scopes, clock.time())
    return token


class TokenCache:
    """Verified tokens, remembered for a few seconds so a request costs no read.

    A revocation (CLI or API) takes effect within `ttl` seconds.
    """

    def __init__(
        self, store: Store, clock: Clock, ttl: float, table: TokenStore | None = None
    ) -> None:
        # On a cluster: the shared table, so a token made on any node works here.
        self._table: TokenStore = store.api_tokens if table is None else table
        self._clock = clock
        self._ttl = ttl
        self._cache: dict[str, tuple[float, TokenRecord | None]] = {}

    def cached(self, text: str) -> tuple[TokenRecord | None] | None:
        """`(record,)` when `text` was verified less than `ttl` ago (record None: it was
        refused), else None: the check a request makes without a coroutine."""
        hit = self._cache.get(text)
        if hit is not None and hit[0] > self._clock.monotonic():
            return (hit[1],)
        return None

    async def verify(self, text: str) -> TokenRecord | None:
        if (hit := self.cached(text)) is not None:
            return hit[0]
        now = self._clock.monotonic()
        parts = split_token(text)
        record = None
        if parts is not None:
            record = await self._table.by_hash(parts[0], secret_hash(parts[1]))
            if record is not None and record.revoked_at is not None:
                record = None
        if len(self._cache) > 10_000:
            self._cache.clear()
        if parts is not None:
            self._cache[text] = (now + self._ttl, record)
        return record

    def forget(self) -> None:
        self._cache.clear()
