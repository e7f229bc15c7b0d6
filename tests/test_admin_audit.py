"""The audit trail: hash chain keyed by the master key, tamper detection, triggers."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager

import pytest

from gateway.app import Gateway
from gateway.store.audit_log import GENESIS, AuditTrail, canonical, chain_hash
from tests.conftest import CANARY_BODY, CANARY_DIGITS, GatewayFactory


async def _trail(open_gateway: GatewayFactory, n: int = 5) -> Gateway:
    gw = await open_gateway()
    for i in range(n):
        await gw.audit.record("user:abc", "route_paused", "route", f"r{i}", attempt=i)
    return gw


@contextmanager
def raw(gw: Gateway, *, drop_triggers: bool = True) -> Iterator[sqlite3.Connection]:
    """The database file as an attacker with write access to it sees it."""
    with closing(sqlite3.connect(gw.config.db_path, isolation_level=None)) as conn:
        if drop_triggers:
            conn.execute("DROP TRIGGER audit_log_no_update")
            conn.execute("DROP TRIGGER audit_log_no_delete")
        yield conn


async def test_entries_chain_and_verify(open_gateway: GatewayFactory) -> None:
    gw = await _trail(open_gateway)
    entries = list(reversed(await gw.audit.entries()))
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    assert entries[2].detail_map() == {"attempt": 2}
    result = await gw.audit.verify()
    assert result.ok and result.entries == 5 and result.head_seq == 5
    assert result.head_hash == entries[-1].hash


async def test_concurrent_records_get_consecutive_seqs(open_gateway: GatewayFactory) -> None:
    import asyncio

    gw = await open_gateway()
    seqs = await asyncio.gather(*(gw.audit.record("system", "x", None, None) for _ in range(50)))
    assert sorted(seqs) == list(range(1, 51))
    assert (await gw.audit.verify()).ok


async def test_triggers_refuse_update_and_delete(open_gateway: GatewayFactory) -> None:
    gw = await _trail(open_gateway, 2)
    with raw(gw, drop_triggers=False) as conn:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE audit_log SET actor = 'user:x' WHERE seq = 1")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM audit_log WHERE seq = 2")


async def test_an_edited_row_is_found(open_gateway: GatewayFactory) -> None:
    gw = await _trail(open_gateway)
    with raw(gw) as conn:
        conn.execute("UPDATE audit_log SET actor = 'user:someone-else' WHERE seq = 3")
    result = await gw.audit.verify()
    assert not result.ok and result.first_bad_seq == 3
    assert "changed" in (result.reason or "")


async def test_a_deleted_row_is_found(open_gateway: GatewayFactory) -> None:
    gw = await _trail(open_gateway)
    with raw(gw) as conn:
        conn.execute("DELETE FROM audit_log WHERE seq = 2")
    result = await gw.audit.verify()
    assert not result.ok and result.first_bad_seq == 2
    assert "missing" in (result.reason or "")


async def test_reordered_rows_are_found(open_gateway: GatewayFactory) -> None:
    gw = await _trail(open_gateway)
    with raw(gw) as conn:
        conn.execute("UPDATE audit_log SET seq = 100 WHERE seq = 2")
        conn.execute("UPDATE audit_log SET seq = 2 WHERE seq = 4")
        conn.execute("UPDATE audit_log SET seq = 4 WHERE seq = 100")
    result = await gw.audit.verify()
    assert not result.ok and result.first_bad_seq == 2


async def test_a_recomputed_chain_without_the_key_is_found(open_gateway: GatewayFactory) -> None:
    """Someone with the database but not the master key edits a row and re-hashes the
    chain from there with a key of their own: the first re-hashed entry fails."""
    gw = await _trail(open_gateway)
    forged_key = b"\x00" * 32
    with raw(gw) as conn:
        conn.execute("UPDATE audit_log SET target_id = 'r-other' WHERE seq = 3")
        prev = conn.execute("SELECT hash FROM audit_log WHERE seq = 2").fetchone()[0]
        for row in conn.execute("SELECT * FROM audit_log WHERE seq >= 3 ORDER BY seq").fetchall():
            digest = chain_hash(forged_key, prev, canonical(*row[:7]))
            conn.execute(
                "UPDATE audit_log SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, row[0])
            )
            prev = digest
    result = await gw.audit.verify()
    assert not result.ok and result.first_bad_seq == 3


async def test_an_inserted_row_is_found(open_gateway: GatewayFactory) -> None:
    gw = await _trail(open_gateway, 3)
    with raw(gw) as conn:
        conn.execute("UPDATE audit_log SET seq = seq + 100 WHERE seq >= 2")
        conn.execute("UPDATE audit_log SET seq = seq - 99 WHERE seq >= 100")
        head = conn.execute("SELECT hash FROM audit_log WHERE seq = 1").fetchone()[0]
        conn.execute(
            "INSERT INTO audit_log VALUES (2, 1.0, 'console', 'user_created', 'user', 'evil',"
            " '{}', ?, ?)",
            (head, "f" * 64),
        )
    result = await gw.audit.verify()
    assert not result.ok and result.first_bad_seq == 2


async def test_a_different_master_key_cannot_verify(open_gateway: GatewayFactory) -> None:
    gw = await _trail(open_gateway, 2)
    other = AuditTrail(gw.store, b"k" * 32, gw.clock)
    result = await other.verify()
    assert not result.ok and result.first_bad_seq == 1


async def test_detail_holds_ids_only(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway()
    with pytest.raises(TypeError):
        await gw.audit.record("system", "x", None, None, numbers=["+1202"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="too long"):
        await gw.audit.record("system", "x", None, None, body=CANARY_BODY * 10)
    with pytest.raises(ValueError, match="plain name"):
        await gw.audit.record("system", "Reveal Body!", None, None)
    assert await gw.audit.entries() == []


async def test_route_pause_through_the_api_is_audited(open_gateway: GatewayFactory) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from gateway.http_app import build_app
    from gateway.tokens import create_token

    gw = await open_gateway()
    token = await create_token(gw.store, "ops", frozenset({"admin"}), gw.clock)
    async with TestClient(TestServer(build_app(gw))) as client:
        for action in ("pause", "resume"):
            r = await client.post(
                f"/api/v1/routes/main/{action}", headers={"Authorization": f"Bearer {token.text}"}
            )
            assert r.status == 200
    entries = list(reversed(await gw.audit.entries()))
    assert [(e.actor, e.action, e.target_id) for e in entries] == [
        (f"token:{token.id}", "route_paused", "main"),
        (f"token:{token.id}", "route_resumed", "main"),
    ]
    data = gw.config.db_path.read_bytes()
    assert CANARY_DIGITS.encode() not in data


async def test_repeats_in_a_window_are_one_entry_and_a_count(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway()
    window = 900.0
    record = gw.audit.record_repeated
    first = await record(window, "anonymous", "login_failed", "user", None, source="10.0.0.9")
    assert first == 1
    for _ in range(49):
        counted = await record(window, "anonymous", "login_failed", "user", None, source="10.0.0.9")
        assert counted is None
    # Anything that differs is its own entry; plain records go on as before.
    other = await record(window, "anonymous", "login_failed", "user", None, source="10.0.0.10")
    assert other == 2
    assert await gw.audit.record("system", "account_locked", "user", "u1") == 3
    gw.clock.advance(window - 1)
    assert await gw.audit.close_repeats() == 0
    gw.clock.advance(1)
    assert await gw.audit.close_repeats() == 2
    entries = await gw.audit.entries()
    # The single failure from .10 needs no count; the 50 from .9 get one.
    actions = ["repeated", "account_locked", "login_failed", "login_failed"]
    assert [e.action for e in entries] == actions
    closing = entries[0]
    assert (closing.actor, closing.target_kind, closing.target_id) == (
        "anonymous",
        "audit_log",
        "1",
    )
    assert closing.detail_map() == {
        "action": "login_failed",
        "count": 50,
        "last_at": int(entries[-1].at),
    }
    assert (await gw.audit.verify()).ok
    with raw(gw, drop_triggers=False) as conn:
        assert conn.execute("SELECT count(*) FROM audit_repeats").fetchone()[0] == 0


async def test_a_repeat_after_its_window_closes_it_and_opens_the_next(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    for _ in range(3):
        await gw.audit.record_repeated(60.0, "user:abc", "totp_failed", "user", "abc")
    gw.clock.advance(60)
    seq = await gw.audit.record_repeated(60.0, "user:abc", "totp_failed", "user", "abc")
    entries = list(reversed(await gw.audit.entries()))
    assert [(e.seq, e.action) for e in entries] == [
        (1, "totp_failed"),
        (2, "repeated"),
        (3, "totp_failed"),
    ]
    assert seq == 3 and entries[1].detail_map()["count"] == 3
    assert (await gw.audit.verify()).ok


async def test_parallel_repeats_are_counted_exactly(open_gateway: GatewayFactory) -> None:
    import asyncio

    gw = await open_gateway()
    seqs = await asyncio.gather(
        *(gw.audit.record_repeated(60.0, "anonymous", "login_throttled") for _ in range(500))
    )
    assert [s for s in seqs if s is not None] == [1]
    gw.clock.advance(60)
    await gw.audit.close_repeats()
    entries = await gw.audit.entries()
    assert len(entries) == 2 and entries[0].detail_map()["count"] == 500
