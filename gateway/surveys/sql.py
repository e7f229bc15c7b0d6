"""The surveys' SQL: versions, sessions and answers (no decryption: nothing here is
encrypted; an answer's text stays in `inbound.body_ct`).

Writes take a job's connection (`conn`), inside a job the caller runs on the
`ClinicalDb` (the node's SQLite writer, or on a cluster the shared PostgreSQL through
its bridge: so the SQL is what both engines read alike); reads for the front ends go
through `ClinicalDb.all`.
"""

from __future__ import annotations

import secrets
import sqlite3
from dataclasses import dataclass
from typing import Any

from gateway.clinical.db import ClinicalDb
from gateway.surveys import spec as specs
from gateway.surveys.spec import Survey, SurveySpec

OPEN = "open"
CLOSED_STATES = ("completed", "timed_out", "stopped", "blocked", "failed")


def new_survey_id() -> str:
    return "svy_" + secrets.token_hex(8)


def new_session_id() -> str:
    return "svs_" + secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    survey_id: str
    version: int
    language: str
    question: int
    asks: int
    deadline: float | None


_SURVEY = "id, version, spec, created_at, created_by"
_SESSION = "id, survey_id, version, language, question, asks, deadline"


def _survey(r: Any) -> Survey:
    return Survey(r[0], int(r[1]), specs.decode(r[2]), float(r[3]), r[4])


def _session(r: Any) -> Session:
    return Session(r[0], r[1], int(r[2]), r[3], int(r[4]), int(r[5]), r[6])


# -- versions ----------------------------------------------------------------------------


def insert_version(
    conn: sqlite3.Connection, survey_id: str, spec: SurveySpec, now: float, actor: str
) -> int:
    """The next version of `survey_id` (1 for a new id), made current."""
    row = conn.execute("SELECT max(version) FROM surveys WHERE id = ?", (survey_id,)).fetchone()
    version = 1 if row[0] is None else int(row[0]) + 1
    conn.execute("UPDATE surveys SET current = 0 WHERE id = ? AND current = 1", (survey_id,))
    conn.execute(
        "INSERT INTO surveys (id, version, current, name, spec, created_at, created_by)"
        " VALUES (?,?,1,?,?,?,?)",
        (survey_id, version, spec.name, specs.encode(spec), now, actor),
    )
    return version


def version_of(conn: sqlite3.Connection, survey_id: str, version: int) -> Survey | None:
    r = conn.execute(
        f"SELECT {_SURVEY} FROM surveys WHERE id = ? AND version = ?",  # noqa: S608 - constants
        (survey_id, version),
    ).fetchone()
    return None if r is None else _survey(r)


def current_of(conn: sqlite3.Connection, survey_id: str) -> Survey | None:
    r = conn.execute(
        f"SELECT {_SURVEY} FROM surveys WHERE id = ? AND current = 1",  # noqa: S608 - constants
        (survey_id,),
    ).fetchone()
    return None if r is None else _survey(r)


async def current_all(db: ClinicalDb) -> list[Survey]:
    rows = await db.all(
        f"SELECT {_SURVEY} FROM surveys WHERE current = 1 ORDER BY created_at, id"  # noqa: S608
    )
    return [_survey(r) for r in rows]


async def versions(db: ClinicalDb, survey_id: str) -> list[Survey]:
    rows = await db.all(
        f"SELECT {_SURVEY} FROM surveys WHERE id = ? ORDER BY version DESC",  # noqa: S608
        (survey_id,),
    )
    return [_survey(r) for r in rows]


# -- sessions ----------------------------------------------------------------------------


def open_session(
    conn: sqlite3.Connection,
    session_id: str,
    survey: Survey,
    idx: bytes,
    language: str,
    actor: str,
    now: float,
) -> bool:
    """Open a session for the number, at its first question; False (and nothing
    written) if the number has one open already: the unique index decides, so two
    parallel starts cannot both succeed."""
    r = conn.execute(
        "INSERT INTO survey_sessions (id, survey_id, version, contact_idx, language, state,"
        " question, asks, actor, started_at, updated_at) VALUES (?,?,?,?,?,'open',0,0,?,?,?)"
        " ON CONFLICT DO NOTHING RETURNING id",
        (session_id, survey.id, survey.version, idx, language, actor, now, now),
    ).fetchone()
    return r is not None


def open_for(conn: sqlite3.Connection, idx: bytes) -> Session | None:
    r = conn.execute(
        f"SELECT {_SESSION} FROM survey_sessions"  # noqa: S608 - constants
        " WHERE contact_idx = ? AND state = 'open'",
        (idx,),
    ).fetchone()
    return None if r is None else _session(r)


def question_waiting(conn: sqlite3.Connection, session_id: str) -> bool:
    """The session's latest question waits for a time (held by quiet hours, or a
    send_at): a text now cannot be its answer. (A queued one is leaving now.)"""
    r = conn.execute(
        "SELECT m.state FROM survey_sessions s JOIN messages m ON m.id = s.message_id"
        " WHERE s.id = ?",
        (session_id,),
    ).fetchone()
    return r is not None and r[0] == "scheduled"


def advance(
    conn: sqlite3.Connection,
    session_id: str,
    question: int,
    asks: int,
    deadline: float | None,
    message_id: str | None,
    now: float,
) -> None:
    conn.execute(
        "UPDATE survey_sessions SET question = ?, asks = ?, deadline = ?,"
        " message_id = coalesce(?, message_id), updated_at = ? WHERE id = ? AND state = 'open'",
        (question, asks, deadline, message_id, now, session_id),
    )


def close(conn: sqlite3.Connection, session_id: str, state: str, now: float) -> None:
    assert state in CLOSED_STATES
    conn.execute(
        "UPDATE survey_sessions SET state = ?, deadline = NULL, closed_at = ?, updated_at = ?"
        " WHERE id = ? AND state = 'open'",
        (state, now, now, session_id),
    )


def expire(conn: sqlite3.Connection, now: float) -> list[str]:
    """Close every open session whose question's time-out has passed; their ids."""
    rows = conn.execute(
        "UPDATE survey_sessions SET state = 'timed_out', deadline = NULL, closed_at = ?,"
        " updated_at = ? WHERE state = 'open' AND deadline <= ? RETURNING id",
        (now, now, now),
    ).fetchall()
    return [r[0] for r in rows]


def next_deadline(conn: sqlite3.Connection) -> float | None:
    r = conn.execute(
        "SELECT min(deadline) FROM survey_sessions WHERE state = 'open' AND deadline IS NOT NULL"
    ).fetchone()
    return None if r is None or r[0] is None else float(r[0])


# -- answers -----------------------------------------------------------------------------


def add_answer(
    conn: sqlite3.Connection,
    s: Session,
    valid: bool,
    value: str | None,
    reason: str | None,
    inbound_id: str,
    now: float,
) -> None:
    conn.execute(
        "INSERT INTO survey_answers (session_id, survey_id, version, question, valid, value,"
        " reason, inbound_id, at) VALUES (?,?,?,?,?,?,?,?,?)",
        (s.id, s.survey_id, s.version, s.question, int(valid), value, reason, inbound_id, now),
    )
