"""API tokens: list, create, revoke; each change audited with ids only.

The panel's token page, `smsgw token` and `smsgw init` call these; the token's
secret is returned once, by `create`, and never stored or logged. A revocation
reaches a running gateway's token cache at once (`forget`) and other processes
within `http.token_cache_seconds`.
"""

from __future__ import annotations

from collections.abc import Callable

from drivers.clock import Clock
from gateway.consent import token_purposes
from gateway.store.store import Store
from gateway.store.tokens_sql import TokenStore
from gateway.tokens import NewToken, TokenRecord, add_token
from gateway.usecases.audit import AuditSink

__all__ = ["NewToken", "TokenRecord", "Tokens"]


class Tokens:
    def __init__(
        self,
        *,
        store: Store,
        audit: AuditSink,
        clock: Clock,
        forget: Callable[[], None] = lambda: None,
        table: TokenStore | None = None,
    ) -> None:
        self._store = store
        # On a cluster: the shared table (`gateway/cluster/tokens.py`).
        self._table: TokenStore = store.api_tokens if table is None else table
        self._audit = audit
        self._clock = clock
        self._forget = forget

    async def list(self) -> list[TokenRecord]:
        """Every token, revoked ones too, oldest first (no secret, no hash)."""
        return await self._table.all()

    async def names(self) -> dict[str, str]:
        """Token id -> name, for showing who acted in the audit trail."""
        return {t.id: t.name for t in await self.list()}

    async def create(
        self, actor: str, name: str, scopes: frozenset[str], purpose: str | None = None
    ) -> NewToken:
        """A new token; its text (with the secret) is in the answer and nowhere else.
        `purpose` is the one its sends take when they name none."""
        if purpose is not None:
            token_purposes.check(purpose)
        token = await add_token(self._table, name, scopes, self._clock)
        if purpose is not None:
            await token_purposes.set_default(self._store, token.id, purpose)
        details = {"scopes": ",".join(sorted(scopes))}
        if purpose is not None:
            details["purpose"] = purpose
        await self._audit.record(actor, "token_created", "token", token.id, **details)
        return token

    async def revoke(self, actor: str, token_id: str) -> bool:
        """True if this call revoked an active token (audited); False if there is no
        such token or it was already revoked (nothing written)."""
        if not await self._table.revoke(token_id, self._clock.time()):
            return False
        self._forget()
        await self._audit.record(actor, "token_revoked", "token", token_id)
        return True
