"""`smsgw store migrate --to postgresql://…` (issue 18 point 6, S10 at 10,000 messages;
the 100,000 run is `make bench-migrate`)."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import threading
from pathlib import Path

import psycopg
import pytest

from gateway.cli import main
from gateway.cluster import keyring, nodes
from gateway.cluster.keyring import SEALED
from gateway.cluster.migrate import MIGRATION_NODE, migrate_store
from gateway.cluster.migrate_copy import Progress
from gateway.consent.ledger import contact_row_id
from gateway.models import State
from gateway.startup import DataDirLock
from gateway.store import crypto
from tests.pg.migrate_source import STATES, Source, body, fill, init, number
from tests.pg_server import PgServer

COUNT = 10_000
PASSWORD = "Corm0rant-Tide-7731"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Source:
    """One 10,000-message store for the module; tests that change it take a copy."""
    source = init(tmp_path_factory.mktemp("src") / "data")
    asyncio.run(fill(source, COUNT))
    return source


@pytest.fixture
def source(built: Source, tmp_path: Path) -> Source:
    data = tmp_path / "data"
    shutil.copytree(built.data_dir, data)
    conf = data / "smsgw.toml"
    conf.write_text(conf.read_text().replace(str(built.data_dir), str(data)))
    return Source(data, conf, data / "smsgw.db", built.master)


def migrate(conf: Path, dsn: str, *extra: str) -> int:
    return main(
        ["store", "migrate", "--config", str(conf), "--to", dsn, "--node-id", "gw1", *extra]
    )


def pg(dsn: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query.encode()).fetchall()


async def test_s10_every_state_is_copied_with_its_ids_and_decrypts_the_same(
    source: Source, pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await asyncio.to_thread(migrate, source.conf, pg_dsn) == 0
    out = capsys.readouterr().out
    assert "MISMATCH" not in out and "store migrate: done; 10000 messages" in out

    src = sqlite3.connect(source.db_path)
    for table in ("messages", "message_events", "carrier_ids"):
        want = dict(src.execute(f"SELECT state, count(*) FROM {table} GROUP BY state"))  # noqa: S608
        assert dict(pg(pg_dsn, f"SELECT state, count(*) FROM {table} GROUP BY state")) == want  # noqa: S608
    assert {s for (s,) in pg(pg_dsn, "SELECT DISTINCT state FROM messages")} == {
        s.value for s in STATES
    }
    # Checked here independently of the command's own verification: every row's
    # fields, decrypted with the keys read back from PostgreSQL, are what was written.
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        keys = await keyring.load(conn, source.master)
    cipher = crypto.FieldCipher(keys.field, keys.blind)
    assert cipher.generations == {1, 2}
    rows = pg(
        pg_dsn, "SELECT id, to_ct, to_index, body_ct, reference_ct, callback_ct FROM messages"
    )
    by_number = {
        mid: n
        for n, (mid,) in enumerate(src.execute("SELECT id FROM messages ORDER BY created_at"))
    }
    assert len(rows) == COUNT
    for mid, to_ct, to_index, body_ct, ref_ct, cb_ct in rows[::37]:
        n = by_number[mid]  # type: ignore[index]
        assert cipher.decrypt(to_ct, mid, "to") == number(n)  # type: ignore[arg-type]
        assert to_index == cipher.blind_index(number(n))
        assert cipher.decrypt(body_ct, mid, "body") == body(n)  # type: ignore[arg-type]
        assert (ref_ct is None) == (n % 3 != 0) and (cb_ct is None) == (n % 5 != 0)
        if ref_ct is not None:
            assert cipher.decrypt(ref_ct, mid, "reference") == f"ref-{n}"  # type: ignore[arg-type]

    # Inbound: ids and seqs (the API's cursors) kept, decrypting the same; the held part
    # too, so its set still joins on the cluster.
    inbound = pg(pg_dsn, "SELECT id, seq, sender_ct, body_ct, node_id FROM inbound ORDER BY seq")
    assert [(r[0], r[1]) for r in inbound] == src.execute(
        "SELECT id, seq FROM inbound ORDER BY seq"
    ).fetchall()
    assert len(inbound) == COUNT // 100
    for iid, _, sender_ct, body_ct, node in inbound[::7]:
        n = int(str(iid)[2:])
        assert cipher.decrypt(sender_ct, iid, "sender") == number(n)  # type: ignore[arg-type]
        assert (cipher.decrypt(body_ct, iid, "body"), node) == (body(n), "gw1")  # type: ignore[arg-type]
    assert pg(pg_dsn, "SELECT count(*) FROM inbound_parts") == [(2,)]
    assert "verified: inbound: 100 of 100 sampled decrypt the same" in out
    # Kannel dlr-url wishes: their ciphertexts open on the cluster, bound to their message.
    wishes = pg(pg_dsn, "SELECT message_id, url_ct, receiver_ct FROM kannel_dlr")
    assert len(wishes) == COUNT // 1000
    for mid, url_ct, receiver_ct in wishes:
        n = by_number[mid]  # type: ignore[index]
        assert cipher.decrypt(url_ct, mid, "kannel_dlr_url") == (  # type: ignore[arg-type]
            f"https://ehr.example/dlr?n={n}&t=%d"
        )
        assert cipher.decrypt(receiver_ct, mid, "kannel_dlr_receiver") == number(n)  # type: ignore[arg-type]

    # The consent evidence (MSG-2): the ledger's history with its ids and seqs, its
    # texts decrypting bound to their entries; the contacts whole; the reviews with the
    # text they quote sealed for the review; a new entry numbered after the copied.
    ledger = src.execute(
        "SELECT seq, id, contact_idx, decision, scope, source, actor, inbound_id"
        " FROM consent_ledger ORDER BY seq"
    ).fetchall()
    assert len(ledger) == 3 * COUNT // 1000
    assert (
        pg(
            pg_dsn,
            "SELECT seq, id, contact_idx, decision, scope, source, actor, inbound_id"
            " FROM consent_ledger ORDER BY seq",
        )
        == ledger
    )
    texts = pg(pg_dsn, "SELECT id, disclosure_ct, note_ct, node_id FROM consent_ledger")
    assert {r[3] for r in texts} == {"gw1"}
    notes = {cipher.decrypt(r[2], r[0], "note") for r in texts if r[2] is not None}  # type: ignore[arg-type]
    disclosed = {cipher.decrypt(r[1], r[0], "disclosure") for r in texts if r[1] is not None}  # type: ignore[arg-type]
    assert notes == {"asked by phone"} and len(disclosed) == 1
    contacts = pg(
        pg_dsn, "SELECT idx, number_ct, patient_ref_ct, clinic, preferences FROM contacts"
    )
    assert len(contacts) == COUNT // 1000
    for idx, number_ct, ref_ct, clinic, prefs in contacts:
        bound = contact_row_id(idx)  # type: ignore[arg-type]
        assert cipher.blind_index(cipher.decrypt(number_ct, bound, "number")) == idx  # type: ignore[arg-type]
        assert cipher.decrypt(ref_ct, bound, "patient_ref").startswith("MRN-")  # type: ignore[arg-type]
        assert (clinic, prefs) == ("north", '["reminders"]')
    members = pg(pg_dsn, "SELECT count(*) FROM contact_group_members WHERE group_id = 'g1'")
    tags = pg(pg_dsn, "SELECT count(*) FROM contact_tags WHERE tag = 'flu'")
    assert members == tags == [(COUNT // 1000,)]
    assert pg(pg_dsn, "SELECT id, name FROM contact_audiences") == [("a1", "Ward 1, flu")]
    reviews = pg(pg_dsn, "SELECT id, inbound_id, resolution, body_ct FROM consent_reviews")
    assert sorted((r[0], r[2]) for r in reviews) == sorted(
        (f"rev{n}", "opted_out" if n % 4000 == 0 else None) for n in range(0, COUNT, 2000)
    )
    for review_id, inbound_id, _, body_ct in reviews:
        assert cipher.decrypt(body_ct, review_id, "body") == body(int(str(inbound_id)[2:]))  # type: ignore[arg-type]
    assert "verified: consent_reviews.body_ct: 5 of 5 sampled decrypt the same" in out
    (next_seq,) = pg(pg_dsn, "SELECT nextval(pg_get_serial_sequence('consent_ledger', 'seq'))")
    assert next_seq == (ledger[-1][0] + 1,)

    # Tracked links: the tokens of messages sent keep redirecting, the clicks their seqs
    # (a new click goes on after them).
    assert pg(pg_dsn, "SELECT count(*) FROM link_tokens") == [(3,)]
    assert pg(pg_dsn, "SELECT seq, human FROM link_clicks ORDER BY seq") == [(1, 1), (2, 0), (3, 1)]
    assert pg(pg_dsn, "SELECT nextval(pg_get_serial_sequence('link_clicks', 'seq'))") == [(4,)]

    # The copied `sending` rows belong to a lapsed incarnation: the first node's sweep
    # requeues them flagged, as after a crash.
    sending = {r[0] for r in src.execute("SELECT id FROM messages WHERE state = 'sending'")}
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        me = await nodes.register(conn, "gw1", 30.0)
        recovered = await nodes.recover_expired(conn, me)
    assert [(r.node_id, r.requeued) for r in recovered] == [(MIGRATION_NODE, len(sending))]
    flagged = pg(pg_dsn, "SELECT id FROM messages WHERE possible_duplicate AND state = 'queued'")
    assert {r[0] for r in flagged} >= sending

    verify = ["audit", "verify", "--config", str(source.conf), "--postgresql", pg_dsn]
    assert await asyncio.to_thread(main, verify) == 0
    out = capsys.readouterr().out
    assert "audit chains intact: 1 nodes, 1 anchors" in out
    (action,) = pg(pg_dsn, "SELECT action FROM audit_log WHERE node_id = 'gw1' ORDER BY seq DESC")[
        0
    ]
    assert action == "store_migrated"


async def test_a_tampered_audit_row_is_found_by_the_migration_and_by_audit_verify(
    source: Source, pg_server: PgServer, capsys: pytest.CaptureFixture[str]
) -> None:
    db = sqlite3.connect(source.db_path)
    db.execute("DROP TRIGGER audit_log_no_update")  # what someone with the file can do
    db.execute("UPDATE audit_log SET target_id = 'm999' WHERE seq = 40")
    db.commit()
    db.close()
    target = pg_server.create_database()
    assert await asyncio.to_thread(migrate, source.conf, target) == 1
    out = capsys.readouterr().out
    assert "MISMATCH: audit chain on the target: node gw1: entry 40 was changed" in out
    assert pg(target, "SELECT count(*) FROM store_migrations WHERE finished_at IS NULL") == [(1,)]


async def test_audit_verify_finds_a_row_changed_on_the_target(
    source: Source, pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await asyncio.to_thread(migrate, source.conf, pg_dsn) == 0
    verify = ["audit", "verify", "--config", str(source.conf), "--postgresql", pg_dsn]
    assert await asyncio.to_thread(main, verify) == 0
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
        conn.execute("DELETE FROM audit_log WHERE node_id = 'gw1' AND seq = 7")
    capsys.readouterr()
    assert await asyncio.to_thread(main, verify) == 1
    assert "BROKEN: node gw1: entry 7 is missing (next found is 8)" in capsys.readouterr().out


async def test_a_target_that_is_not_empty_is_refused_and_left_as_it_was(
    source: Source, pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE patients_elsewhere (id int)")
        conn.execute("INSERT INTO patients_elsewhere VALUES (1)")
    assert await asyncio.to_thread(migrate, source.conf, pg_dsn) == 4
    assert "refused: the target database is not empty" in capsys.readouterr().out
    tables = pg(pg_dsn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    assert tables == [("patients_elsewhere",)]

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE patients_elsewhere")
    assert await asyncio.to_thread(migrate, source.conf, pg_dsn) == 0
    capsys.readouterr()
    assert await asyncio.to_thread(migrate, source.conf, pg_dsn) == 4  # done once is done
    assert "refused: the target holds a store migrated before" in capsys.readouterr().out


async def test_a_running_gateway_is_refused(
    source: Source, pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with DataDirLock(source.data_dir):  # what `smsgw run` holds while it runs
        assert await asyncio.to_thread(migrate, source.conf, pg_dsn) == 4
    assert "refused: data directory" in capsys.readouterr().out
    assert pg(pg_dsn, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]


async def test_a_run_that_died_half_way_is_restarted_clean(source: Source, pg_dsn: str) -> None:
    class Killed(Exception):
        pass

    def die_in_messages(done: int, total: int, what: str) -> None:
        if what.startswith("messages") and done >= 5000:
            raise Killed

    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        with pytest.raises(Killed):
            await migrate_store(
                source.db_path, source.master, conn, node_id="gw1", actor="test",
                now=0.0, out=lambda s: None, progress=die_in_messages,
            )  # fmt: skip
    assert pg(pg_dsn, "SELECT count(*) FROM messages") == [(5000,)]
    assert pg(pg_dsn, "SELECT count(*) FROM audit_log") == [(0,)]
    lines: list[str] = []
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        code = await migrate_store(
            source.db_path, source.master, conn, node_id="gw1", actor="test",
            now=0.0, out=lines.append, progress=lambda *a: None,
        )  # fmt: skip
    assert code == 0, lines
    assert any("an earlier run did not finish" in line for line in lines)
    assert pg(pg_dsn, "SELECT count(*) FROM messages") == [(COUNT,)]
    assert pg(pg_dsn, "SELECT count(*), count(finished_at) FROM store_migrations") == [(2, 1)]


async def test_the_password_is_never_printed_nor_taken_on_the_command_line(
    built: Source, pg_server: PgServer, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "pg-password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)

    async def run(conf: Path, to: str, *extra: str) -> tuple[int, str, str]:
        """The command in this process; everything written to fds 1 and 2 meanwhile."""
        capfd.readouterr()
        argv = ["store", "migrate", "--config", str(conf), "--to", to, *extra]
        code = await asyncio.to_thread(main, argv)
        out, err = capfd.readouterr()
        return code, out, err

    in_line = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{pg_server.port}/x"
    code, out, err = await run(built.conf, in_line)
    assert code == 2 and "holds a password" in err
    assert PASSWORD not in out + err

    # A database that is not there, and one that is: neither prints the file's password.
    missing = f"postgresql://postgres@127.0.0.1:{pg_server.port}/no_such_db"
    code, out, err = await run(built.conf, missing, "--password-file", str(secret))
    assert code == 2 and "cannot connect to 127.0.0.1" in err
    assert PASSWORD not in out + err

    tiny = await asyncio.to_thread(init, tmp_path / "tiny")
    await fill(tiny, 40, audit_entries=3)
    target = pg_server.create_database()
    code, out, err = await run(tiny.conf, target, "--password-file", str(secret))
    assert code == 0, out + err
    assert PASSWORD not in out + err
    assert "sending: 5 rows left to the first node's recovery" in out
    assert State.SENDING.value in {s for (s,) in pg(target, "SELECT state FROM messages")}


async def test_keys_rotate_on_the_shared_store_reencrypts_and_is_audited(
    pg_server: PgServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny = await asyncio.to_thread(init, tmp_path / "tiny")
    await fill(tiny, 60, audit_entries=2)
    target = pg_server.create_database()
    assert await asyncio.to_thread(migrate, tiny.conf, target) == 0
    rotate = ["keys", "rotate", "--config", str(tiny.conf), "--postgresql", target]
    assert await asyncio.to_thread(main, [*rotate, "--node-id", "gw1"]) == 0
    done = (
        "field key generation 3 is current;"
        " 67 rows re-encrypted (every encrypted field of the shared store)"
    )
    # 60 messages, 1 inbound, its held part, 1 dlr-url, 1 contact, the 2 ledger entries
    # with texts, 1 review
    assert done in capsys.readouterr().out
    prefix = crypto.generation_prefix(3)
    every = " UNION ALL ".join(
        f"SELECT {column} FROM {s.table} WHERE {column} IS NOT NULL"  # noqa: S608 - fixed names
        for s in SEALED
        for column, _ in s.columns
    )
    heads = {bytes(b[:3]) for (b,) in pg(target, every)}  # type: ignore[index]
    assert heads == {prefix}
    # No node runs: the older generations are retired at once, after the rotation.
    newest = pg(
        target, "SELECT action, target_id FROM audit_log WHERE node_id = 'gw1' ORDER BY seq DESC"
    )[:3]
    assert newest == [
        ("key_generation_retired", "field:2"),
        ("key_generation_retired", "field:1"),
        ("key_rotated", "field:3"),
    ]
    assert pg(target, "SELECT generation FROM keyring WHERE purpose = 'field'") == [(3,)]
    capsys.readouterr()
    status = ["keys", "status", "--config", str(tiny.conf), "--postgresql", target]
    assert await asyncio.to_thread(main, status) == 0
    (head, row, *_) = capsys.readouterr().out.splitlines()
    assert head.split() == ["GENERATION", "CREATED", "(UTC)", "STATE", "CIPHERTEXTS"]
    sealed = str(len(pg(target, every)))  # every ciphertext, all under generation 3
    assert row.split()[0] == "3" and row.split()[-2:] == ["current", sealed]
    verify = ["audit", "verify", "--config", str(tiny.conf), "--postgresql", target]
    assert await asyncio.to_thread(main, verify) == 0


async def test_a_source_column_the_cluster_schema_lacks_stops_the_copy_naming_it(
    pg_server: PgServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A later SQLite migration without its PostgreSQL twin: nothing is dropped silently."""
    tiny = await asyncio.to_thread(init, tmp_path / "tiny")
    await fill(tiny, 20, audit_entries=1)
    db = sqlite3.connect(tiny.db_path)
    db.execute("ALTER TABLE messages ADD COLUMN triage_level TEXT")
    db.commit()
    db.close()
    target = pg_server.create_database()
    assert await asyncio.to_thread(migrate, tiny.conf, target) == 4
    out = capsys.readouterr().out
    assert "the PostgreSQL table messages has no column triage_level" in out
    assert pg(target, "SELECT count(*), count(finished_at) FROM store_migrations") == [(1, 0)]


async def test_two_migrations_into_one_database_at_once_one_is_refused(
    source: Source, pg_dsn: str
) -> None:
    """The emptiness check and the copy are one step: a second run (another site's
    store, say) that starts while the first copies is refused, not mixed in."""
    copying, release = threading.Event(), threading.Event()

    def hold(done: int, total: int, what: str) -> None:
        copying.set()
        assert release.wait(60)  # the first run stays inside its copy meanwhile

    async def run(node: str, progress: Progress, lines: list[str]) -> int:
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
            return await migrate_store(
                source.db_path, source.master, conn, node_id=node, actor="test",
                now=0.0, out=lines.append, progress=progress,
            )  # fmt: skip

    first_lines: list[str] = []
    first = asyncio.create_task(asyncio.to_thread(asyncio.run, run("gw1", hold, first_lines)))
    try:
        assert await asyncio.to_thread(copying.wait, 60)
        lines: list[str] = []
        assert await run("gw2", lambda *a: None, lines) == 4
        assert lines == ["store migrate: refused: another migration into this database is running"]
    finally:
        release.set()
    assert await first == 0, first_lines
    assert pg(pg_dsn, "SELECT DISTINCT node_id FROM audit_log") == [("gw1",)]
    assert pg(pg_dsn, "SELECT count(*) FROM messages") == [(COUNT,)]
