"""A SQLite store to migrate: `smsgw init`, then messages in every state written with
the store's own code (`Store.seal`, the blind index, `AuditTrail.append_in`, the keyring's
rotation, the inbound statement and a held part), in one writer transaction, as
bench/growth.py builds its stores."""

from __future__ import annotations

import contextlib
import io
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from drivers.base import InboundPart, InboundSms
from drivers.clock import SystemClock
from gateway.cli import main
from gateway.consent import ledger
from gateway.consent.ledger import Entry, contact_row_id
from gateway.integrations.dlr_wishes import DlrWish, LocalDlrWishes
from gateway.models import IdGenerator, State
from gateway.store import crypto, inbound_parts
from gateway.store.audit_log import AuditTrail, audit_key
from gateway.store.inbound_parts import inbound_statement, prepare_part
from gateway.store.store import Store
from gateway.store.transitions import INSERT_EVENT

NOW = 1_800_000_000.0
STATES = tuple(State)
INSERT = (
    "INSERT INTO messages (id, token_id, priority, state, to_ct, to_index, body_ct,"
    " reference_ct, callback_ct, encoding, segments, route_hint, route, created_at,"
    " updated_at, send_at, expires_at, due_at, attempts, possible_duplicate, error_code,"
    " purpose, receipt_overdue) VALUES (?,?,?,?,?,?,?,?,?,'gsm7',1,?,?,?,?,?,?,?,?,?,?,?,?)"
)
ROUTED = {State.SENDING, State.SENT, State.DELIVERED, State.FAILED}


@dataclass(frozen=True, slots=True)
class Source:
    data_dir: Path
    conf: Path
    db_path: Path
    master: bytes


def number(n: int) -> str:
    return f"+4479{n:08d}"


def body(n: int) -> str:
    return f"Reminder {n}: your appointment at the North clinic is on day {n % 28 + 1}."


def init(data_dir: Path) -> Source:
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["init", "--data-dir", str(data_dir), "--no-token"]) == 0
    master = crypto.read_master_key(data_dir / "master.key")
    return Source(data_dir, data_dir / "smsgw.toml", data_dir / "smsgw.db", master)


async def fill(source: Source, count: int, audit_entries: int = 300) -> None:
    """`count` messages, state by turn through every state; the first half under field
    key generation 1, the rest under 2; events and carrier ids for the routed ones; a
    few consent decisions; `audit_entries` audit entries."""
    store = Store(source.db_path, source.master, synchronous="OFF")
    await store.open()
    trail = AuditTrail(store, audit_key(store.master_key), SystemClock())
    ids = IdGenerator()
    try:
        for half in (range(count // 2), range(count // 2, count)):
            if half.start:
                await store.writer.run(lambda conn: store.new_field_generation(conn, NOW))
                await store.reload_keys()
            await store.writer.run(lambda conn, h=half: _write(conn, store, ids, h))
        await store.writer.run(_links)
        for n in range(audit_entries):
            await trail.record("console", "message_read", "message", f"m{n}", page=n)
    finally:
        await store.close()


def _write(conn: sqlite3.Connection, store: Store, ids: IdGenerator, span: range) -> None:
    assert store.cipher is not None
    messages, events, parts = [], [], []
    consent: list[Entry] = []
    for n in span:
        state = STATES[n % len(STATES)]
        mid = ids.new()
        to = number(n)
        ref = f"ref-{n}" if n % 3 == 0 else None
        callback = f"https://ehr.example/cb/{n}" if n % 5 == 0 else None
        to_ct, body_ct, ref_ct, cb_ct = store.seal(mid, to, body(n), ref, callback)
        at = NOW - 86400 + n * 0.01
        routed = state in ROUTED
        messages.append((
            mid, "tok1", n % 4, state.value, to_ct, store.cipher.blind_index(to), body_ct,
            ref_ct, cb_ct, "rt" if n % 7 == 0 else None, "smsc" if routed else None, at,
            at + 1, at + 3600 if state is State.SCHEDULED else None, at + 86400 * 2, at,
            1 if routed else 0, 1 if n % 11 == 0 else 0,
            "carrier:0x45" if state is State.FAILED else None, "appointment",
            1 if state is State.SENT and n % 2 else 0,
        ))  # fmt: skip
        if routed:
            events.append((mid, at + 1, State.SENDING.value, "smsc", None, None, 1))
            if state is not State.SENDING:
                events.append((mid, at + 2, state.value, "smsc", f"c{n}", None, 1))
                parts.append(("smsc", f"c{n}", mid, 1, state.value))
        if n % 100 == 0:  # a reply from the same number
            conn.execute(
                *inbound_statement(store.cipher, f"in{n}", "smsc", to, body(n), "4000", None, at)
            )
        if n % 1000 == 0:  # a STOP by text, staff's note on a call, a written opt-in
            consent.extend(_decisions(store.cipher.blind_index(to), to, f"in{n}", at))
            if n % 2000 == 0:  # "please stop texting me" waiting for staff (resolved: 4000s)
                conn.execute(
                    "INSERT INTO consent_review (id, inbound_id, contact_idx, program, reason,"
                    " created_at, resolved_at, resolution, actor) VALUES (?,?,?,?,?,?,?,?,?)",
                    (f"rev{n}", f"in{n}", store.cipher.blind_index(to), "default", "phrase", at,
                     *((at + 60, "opted_out", "staff") if n % 4000 == 0 else (None,) * 3)),
                )  # fmt: skip
        if n % 1000 == 3:  # sent through Kannel's sendsms with a dlr-url
            wish = DlrWish(f"https://ehr.example/dlr?n={n}&t=%d", 3, to, "4000", "ehr")
            conn.execute(*LocalDlrWishes(store).statement(mid, wish, at))
        if n % 5000 == 1:  # the first part of a message still being reassembled
            sms = InboundSms(to, body(n), "4000", part=InboundPart(n % 256, 8, 2, 1))
            inbound_parts.file_part(
                conn, store.cipher, prepare_part(store.cipher, "smsc", sms, at), at, 300.0
            )
    conn.executemany(INSERT, messages)
    conn.executemany(INSERT_EVENT, events)
    conn.executemany(
        "INSERT INTO carrier_ids (route, carrier_id, message_id, part, state) VALUES (?,?,?,?,?)",
        parts,
    )
    for entry in consent:
        ledger.append(conn, store.cipher, entry)
        if entry.note:
            ref = store.cipher.encrypt(
                f"MRN-{entry.at:.0f}", contact_row_id(entry.contact_idx), "patient_ref"
            )
            conn.execute(
                "UPDATE contacts SET patient_ref_ct = ?, clinic = 'north', age_band = '40-64',"
                " preferences = '[\"reminders\"]' WHERE idx = ?",
                (ref, entry.contact_idx),
            )


def _decisions(idx: bytes, to: str, inbound_id: str, at: float) -> list[Entry]:
    return [
        Entry(idx, to, "opt_out", "all", "default", "keyword", at, inbound_id=inbound_id),
        Entry(idx, to, "opt_in", "all", "default", "phone", at + 1, "staff", note="asked by phone"),
        Entry(
            idx, to, "opt_in", "purpose:marketing", "default", "panel", at + 2, "staff",
            disclosure="Clinic news by text? Reply YES. Msg&data rates may apply.",
        ),
    ]  # fmt: skip


def _links(conn: sqlite3.Connection) -> None:
    """A named link, the short links of the first three messages, clicks on two."""
    conn.execute(
        "INSERT INTO links VALUES ('lnk_00000000000000aa', 'flu-clinic',"
        " 'https://www.example-hospital.org/flu', NULL, ?, 'console')",
        (NOW,),
    )
    ids = [r[0] for r in conn.execute("SELECT id FROM messages ORDER BY id LIMIT 3")]
    for n, mid in enumerate(ids):
        conn.execute(
            "INSERT INTO link_tokens VALUES (?, 'lnk_00000000000000aa', ?, ?, ?)",
            (bytes([n]) * 32, mid, NOW, NOW + 90 * 86400.0),
        )
    for human, mid in ((1, ids[0]), (0, ids[0]), (1, ids[1])):
        conn.execute(
            "INSERT INTO link_clicks (link_id, message_id, at, human, agent_class)"
            " VALUES ('lnk_00000000000000aa', ?, ?, ?, ?)",
            (mid, NOW, human, "human" if human else "preview"),
        )
