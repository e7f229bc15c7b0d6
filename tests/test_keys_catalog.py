"""The catalog of encrypted columns (`gateway/keys/catalog.py`) is complete: a column
it lacks would keep its ciphertexts under a key generation the rotation then retires.

Two checks: every `*_ct` column of the schema is in it; and after a run that writes
every kind of row (`tests/keys_rows.py`), every ciphertext found in any column of any
table is in a catalogued column and opens with the catalog's row id and name.
"""

from __future__ import annotations

from pathlib import Path

from gateway.keys.catalog import BY_TABLE, CATALOG
from gateway.store import crypto
from tests.conftest import GatewayFactory
from tests.keys_rows import fill, webhook_sections


def _catalogued() -> set[tuple[str, str]]:
    return {(s.table, column) for s in CATALOG for column, _ in s.columns}


async def _columns(gw: object) -> dict[str, list[str]]:
    store = gw.store  # type: ignore[attr-defined]
    tables = await store.reader.all(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    )
    out = {}
    for (table,) in tables:
        info = await store.reader.all(f"PRAGMA table_info({table})")
        out[table] = [row[1] for row in info]
    return out


async def test_every_ct_column_of_the_schema_is_catalogued(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway()
    columns = await _columns(gw)
    named = {(t, c) for t, cols in columns.items() for c in cols if c.endswith("_ct")}
    assert named - _catalogued() == set(), "encrypted columns missing from the catalog"
    for s in CATALOG:
        assert s.key in columns[s.table]
        assert {c for c, _ in s.columns} <= set(columns[s.table])


async def test_every_ciphertext_written_is_in_a_catalogued_column_and_opens(
    open_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await open_gateway(**webhook_sections(tmp_path))
    await fill(gw)
    cipher = gw.store.cipher
    assert cipher is not None
    found: set[tuple[str, str]] = set()
    for table, cols in (await _columns(gw)).items():
        for column in cols:
            rows = await gw.store.reader.all(
                f"SELECT {column} FROM {table} WHERE typeof({column}) = 'blob'"  # noqa: S608
            )
            if any(crypto.header_generation(bytes(r[0])) == cipher.generation for r in rows):
                found.add((table, column))
    assert found - _catalogued() == set(), "ciphertexts in columns the catalog lacks"
    assert _catalogued() - found == set(), "the run did not write every catalogued column"
    opened = 0
    for table, column in sorted(found):
        s = BY_TABLE[table]
        name = dict(s.columns)[column]
        rows = await gw.store.reader.all(
            f"SELECT {s.row_id}, {column} FROM {table} WHERE {column} IS NOT NULL"  # noqa: S608
        )
        for row_id, blob in rows:
            cipher.decrypt(bytes(blob), row_id, name)
            opened += 1
    assert opened >= len(found)
