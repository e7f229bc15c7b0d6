"""`insert_rows`: the rows `executemany` would insert, in its order, triggers fired."""

from __future__ import annotations

import sqlite3

import pytest

from gateway.store.bulk_insert import CHUNK_ROWS, insert_rows

INSERT = "INSERT INTO t (id, a, b) VALUES (?, ?, ?)"


def _db() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b BLOB)")
    conn.execute("CREATE TABLE fired (seq INTEGER PRIMARY KEY AUTOINCREMENT, id INTEGER)")
    conn.execute(
        "CREATE TRIGGER t_fired AFTER INSERT ON t BEGIN INSERT INTO fired (id) VALUES (NEW.id); END"
    )
    return conn


def _rows(n: int, start: int = 0) -> list[tuple[int, str | None, bytes]]:
    return [(i, None if i % 7 == 0 else f"v{i}", bytes([i % 256])) for i in range(start, start + n)]


@pytest.mark.parametrize("n", [1, CHUNK_ROWS - 1, CHUNK_ROWS, 2 * CHUNK_ROWS + 3])
def test_the_same_rows_in_the_same_order_as_executemany(n: int) -> None:
    rows = _rows(n)[::-1]  # ids not in key order: the order of arrival is what counts
    ours, theirs = _db(), _db()
    insert_rows(ours, INSERT, rows)
    theirs.executemany(INSERT, rows)
    for conn in (ours, theirs):
        assert conn.execute("SELECT id, a, b FROM t ORDER BY id DESC").fetchall() == rows
    fired = "SELECT id FROM fired ORDER BY seq"
    assert ours.execute(fired).fetchall() == theirs.execute(fired).fetchall()
    assert [r[0] for r in ours.execute(fired)] == [r[0] for r in rows]


def test_an_upsert_goes_through_executemany() -> None:
    conn = _db()
    upsert = INSERT + " ON CONFLICT (id) DO UPDATE SET a = excluded.a"
    insert_rows(conn, upsert, _rows(CHUNK_ROWS))
    insert_rows(conn, upsert, [(0, "again", b"")] * CHUNK_ROWS)
    assert conn.execute("SELECT count(*), max(a) FROM t").fetchone() == (CHUNK_ROWS, "v99")
    assert conn.execute("SELECT a FROM t WHERE id = 0").fetchone() == ("again",)


def test_a_chunk_over_the_connections_limit_on_parameters_goes_row_by_row() -> None:
    conn = _db()
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 3 * CHUNK_ROWS - 1)
    insert_rows(conn, INSERT, _rows(CHUNK_ROWS + 1))
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (CHUNK_ROWS + 1,)


def test_a_bad_row_fails_the_insert() -> None:
    conn = _db()
    rows = _rows(CHUNK_ROWS)
    rows[CHUNK_ROWS // 2] = rows[0]  # a duplicate key
    conn.execute("BEGIN")
    with pytest.raises(sqlite3.IntegrityError):
        insert_rows(conn, INSERT, rows)
    conn.execute("ROLLBACK")
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_a_chunk_of_rows_is_one_statement() -> None:
    conn = _db()
    started: list[str] = []
    conn.set_trace_callback(started.append)
    insert_rows(conn, INSERT, _rows(2 * CHUNK_ROWS + 1))
    # SQLite calls back at a statement's start and at its trigger's (the statement's
    # text again): its distinct texts, each with its own rows' values.
    assert len({sql for sql in started if sql.startswith("INSERT INTO t ")}) == 3
