"""`keys.rotate` and the re-encryption job, in process on a real store (issue 14
point 3): the new generation is current at once, the job re-encrypts every catalogued
column in batches bounded by the rate while sends go on, resumes from its cursor in a
new process, retires the old generation (audited, no key material), leaves an
unreadable row and its generation alone, and the consent ledger accepts a
re-encryption but still no other change."""

from __future__ import annotations

import asyncio
import io
import re
import sqlite3
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from gateway.app import Gateway
from gateway.cli import main
from gateway.config import ConfigError, from_mapping
from gateway.keys import rekey
from gateway.models import Priority, new_message_id
from gateway.ops.registry import run_in
from gateway.store import crypto
from gateway.store.store import NewMessage
from tests.conftest import CANARY_BODY, CANARY_NUMBER, GatewayFactory, accept
from tests.keys_rows import fill, open_every_ciphertext, webhook_sections
from tests.store_rows import message_row


async def _rotate(gw: Gateway) -> list[str]:
    lines: list[str] = []
    code = await run_in(
        gw.config, gw.store, b"", "keys.rotate", {}, actor="console", out=lines.append, gateway=gw
    )
    assert code == 0
    return lines


async def _drain(gw: Gateway) -> list[float]:
    """Run the job batch by batch to its end; the pauses it asked for."""
    pauses = []
    while (pause := await gw.rekey.run_once()) is not None:
        pauses.append(pause)
    return pauses


async def _audit(gw: Gateway) -> list[tuple[str, str | None, str]]:
    rows = await gw.store.reader.all("SELECT action, target_id, detail FROM audit_log ORDER BY seq")
    return [(r[0], r[1], r[2]) for r in rows]


async def test_rotation_is_current_at_once_then_everything_is_reencrypted_and_gen1_retired(
    open_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await open_gateway(**webhook_sections(tmp_path), store={"rekey_rows_per_second": 7})
    ids = await fill(gw)
    before = await open_every_ciphertext(gw.store)
    assert set(before) == {1}
    old_body = (await message_row(gw.store, ids[0]))["body_ct"]  # type: ignore[index]

    lines = await _rotate(gw)
    assert "generation 2 is current" in lines[0]
    new_id = await accept(gw, body="after the rotation")
    row = await message_row(gw.store, new_id)
    assert row is not None and crypto.header_generation(row["body_ct"]) == 2
    assert await gw.store.reader.one("SELECT 1 FROM key_rekey WHERE done = 0") is not None

    pauses = await _drain(gw)
    # At most `rekey_rows_per_second` rows per batch, and a pause that keeps to it.
    assert pauses and max(pauses) == pytest.approx(1.0) and min(pauses) >= 0
    after = await open_every_ciphertext(gw.store)
    assert set(after) == {2} and sum(after.values()) == sum(before.values()) + 2
    cipher = gw.store.cipher
    assert cipher is not None and cipher.generations == {2}
    with pytest.raises(crypto.DecryptError):
        cipher.decrypt(old_body, ids[0], "body")
    keyring = await gw.store.reader.all("SELECT purpose, generation FROM keyring ORDER BY 1, 2")
    assert [tuple(r) for r in keyring] == [("blind", 1), ("field", 2)]
    assert await gw.store.reader.one("SELECT 1 FROM key_rekey") is None
    message = await gw.store.records.message(ids[0])
    assert message is not None and message.body.open() == f"{CANARY_BODY} #0"

    audit = await _audit(gw)
    actions = [(a, t) for a, t, _ in audit]
    assert ("key_rotation_started", "field:2") in actions
    assert ("key_generation_retired", "field:1") in actions
    for _, _, detail in audit:
        assert set(detail) <= set('{}"_:,0123456789abcdefghijklmnopqrstuvwxyz')


async def test_a_new_process_resumes_after_the_cursor(
    open_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await open_gateway(store={"rekey_rows_per_second": 2})
    ids = [await accept(gw, body=f"resume {i}") for i in range(9)]
    await _rotate(gw)
    cursor_sql = "SELECT after, rewritten, done FROM key_rekey WHERE table_name = 'messages'"
    while True:  # two batches of messages (the tables before it are empty), then the "kill"
        assert await gw.rekey.run_once() is not None
        cursor = await gw.store.reader.one(cursor_sql)
        assert cursor is not None
        if cursor["rewritten"] == 4:
            break
    assert cursor["done"] == 0 and cursor["after"] == sorted(ids)[3]
    await gw.stop()

    again = await open_gateway(store={"rekey_rows_per_second": 2})
    resumed = await again.store.reader.one(
        "SELECT after, rewritten FROM key_rekey WHERE table_name = 'messages'"
    )
    assert resumed is not None and tuple(resumed) == (cursor["after"], 4)
    await _drain(again)
    rewritten = await again.store.reader.all("SELECT id FROM messages")
    assert len(rewritten) == len(ids)
    counts = await open_every_ciphertext(again.store)
    assert set(counts) == {2}


async def test_sends_go_on_while_the_job_runs(open_gateway: GatewayFactory, tmp_path: Path) -> None:
    gw = await open_gateway(store={"rekey_rows_per_second": 5})
    first = [await accept(gw, body=f"before {i}") for i in range(30)]
    await _rotate(gw)

    async def send() -> list[str]:
        return [await accept(gw, body=f"during {i}") for i in range(30)]

    sent, _ = await asyncio.gather(send(), _drain(gw))
    for i, mid in enumerate(first):
        m = await gw.store.records.message(mid)
        assert m is not None and m.body.open() == f"before {i}"
    for i, mid in enumerate(sent):
        m = await gw.store.records.message(mid)
        assert m is not None and m.body.open() == f"during {i}"
    assert set(await open_every_ciphertext(gw.store)) == {2}


async def test_an_unreadable_ciphertext_keeps_its_generation(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    ids = [await accept(gw, body=f"x {i}") for i in range(3)]
    row = await message_row(gw.store, ids[1])
    assert row is not None
    broken = bytes(row["body_ct"][:-1]) + bytes([row["body_ct"][-1] ^ 1])
    await gw.store.writer.run(
        lambda conn: conn.execute("UPDATE messages SET body_ct = ? WHERE id = ?", (broken, ids[1]))
    )
    await _rotate(gw)
    await _drain(gw)
    cipher = gw.store.cipher
    assert cipher is not None and cipher.generations == {1, 2}
    assert (await rekey.generation_counts(gw.store)).get(1) == 1
    lines: list[str] = []
    await run_in(gw.config, gw.store, b"", "keys.status", {}, actor="console", out=lines.append)
    assert lines[0].split() == ["GENERATION", "CREATED", "(UTC)", "STATE", "CIPHERTEXTS"]
    assert lines[1].split()[0] == "1" and lines[1].split()[-1] == "1"


async def test_two_rotations_at_once_make_two_generations(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway()
    await accept(gw)
    await asyncio.gather(_rotate(gw), _rotate(gw))
    gens = await gw.store.reader.all("SELECT generation FROM keyring WHERE purpose = 'field'")
    assert sorted(int(r[0]) for r in gens) == [1, 2, 3]
    await _drain(gw)
    cipher = gw.store.cipher
    assert cipher is not None and cipher.generations == {3}
    assert set(await open_every_ciphertext(gw.store)) == {3}


def _ledger(tmp_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(tmp_path / "smsgw.db")


async def test_consent_ledger_takes_a_reencryption_and_refuses_any_other_change(
    open_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await open_gateway(**webhook_sections(tmp_path))
    await fill(gw, messages=1)
    cipher = gw.store.cipher
    assert cipher is not None
    seq, row_id, note = (
        await gw.store.reader.one("SELECT seq, id, note_ct FROM consent_ledger")  # type: ignore[misc]
    )
    same_generation = cipher.encrypt("forged", row_id, "note")

    def update(conn: sqlite3.Connection, sql: str, *args: Any) -> None:
        conn.execute(sql, args)

    for sql, args in [
        ("UPDATE consent_ledger SET note_ct = ? WHERE seq = ?", (same_generation, seq)),
        ("UPDATE consent_ledger SET decision = 'opt_out' WHERE seq = ?", (seq,)),
    ]:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            await gw.store.writer.run(lambda conn, s=sql, a=args: update(conn, s, *a))
    await _rotate(gw)
    await _drain(gw)
    (now_note,) = await gw.store.reader.one(  # type: ignore[misc]
        "SELECT note_ct FROM consent_ledger WHERE seq = ?", (seq,)
    )
    assert crypto.header_generation(now_note) == 2
    assert cipher.decrypt(now_note, row_id, "note") == cipher.decrypt(now_note, row_id, "note")
    # and back to an older generation is refused (a copy of the old ciphertext)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        await gw.store.writer.run(
            lambda conn: update(
                conn, "UPDATE consent_ledger SET note_ct = ? WHERE seq = ?", note, seq
            )
        )


async def test_a_row_sealed_before_the_switch_and_committed_after_the_walk_is_caught(
    open_gateway: GatewayFactory,
) -> None:
    """The accept path seals before the writer's transaction: a message sealed under
    generation 1 may commit after the walk went past its place. The check before the
    retirement finds it and walks again; generation 1 goes only once nothing is left."""
    gw = await open_gateway(store={"rekey_rows_per_second": 50})
    for i in range(3):
        await accept(gw, body=f"early {i}")
    late_id = new_message_id()
    now = gw.clock.time()
    late = NewMessage(
        id=late_id,
        token_id=None,
        priority=Priority.NORMAL,
        to=CANARY_NUMBER,
        body="sealed before, committed after",
        encoding="GSM7",
        segments=1,
        created_at=now,
        expires_at=now + 3600,
        sealed=gw.store.seal(late_id, CANARY_NUMBER, "sealed before, committed after", None, None),
    )
    await _rotate(gw)
    while True:  # the walk goes past the messages table
        assert await gw.rekey.run_once() is not None
        row = await gw.store.reader.one("SELECT done FROM key_rekey WHERE table_name = 'messages'")
        if row is not None and row[0] == 1:
            break
    await gw.store.insert(gw.store.insert_statements(late))
    await _drain(gw)
    row = await message_row(gw.store, late_id)
    assert row is not None and crypto.header_generation(row["body_ct"]) == 2
    cipher = gw.store.cipher
    assert cipher is not None and cipher.generations == {2}
    m = await gw.store.records.message(late_id)
    assert m is not None and m.body.open() == "sealed before, committed after"


def test_the_rekey_rate_must_be_positive_and_its_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"store\.rekey_rows_per_second"):
        from_mapping({"store": {"rekey_rows_per_second": 0}})


async def test_status_shows_the_job_while_it_runs(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway(store={"rekey_rows_per_second": 2})
    for i in range(5):
        await accept(gw, body=f"s {i}")
    await _rotate(gw)
    while True:
        await gw.rekey.run_once()
        row = await gw.store.reader.one("SELECT after FROM key_rekey WHERE table_name='messages'")
        if row is not None and row[0] is not None:
            break
    lines: list[str] = []
    await run_in(gw.config, gw.store, b"", "keys.status", {}, actor="console", out=lines.append)
    assert [line.split()[0] for line in lines[1:3]] == ["1", "2"]
    assert lines[1].split()[3:] == ["older", "6"] and lines[2].split()[3:] == ["current", "4"]
    assert "re-encryption to generation 2:" in lines[3] and "now in messages" in lines[3]
    assert "2 rows re-encrypted" in lines[3]


def _cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


async def test_console_rotate_with_no_gateway_running_does_it_all_with_progress(
    open_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await open_gateway(**webhook_sections(tmp_path))
    await fill(gw, messages=3)
    await gw.stop()
    conf = tmp_path / "c.toml"
    conf.write_text(f'data_dir = "{tmp_path}"\n')
    code, out, err = await asyncio.to_thread(_cli, "keys", "rotate", "--config", str(conf))
    assert code == 0, err
    assert "generation 2 is current" in out and "older generations retired" in out
    assert re.search(r"re-encrypting rows: (\d+)/\1 \(100%\)", err)
    code, out, _ = await asyncio.to_thread(
        _cli, "keys", "rotate", "--background", "--config", str(conf)
    )
    assert code == 0 and "starts with the gateway" in out
    again = await open_gateway(**webhook_sections(tmp_path))
    assert set(await open_every_ciphertext(again.store)) == {2}
    await _drain(again)  # what `smsgw run` does in the background
    assert set(await open_every_ciphertext(again.store)) == {3}
    code, out, _ = await asyncio.to_thread(_cli, "keys", "status", "--config", str(conf))
    assert code == 0 and "none running" in out
