"""The consent ledger: append-only, and the standing a message's purpose gets from it."""

from __future__ import annotations

import os
import sqlite3

import pytest

from gateway.consent import ledger
from gateway.consent.purposes import (
    DEFAULT_POLICIES,
    SCOPE_ALL,
    Kind,
    Purpose,
    kind_scope,
    purpose_scope,
)
from gateway.store import crypto
from gateway.store.schema import migrate

CIPHER = crypto.FieldCipher({1: os.urandom(32)}, os.urandom(32))
ALICE_NUMBER = "+12025550147"
ALICE = CIPHER.blind_index(ALICE_NUMBER)
MARKETING = DEFAULT_POLICIES[Purpose.MARKETING]
APPOINTMENT = DEFAULT_POLICIES[Purpose.APPOINTMENT]
EMERGENCY = DEFAULT_POLICIES[Purpose.EMERGENCY]
COMPLIANCE = DEFAULT_POLICIES[Purpose.COMPLIANCE]


@pytest.fixture
def conn() -> sqlite3.Connection:
    c = sqlite3.connect(":memory:", isolation_level=None)
    migrate(c)
    return c


def _decide(
    conn: sqlite3.Connection, decision: ledger.Decision, scope: str, at: float, **kw: object
) -> int:
    entry = ledger.Entry(ALICE, ALICE_NUMBER, decision, scope, "default", "api", at, **kw)  # type: ignore[arg-type]
    return ledger.append(conn, CIPHER, entry)[1]


def test_no_record_allows_all_but_marketing(conn: sqlite3.Connection) -> None:
    assert ledger.standing(conn, ALICE, "default", APPOINTMENT).refusal(APPOINTMENT) is None
    assert ledger.standing(conn, ALICE, "default", MARKETING).refusal(MARKETING) == "no_consent"


def test_written_consent_then_stop_then_start(conn: sqlite3.Connection) -> None:
    _decide(conn, "opt_in", kind_scope(Kind.MARKETING), 1.0, disclosure="Reply YES to get news")
    assert ledger.standing(conn, ALICE, "default", MARKETING).refusal(MARKETING) is None
    _decide(conn, "opt_out", kind_scope(Kind.MARKETING), 2.0)
    assert ledger.standing(conn, ALICE, "default", MARKETING).refusal(MARKETING) == "opted_out"
    # An opt-out of marketing leaves clinical messages alone.
    assert ledger.standing(conn, ALICE, "default", APPOINTMENT).refusal(APPOINTMENT) is None
    _decide(conn, "opt_in", SCOPE_ALL, 3.0)  # START: back to what was consented before
    assert ledger.standing(conn, ALICE, "default", MARKETING).refusal(MARKETING) is None


def test_a_start_is_not_written_consent(conn: sqlite3.Connection) -> None:
    _decide(conn, "opt_out", SCOPE_ALL, 1.0)
    _decide(conn, "opt_in", SCOPE_ALL, 2.0)
    assert ledger.standing(conn, ALICE, "default", MARKETING).refusal(MARKETING) == "no_consent"


def test_stop_all_reaches_emergency_only_through_its_rule(conn: sqlite3.Connection) -> None:
    _decide(conn, "opt_out", purpose_scope(Purpose.APPOINTMENT), 1.0)
    assert ledger.standing(conn, ALICE, "default", APPOINTMENT).refusal(APPOINTMENT) == "opted_out"
    assert ledger.standing(conn, ALICE, "default", EMERGENCY).refusal(EMERGENCY) is None
    _decide(conn, "opt_out", SCOPE_ALL, 2.0)
    assert ledger.standing(conn, ALICE, "default", EMERGENCY).refusal(EMERGENCY) == "opted_out"
    assert ledger.standing(conn, ALICE, "default", COMPLIANCE).refusal(COMPLIANCE) is None


def test_programs_are_separate_and_star_covers_all(conn: sqlite3.Connection) -> None:
    ledger.append(
        conn,
        CIPHER,
        ledger.Entry(ALICE, ALICE_NUMBER, "opt_out", SCOPE_ALL, "pharmacy", "keyword", 1.0),
    )
    assert ledger.standing(conn, ALICE, "pharmacy", APPOINTMENT).latest == "out"
    assert ledger.standing(conn, ALICE, "default", APPOINTMENT).latest is None
    ledger.append(
        conn, CIPHER, ledger.Entry(ALICE, ALICE_NUMBER, "opt_out", SCOPE_ALL, "*", "phone", 2.0)
    )
    assert ledger.standing(conn, ALICE, "default", APPOINTMENT).latest == "out"


def test_ledger_is_append_only_but_texts_can_be_erased(conn: sqlite3.Connection) -> None:
    _decide(conn, "opt_in", kind_scope(Kind.MARKETING), 1.0, disclosure="terms v1", note="by phone")
    (row,) = ledger.history(conn, CIPHER, ALICE)
    assert (row.disclosure, row.note, row.decision) == ("terms v1", "by phone", "opt_in")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE consent_ledger SET decision = 'opt_out'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM consent_ledger")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE consent_ledger SET note_ct = x'00'")
    conn.execute("UPDATE consent_ledger SET disclosure_ct = NULL, note_ct = NULL")
    (row,) = ledger.history(conn, CIPHER, ALICE)
    assert (row.disclosure, row.note, row.decision) == (None, None, "opt_in")


def test_a_decision_creates_the_contact_and_reports_itself(conn: sqlite3.Connection) -> None:
    entry_id, _ = ledger.append(
        conn,
        CIPHER,
        ledger.Entry(ALICE, ALICE_NUMBER, "opt_out", SCOPE_ALL, "default", "phone", 1.0),
    )
    (number_ct,) = conn.execute("SELECT number_ct FROM contacts WHERE idx = ?", (ALICE,)).fetchone()
    assert CIPHER.decrypt(number_ct, ledger.contact_row_id(ALICE), "number") == ALICE_NUMBER
    rows = conn.execute("SELECT type, message_id, route, state, code FROM outbox").fetchall()
    assert rows == [("consent.changed", entry_id, "default", "all", "opt_out")]
