"""Rows the analytics read, written straight into a store's tables (campaigns, links
and surveys are built on other branches; here their rows are made directly). Each
function takes the writer's (or a test's own) sqlite3 connection."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from gateway.analytics.figures import COLUMNS


def idx_of(person: int) -> bytes:
    """A stand-in blind index for person `person` (no number is ever needed)."""
    return f"person-{person}".encode()


@dataclass(frozen=True)
class Msg:
    id: str
    person: int
    created_at: float
    purpose: str | None = "informational"
    campaign: str | None = None
    variant: str | None = None
    route: str | None = None
    segments: int = 1


def add_contact(conn: sqlite3.Connection, person: int, clinic: str | None, at: float) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO contacts (idx, number_ct, created_at, updated_at, clinic)"
        " VALUES (?, x'00', ?, ?, ?)",
        (idx_of(person), at, at, clinic),
    )


def add_message(
    conn: sqlite3.Connection, m: Msg, state: str = "queued", error: str | None = None
) -> None:
    conn.execute(
        "INSERT INTO messages (id, priority, state, to_ct, to_index, body_ct, encoding,"
        " segments, route, created_at, updated_at, expires_at, due_at, error_code, purpose,"
        " campaign_id, variant) VALUES (?, 2, ?, x'00', ?, x'00', 'gsm7', ?, ?, ?, ?, ?, ?,"
        " ?, ?, ?, ?)",
        (m.id, state, idx_of(m.person), m.segments, m.route, m.created_at, m.created_at,
         m.created_at + 86400 * 30, m.created_at, error, m.purpose, m.campaign, m.variant),
    )  # fmt: skip


def add_event(
    conn: sqlite3.Connection, message_id: str, at: float, state: str, route: str | None = None,
    error: str | None = None,
) -> None:  # fmt: skip
    """A transition, with the message row brought to it (as the store does)."""
    conn.execute(
        "INSERT INTO message_events (message_id, at, state, route, error_code)"
        " VALUES (?, ?, ?, ?, ?)",
        (message_id, at, state, route, error),
    )
    conn.execute(
        "UPDATE messages SET state = ?, updated_at = ?, route = coalesce(?, route),"
        " error_code = coalesce(?, error_code) WHERE id = ?",
        (state, at, route, error, message_id),
    )


def add_inbound(
    conn: sqlite3.Connection, inbound_id: str, person: int, at: float,
    intent: str | None = None, consent: str | None = None,
) -> None:  # fmt: skip
    """An inbound text; `intent`: its appointment reply's; `consent`: the decision the
    keywords recorded for it (opt_out, opt_in)."""
    seq = conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM inbound").fetchone()[0]
    conn.execute(
        "INSERT INTO inbound (id, route, sender_ct, sender_index, body_ct, received_at, seq)"
        " VALUES (?, 'r1', x'00', ?, x'00', ?, ?)",
        (inbound_id, idx_of(person), at, seq),
    )
    if intent is not None:
        conn.execute(
            "INSERT INTO appointment_replies (id, inbound_id, contact_idx, intent, outcome,"
            " state, created_at) VALUES (?, ?, ?, ?, 'done', 'done', ?)",
            (f"rep-{inbound_id}", inbound_id, idx_of(person), intent, at),
        )
    if consent is not None:  # one row per scope, as the keywords record a STOP
        add_ledger(conn, person, at, consent, inbound_id=inbound_id)
        add_ledger(conn, person, at, consent, inbound_id=inbound_id, scope="kind:marketing")


def add_ledger(
    conn: sqlite3.Connection, person: int, at: float, decision: str,
    message_id: str | None = None, inbound_id: str | None = None, source: str = "keyword",
    scope: str = "all",
) -> None:  # fmt: skip
    n = conn.execute("SELECT count(*) FROM consent_ledger").fetchone()[0]
    conn.execute(
        "INSERT INTO consent_ledger (id, contact_idx, at, decision, scope, program, source,"
        " inbound_id, message_id) VALUES (?, ?, ?, ?, ?, '*', ?, ?, ?)",
        (f"led-{n}", idx_of(person), at, decision, scope, source, inbound_id, message_id),
    )


def add_click(
    conn: sqlite3.Connection, message_id: str | None, at: float, human: bool,
    link: str = "lnk1",
) -> None:  # fmt: skip
    conn.execute(
        "INSERT INTO link_clicks (link_id, message_id, at, human, agent_class)"
        " VALUES (?, ?, ?, ?, ?)",
        (link, message_id, at, int(human), "browser" if human else "preview"),
    )


def add_appointment(
    conn: sqlite3.Connection, appt_id: str, person: int, start: float, location: str | None,
    status: str = "booked", at: float = 0.0,
) -> None:  # fmt: skip
    conn.execute(
        "INSERT OR IGNORE INTO patients (id, source, mrn_index, mrn_ct, contact_idx,"
        " created_at, updated_at) VALUES (?, 'ehr', ?, x'00', ?, ?, ?)",
        (f"pat-{person}", idx_of(person), idx_of(person), at, at),
    )
    conn.execute(
        "INSERT INTO appointments (id, source, ext_index, ext_key_ct, patient_id, status,"
        " start_at, location_code, short_code, created_at, updated_at)"
        " VALUES (?, 'ehr', ?, x'00', ?, ?, ?, ?, '1234', ?, ?)",
        (appt_id, appt_id.encode(), f"pat-{person}", status, start, location, at, at),
    )


def set_appointment_status(conn: sqlite3.Connection, appt_id: str, status: str, at: float) -> None:
    old = conn.execute("SELECT status FROM appointments WHERE id = ?", (appt_id,)).fetchone()[0]
    conn.execute("UPDATE appointments SET status = ? WHERE id = ?", (status, appt_id))
    conn.execute(
        "INSERT INTO appointment_events (appointment_id, at, event, old_status, new_status,"
        " version) VALUES (?, ?, 'status', ?, ?, 1)",
        (appt_id, at, old, status),
    )


def add_notice(
    conn: sqlite3.Connection, notice_id: str, person: int, message_id: str,
    appt_id: str | None, rule: str | None, template: str = "reminder",
    variant: str | None = None, at: float = 0.0,
) -> None:  # fmt: skip
    conn.execute(
        "INSERT INTO clinical_notices (id, kind, contact_idx, template, purpose, due_at,"
        " appointment_id, rule_id, rule_version, variant, state, message_id, created_at,"
        " updated_at) VALUES (?, 'reminder', ?, ?, 'appointment', ?, ?, ?, 1, ?, 'queued', ?,"
        " ?, ?)",
        (notice_id, idx_of(person), template, at, appt_id, rule, variant, message_id, at, at),
    )


def sums(conn: sqlite3.Connection) -> dict[tuple[str, str, str, str], int]:
    """Every stored sum that is not zero, by (dim, day, key, metric); a blocked reason's
    metric is `blocked:<reason>`."""
    out: dict[tuple[str, str, str, str], int] = {}
    columns = ", ".join(COLUMNS)
    for row in conn.execute(f"SELECT dim, day, key, {columns} FROM analytics_daily"):  # noqa: S608
        for column, value in zip(COLUMNS, row[3:], strict=True):
            if value:
                out[(row[0], row[1], row[2], column)] = int(value)
    for dim, day, key, reason, value in conn.execute("SELECT * FROM analytics_blocked"):
        if value:
            out[(dim, day, key, f"blocked:{reason}")] = int(value)
    return out
