"""The seal guard's refusal on the write paths other than send (issue 18, point 5): a
node back from a cut-off through a rotation and its retirement answers an API write
`503 key_retired` with `Retry-After` and takes the keyring up at once (the same request
again is stored); a background writer (an inbound message) is retried once under the
current key, transparently. Real PostgreSQL, a real node and its HTTP API on loopback;
the keyring made stale as `tests/pg/test_seal_guard.py` does it."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
from structlog.testing import capture_logs

from gateway.app import Gateway
from gateway.cluster import key_retire, keyring
from gateway.cluster.clinical_db import ClusterClinicalDb
from gateway.cluster.lease import Pool
from gateway.store import crypto
from gateway.store.audit_log import audit_key
from gateway.store_failure import KeyRetired
from tests.conftest import CANARY_NUMBER
from tests.pg.cut_proxy import CutProxy
from tests.pg.test_cluster_key_retire import seed
from tests.pg.test_db_away_api import api  # noqa: F401 - the fixture
from tests.test_api import Api, _error

OTHER = "+12025550188"


async def _rotated_and_retired_behind(gw: Gateway, pg_dsn: str) -> int:
    """The node's lease lapses (no heartbeat of it runs: its keyring is not checked),
    and a console rotates the field key and retires the older one; the new generation."""
    assert gw.cluster is not None
    master = gw.cluster.queue.master_key
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await conn.execute(
            "UPDATE nodes SET lease_until = clock_timestamp() WHERE incarnation = %s",
            (gw.cluster.membership.me.incarnation,),
        )
        generation, _ = await keyring.rotate(conn, master)
        done = await key_retire.retire(
            conn, audit_key(master), "console", "console:test", gw.clock.time()
        )
    assert done.retired == (generation - 1,)
    assert gw.cluster.queue.cipher.generation == generation - 1  # behind
    return generation


async def test_a_node_behind_a_retirement_answers_api_writes_503_and_retries_background_ones(
    api: tuple[Api, CutProxy],  # noqa: F811 - the fixture
    pg_dsn: str,
) -> None:
    client, _ = api
    gw = client.gw
    assert gw.cluster is not None
    generation = await _rotated_and_retired_behind(gw, pg_dsn)

    with capture_logs() as logs:
        r = await client.post("/api/v1/optouts", {"number": CANARY_NUMBER})
    error = await _error(r, 503, "key_retired")
    assert r.headers["Retry-After"] == "1"
    assert CANARY_NUMBER not in error["message"]
    assert not [e for e in logs if e["event"] == "unhandled_error"], logs
    assert gw.cluster.queue.cipher.generations == {generation}  # taken up at once
    async with gw.cluster.pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM contacts")
        assert await cur.fetchone() == (0,)  # the refused write left nothing

    r = await client.post("/api/v1/optouts", {"number": CANARY_NUMBER})  # the client's retry
    assert r.status == 201, await r.text()

    # Behind again (another rotation and retirement): a background write is retried.
    generation = await _rotated_and_retired_behind(gw, pg_dsn)

    with capture_logs() as logs:
        await gw.cluster.inbound.insert_inbound(
            "in-1", "main", OTHER, "STOP", None, None, gw.clock.time()
        )

    events = [e["event"] for e in logs]
    assert "sealed_under_retired_key_refused" in events
    assert "sealed_under_retired_key_retried" in events
    async with gw.cluster.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT substring(sender_ct FROM 1 FOR 3), substring(body_ct FROM 1 FOR 3)"
            " FROM inbound WHERE id = 'in-1'"
        )
        prefix = crypto.generation_prefix(generation)
        assert await cur.fetchall() == [(prefix, prefix)]
    assert OTHER not in repr(logs)


async def test_a_clinical_job_refused_again_after_its_retry_raises_key_retired(pool: Pool) -> None:
    """An HL7 message's job (every clinical job) runs once more after a refusal; refused
    again it raises `KeyRetired`, which the HL7 pipeline answers AR, resend later
    (`gateway/hl7/inbound.py`; tests/test_hl7_inbound.py), never AA."""
    cipher = await seed(pool)
    async with pool.connection() as conn:  # its own generation refused: as if retired
        await conn.execute(
            "INSERT INTO retired_field_generations (generation, prefix) VALUES (1, %s)",
            (crypto.generation_prefix(1),),
        )
    runs: list[int] = []

    def job(conn: sqlite3.Connection) -> None:
        runs.append(1)
        conn.execute(
            "INSERT INTO inbound (id, seq, route, sender_ct, sender_index, body_ct,"
            " received_at, node_id) VALUES ('i1', 1, 'r', ?, ?, ?, 0, 'gw9')",
            (
                cipher.encrypt(OTHER, "i1", "sender"),
                cipher.blind_index(OTHER),
                cipher.encrypt("text", "i1", "body"),
            ),
        )

    db = ClusterClinicalDb(pool, lambda: cipher)
    with pytest.raises(KeyRetired):
        await db.run(job, serial=False)
    assert len(runs) == 2
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM inbound")
        assert await cur.fetchone() == (0,)
