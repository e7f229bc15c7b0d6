"""The batch accept's own steps (issue 16, batch accepts): a batch's ids drawn together,
a message's two fields sealed in one call, and its messages handed to the scheduler in
one call, each the same as the step it replaces."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.intake import SendRequest
from gateway.models import IdGenerator, encode_id, encode_run
from gateway.store import writer as writer_mod
from gateway.store.crypto import NONCE_BYTES, DecryptError, FieldCipher, generation_prefix
from gateway.store.writer import GroupCommitWriter
from gateway.tokens import create_token
from gateway.usecases import Caller
from tests.conftest import GatewayFactory


@given(st.integers(min_value=0, max_value=(1 << 128) - 1 - 600), st.integers(0, 600))
def test_a_run_of_ids_is_each_id_encoded(first: int, count: int) -> None:
    assert encode_run(first, count) == [encode_id(first + i) for i in range(count)]


def test_ids_drawn_together_follow_and_precede_single_ones() -> None:
    ids = IdGenerator()
    drawn = [ids.new(), *ids.new_many(700), ids.new(), *ids.new_many(3), *ids.new_many(0)]
    assert len(drawn) == 705
    assert drawn == sorted(drawn)
    assert len(set(drawn)) == len(drawn)


@given(st.text(max_size=20), st.text(max_size=200), st.text(min_size=1, max_size=26))
def test_a_recipient_and_body_sealed_together_open_as_fields_of_the_row(
    to: str, body: str, row_id: str
) -> None:
    cipher = FieldCipher({1: b"f" * 32}, b"k" * 32)
    to_ct, body_ct = cipher.encrypt_to_and_body(row_id, to, body)
    assert cipher.decrypt(to_ct, row_id, "to") == to
    assert cipher.decrypt(body_ct, row_id, "body") == body
    for blob, other in ((to_ct, "body"), (body_ct, "to")):
        with pytest.raises(DecryptError):
            cipher.decrypt(blob, row_id, other)
    start = len(generation_prefix(1))
    assert to_ct[start : start + NONCE_BYTES] != body_ct[start : start + NONCE_BYTES]


async def test_a_batch_queues_each_message_once_in_its_place(
    open_gateway: GatewayFactory,
) -> None:
    """Queued, critical, scheduled and refused items in one batch: the scheduler holds
    each accepted one as a single send would put it, ids rise in the items' order."""
    gw = await open_gateway()
    token = await create_token(gw.store, "t", frozenset({"send"}), gw.clock)
    record = await gw.store.api_tokens.get(token.id)
    assert record is not None
    later = datetime.fromtimestamp(gw.clock.time() + 3600, UTC)
    items = [
        SendRequest(to="+12025550100", body="a"),
        SendRequest(to="+12025550101", body="b", priority="critical"),
        SendRequest(to="not a number", body="c"),
        SendRequest(to="+12025550102", body="d", send_at=later),
        SendRequest(to="+12025550103", body="e"),
    ]
    before = dict(gw.metrics.accepted.counts)
    answer = await gw.usecases.messages.accept_batch(Caller.for_token(record), items)
    assert (answer.accepted, answer.rejected) == (4, 1)
    refused = answer.results[2]
    assert isinstance(refused, dict)
    assert refused["error"]["field"] == "messages[2].to"
    ids = [r.id for r in answer.results if not isinstance(r, dict)]
    assert ids == sorted(ids)
    assert [r.status for r in answer.results if not isinstance(r, dict)] == [
        "queued",
        "queued",
        "scheduled",
        "queued",
    ]
    depths = gw.scheduler.depths()
    assert depths["queued"] == {"critical": 1, "high": 0, "normal": 2, "bulk": 0}
    assert depths["scheduled"] == {"critical": 0, "high": 0, "normal": 1, "bulk": 0}
    counted = {p: n - before[p] for p, n in gw.metrics.accepted.counts.items()}
    assert sum(counted.values()) == 4


async def test_a_bulk_transaction_checkpoints_more_rarely_than_a_quiet_one(tmp_path: Path) -> None:
    """While work waits behind the commits the writer checkpoints every 1,000 frames,
    but a transaction of many rows (a batch request's) sets 8,000: at 1,000 each such
    commit would checkpoint (`test_write_budget.py` for the rest of the rule)."""
    w = GroupCommitWriter(tmp_path / "w.db")
    await w.open()

    async def every() -> int:
        return int(
            await w.call_outside_transaction(
                lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
            )
        )

    try:
        await w.run(lambda c: c.execute("CREATE TABLE t (v)"))
        rows = [("INSERT INTO t VALUES (?)", (i,)) for i in range(writer_mod.BULK_TRANSACTION_ROWS)]
        first = w.insert([("INSERT INTO t VALUES (?)", (-1,))])
        await asyncio.sleep(0)  # its transaction is in flight ...
        behind = w.insert(rows)  # ... and this one waits behind it: load, but a bulk one
        await asyncio.gather(first, behind)
        assert await every() == writer_mod.WAL_AUTOCHECKPOINT_BULK == 8000
        first = w.insert([("INSERT INTO t VALUES (?)", (-2,))])
        await asyncio.sleep(0)
        behind = w.insert(rows[:1])  # a small one behind: short checkpoints again
        await asyncio.gather(first, behind)
        assert await every() == writer_mod.WAL_AUTOCHECKPOINT == 1000
    finally:
        await w.close()


async def test_the_writing_connection_keeps_a_larger_page_cache(tmp_path: Path) -> None:
    """The recipients' index is written at random leaves: the writer keeps 8 MiB of
    pages (SQLite's default is about 2 MB), a reading connection the default."""
    w = GroupCommitWriter(tmp_path / "w.db")
    await w.open()
    try:
        size = await w.call_outside_transaction(
            lambda c: c.execute("PRAGMA cache_size").fetchone()[0]
        )
    finally:
        await w.close()
    assert size == -writer_mod.WRITER_CACHE_KIB == -8192
    reader = writer_mod.connect(tmp_path / "w.db", "FULL", read_only=True)
    try:
        assert reader.execute("PRAGMA cache_size").fetchone()[0] == -2000
    finally:
        reader.close()
