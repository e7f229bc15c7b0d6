"""The cluster's rotation catalog (`gateway/cluster/keyring.SEALED`) is complete: every
`*_ct` column of the cluster schema is in it, with a key and columns the table has. A
column it lacked would stay under the generation a rotation meant to replace."""

from __future__ import annotations

import psycopg

from gateway.cluster.keyring import SEALED


async def test_every_ct_column_of_the_cluster_schema_is_rotated(migrated_dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(migrated_dsn) as conn:
        cur = await conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema()"
        )
        columns = await cur.fetchall()
    named = {(str(t), str(c)) for t, c in columns if str(c).endswith("_ct")}
    catalogued = {(s.table, c) for s in SEALED for c, _ in s.columns}
    assert named - catalogued == set(), "encrypted columns the rotation would leave behind"
    have = {(str(t), str(c)) for t, c in columns}
    for s in SEALED:
        assert (s.table, s.key) in have
        assert {(s.table, c) for c, _ in s.columns} <= have
