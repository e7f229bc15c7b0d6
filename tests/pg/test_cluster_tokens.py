"""API tokens shared by every node (issue 18, point 4): a token made on node A works on
node B, a revocation on any node refuses it everywhere, exactly one of two racing
revocations wins, and the tokens the console writes into a node's own store are copied
up without ever un-revoking one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drivers.clock import SystemClock
from gateway.cluster.lease import Pool
from gateway.cluster.tokens import ClusterTokens
from gateway.store.audit_log import AuditTrail, audit_key
from gateway.store.store import Store
from gateway.tokens import TokenCache, create_token, split_token
from gateway.usecases.tokens import Tokens

SCOPES = frozenset({"send", "read"})


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(tmp_path / "gw.db", bytes(32))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def node(store: Store, pool: Pool) -> tuple[Tokens, TokenCache]:
    """One node's token use case and cache, on the shared table."""
    clock = SystemClock()
    shared = ClusterTokens(pool)
    cache = TokenCache(store, clock, 0.0, shared)
    audit = AuditTrail(store, audit_key(store.master_key), clock)
    return Tokens(store=store, audit=audit, clock=clock, forget=cache.forget, table=shared), cache


async def test_a_token_made_on_one_node_works_on_another_until_revoked_anywhere(
    pool: Pool, local: Store
) -> None:
    (a, a_cache), (b, b_cache) = node(local, pool), node(local, pool)
    token = await a.create("user:1", "ehr", SCOPES)
    got = await b_cache.verify(token.text)
    assert got is not None and got.id == token.id and got.scopes == SCOPES
    assert [t.id for t in await b.list()] == [token.id]
    assert await local.api_tokens.get(token.id) is None  # not in a node's own store
    # Two nodes revoke at once: one of them did it (one audited entry), not both.
    done = await asyncio.gather(b.revoke("user:2", token.id), a.revoke("user:1", token.id))
    assert sorted(done) == [False, True]
    assert await a_cache.verify(token.text) is None
    assert await b_cache.verify(token.text) is None
    wrong = f"smsgw_{token.id}_{'x' * 43}"
    assert split_token(wrong) is not None and await b_cache.verify(wrong) is None


async def test_the_consoles_tokens_are_copied_up_and_never_unrevoked(
    pool: Pool, local: Store
) -> None:
    clock = SystemClock()
    shared = ClusterTokens(pool)
    kept = await create_token(local, "console", SCOPES, clock)  # `smsgw token create`
    gone = await create_token(local, "old", SCOPES, clock)
    assert await shared.copy_local(local.reader) == 2
    assert await shared.copy_local(local.reader) == 0  # nothing new: nothing written
    cache = TokenCache(local, clock, 0.0, shared)
    assert await cache.verify(kept.text) is not None
    await local.api_tokens.revoke(gone.id, clock.time())  # `smsgw token revoke`, offline
    assert await shared.revoke(kept.id, clock.time())  # the panel, on another node
    assert await shared.copy_local(local.reader) == 1
    assert await cache.verify(gone.text) is None
    assert await cache.verify(kept.text) is None  # the local row, still active, is not
    assert (await shared.get(kept.id)).revoked_at is not None  # type: ignore[union-attr]
