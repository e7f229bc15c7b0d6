"""Erasure of one person by number (MSG-11, R-DEL-1), in ONE writer transaction.

Found through the blind index (and, for the HL7 texts that have no index, by reading
them): every stored trace of the number is removed or made unreadable, its waiting
messages are cancelled, and what remains is the suppression entry: the consent
ledger's rows and standing under the keyed hash, their texts erased, with an opt-out of
everything recorded if none is in force, so the number is never texted again. The
erasure is audited under a reference id, with counts; never the number.

What happens, table by table (`docs/ops/retention.md` has the same list):
- messages to the number: waiting ones cancelled (`erased`); number, body, reference
  and callback removed, index emptied; their Kannel dlr-url rows and short links deleted;
- inbound from the number: sender and body removed, index emptied; held parts deleted;
- contacts: the row deleted (number, patient reference, language, time zone);
- consent_ledger and consent_state: kept under the keyed hash (the suppression entry),
  disclosure and note texts erased; an opt-out of all if none is in force;
- patients texted at the number: MRN removed (its index replaced by a random one), the
  link to the contact cut; their appointments' external key, location and provider;
- clinical notices (of the contact or those patients): variables removed, pending
  ones cancelled (`erased`); medication schedules: label removed, active ones stopped;
- appointment replies, consent review items, clinical events: the link cut;
- hl7_messages and hl7_outbound whose text names the number or an MRN: text removed.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.consent import ledger
from gateway.consent.purposes import SCOPE_ALL
from gateway.models import State
from gateway.retention.sweep import blank
from gateway.store.crypto import FieldCipher
from gateway.store.transitions import Transition, apply

_SPLIT = re.compile(r"[|^~&\r\n]")
_WAITING = (State.QUEUED.value, State.SCHEDULED.value)


@dataclass(frozen=True, slots=True)
class Person:
    e164: str
    index: bytes  # the blind index of `e164`

    @property
    def digits(self) -> str:
        return self.e164.lstrip("+")


@dataclass(slots=True)
class Erased:
    counts: dict[str, int] = field(default_factory=dict)
    cancelled: list[str] = field(default_factory=list)  # message ids the scheduler drops


def _random_index() -> bytes:
    return os.urandom(16)


def _names_number(text: str, person: Person, mrns: set[str]) -> bool:
    """Whether an HL7 text has a field that is the number (any punctuation) or an MRN."""
    for part in _SPLIT.split(text):
        if part in mrns:
            return True
        digits = re.sub(r"\D", "", part).lstrip("0")  # a national form's trunk 0 too
        if len(digits) >= 7 and person.digits.endswith(digits):
            return True
    return False


def erase(
    conn: sqlite3.Connection, c: FieldCipher, person: Person, now: float, actor: str
) -> Erased:
    """Everything above, in the caller's transaction; the counts and cancelled ids."""
    out = Erased()
    n = out.counts
    idx = person.index
    out.cancelled = [
        r[0]
        for r in conn.execute(
            "SELECT id FROM messages WHERE to_index = ? AND state IN (?, ?)", (idx, *_WAITING)
        )
    ]
    for mid in out.cancelled:
        apply(conn, Transition(mid, State.CANCELLED, error_code="erased"), now)
    n["messages_cancelled"] = len(out.cancelled)
    ids = [r[0] for r in conn.execute("SELECT id FROM messages WHERE to_index = ?", (idx,))]
    for mid in ids:
        conn.execute(
            "UPDATE messages SET to_ct = ?, body_ct = ?, reference_ct = NULL,"
            " callback_ct = NULL, to_index = x'', redacted = 2 WHERE id = ?",
            (blank(c, mid, "to"), blank(c, mid, "body"), mid),
        )
        conn.execute("DELETE FROM kannel_dlr WHERE message_id = ?", (mid,))
        conn.execute("DELETE FROM link_tokens WHERE message_id = ?", (mid,))  # its short links
    n["messages"] = len(ids)

    ids = [r[0] for r in conn.execute("SELECT id FROM inbound WHERE sender_index = ?", (idx,))]
    for iid in ids:
        conn.execute(
            "UPDATE inbound SET sender_ct = ?, body_ct = ?, recipient_ct = NULL,"
            " sender_index = x'', redacted = 2 WHERE id = ?",
            (blank(c, iid, "sender"), blank(c, iid, "body"), iid),
        )
    n["inbound"] = len(ids)
    parts = [
        pid
        for pid, ct in conn.execute("SELECT id, sender_ct FROM inbound_parts").fetchall()
        if re.sub(r"\D", "", c.decrypt(ct, pid, "sender")) == person.digits
    ]
    conn.executemany("DELETE FROM inbound_parts WHERE id = ?", [(p,) for p in parts])
    n["inbound_parts"] = len(parts)

    _suppress(conn, c, person, now, actor)
    n["consent_entries"] = conn.execute(
        "UPDATE consent_ledger SET disclosure_ct = NULL, note_ct = NULL WHERE contact_idx = ?",
        (idx,),
    ).rowcount
    n["contacts"] = conn.execute("DELETE FROM contacts WHERE idx = ?", (idx,)).rowcount
    for table in ("contact_tags", "contact_group_members"):  # what the audience knew of them
        conn.execute(f"DELETE FROM {table} WHERE contact_idx = ?", (idx,))  # noqa: S608  # fixed names

    mrns = _erase_patients(conn, c, person, now, n)
    n["hl7_messages"] = erase_hl7(conn, c, person, mrns, now, "hl7_messages", "raw_ct", "raw")
    n["hl7_writebacks"] = erase_hl7(
        conn, c, person, mrns, now, "hl7_outbound", "message_ct", "message"
    )
    for table in ("appointment_replies", "consent_review"):
        n[table] = conn.execute(
            f"UPDATE {table} SET contact_idx = x'' WHERE contact_idx = ?",  # noqa: S608  # fixed names
            (idx,),
        ).rowcount
    n["clinical_events"] = conn.execute(
        "UPDATE clinical_events SET contact_idx = NULL WHERE contact_idx = ?", (idx,)
    ).rowcount
    # A survey under way ends; answers stay as counts, unlinked (their texts were in
    # `inbound`, blanked above).
    conn.execute(
        "UPDATE survey_sessions SET state = 'stopped', deadline = NULL, closed_at = ?,"
        " updated_at = ? WHERE contact_idx = ? AND state = 'open'",
        (now, now, idx),
    )
    n["survey_sessions"] = conn.execute(
        "UPDATE survey_sessions SET contact_idx = x'' WHERE contact_idx = ?", (idx,)
    ).rowcount
    n["campaign_recipients"] = conn.execute(  # i15-campaigns: who a campaign reached
        "DELETE FROM campaign_recipients WHERE contact_idx = ?", (idx,)
    ).rowcount
    return out


def _suppress(
    conn: sqlite3.Connection, c: FieldCipher, person: Person, now: float, actor: str
) -> None:
    """An opt-out of every purpose in every program, unless one is already in force."""
    row = conn.execute(
        "SELECT opted FROM consent_state WHERE contact_idx = ? AND program = ? AND scope = ?",
        (person.index, ledger.ALL_PROGRAMS, SCOPE_ALL),
    ).fetchone()
    if row is not None and row[0] == "out":
        return
    entry = ledger.Entry(
        contact_idx=person.index,
        number=person.e164,
        decision="opt_out",
        scope=SCOPE_ALL,
        program=ledger.ALL_PROGRAMS,
        source="erasure",
        at=now,
        actor=actor,
    )
    ledger.append(conn, c, entry)  # creates a contacts row, deleted just after


def _erase_patients(
    conn: sqlite3.Connection, c: FieldCipher, person: Person, now: float, n: dict[str, int]
) -> set[str]:
    """Patients texted at the number, their appointments, notices and schedules; their
    MRNs (to find HL7 texts by)."""
    mrns, pids = erase_patients(conn, c, person, now, n)
    erase_schedules(conn, person, pids, now, n)
    return mrns


def erase_schedules(
    conn: sqlite3.Connection,
    person: Person,
    pids: Sequence[str],
    now: float,
    n: dict[str, int],
    prefix: str = "",
) -> None:
    """The medication schedules of the number or its patients stopped and forgotten, in
    SQL both SQLite and a cluster's PostgreSQL read."""
    idx = person.index
    who = "contact_idx = ?"  # placeholders only: the values are bound
    if pids:  # PostgreSQL refuses an empty IN ()
        who = f"(contact_idx = ? OR patient_id IN ({','.join('?' * len(pids))}))"
    stop = "state = 'stopped', stopped_at = ?, stop_reason = 'erased', updated_at = ?"
    sql = f"UPDATE medication_schedules SET {stop} WHERE state = 'active' AND {who}"  # noqa: S608
    conn.execute(sql, (now, now, idx, *pids))
    forget = "label_ct = NULL, contact_idx = ?, ext_index = NULL"
    sql = f"UPDATE medication_schedules SET {forget} WHERE {who}"  # noqa: S608
    n[prefix + "medication_schedules"] = conn.execute(sql, (b"", idx, *pids)).rowcount


def erase_patients(
    conn: sqlite3.Connection,
    c: FieldCipher,
    person: Person,
    now: float,
    n: dict[str, int],
    prefix: str = "",
) -> tuple[set[str], list[str]]:
    """Patients texted at the number, their appointments and notices, in SQL both
    SQLite and a cluster's PostgreSQL read (`gateway/cluster/erasure.py`); their MRNs
    and ids. Counts are named `<prefix><kind>`."""
    idx = person.index
    patients = conn.execute(
        "SELECT id, mrn_ct FROM patients WHERE contact_idx = ?", (idx,)
    ).fetchall()
    mrns = {c.decrypt(ct, pid, "mrn") for pid, ct in patients} - {""}
    pids = [pid for pid, _ in patients]
    for pid in pids:
        conn.execute(
            "UPDATE patients SET mrn_ct = ?, mrn_index = ?, contact_idx = NULL,"
            " phone_source = NULL, updated_at = ? WHERE id = ?",
            (blank(c, pid, "mrn"), _random_index(), now, pid),
        )
    n[prefix + "patients"] = len(pids)
    appts: list[str] = []
    if pids:  # PostgreSQL refuses an empty IN ()
        marks = ",".join("?" * len(pids))
        appts = [
            r[0]
            for r in conn.execute(
                f"SELECT id FROM appointments WHERE patient_id IN ({marks})",  # noqa: S608  # placeholders
                pids,
            )
        ]
    for aid in appts:
        conn.execute(
            "UPDATE appointments SET ext_key_ct = ?, ext_index = ?, location_label_ct = NULL,"
            " provider_ct = NULL, updated_at = ? WHERE id = ?",
            (blank(c, aid, "ext_key"), _random_index(), now, aid),
        )
    n[prefix + "appointments"] = len(appts)
    # `who` holds only placeholders: the values are bound.
    who = "contact_idx = ?"
    if pids:
        who = f"(contact_idx = ? OR patient_id IN ({','.join('?' * len(pids))}))"
    cancel = "state = 'cancelled', reason = 'erased', updated_at = ?"
    sql = f"UPDATE clinical_notices SET {cancel} WHERE state = 'pending' AND {who}"  # noqa: S608
    n[prefix + "notices_cancelled"] = conn.execute(sql, (now, idx, *pids)).rowcount
    sql = f"UPDATE clinical_notices SET variables_ct = NULL, contact_idx = ? WHERE {who}"  # noqa: S608
    n[prefix + "notices"] = conn.execute(sql, (b"", idx, *pids)).rowcount
    return mrns, pids


def erase_hl7(
    conn: sqlite3.Connection,
    c: FieldCipher,
    person: Person,
    mrns: set[str],
    now: float,
    table: str,
    column: str,
    aad: str,
) -> int:
    """Stored HL7 texts (no index to find them by) that name the number or an MRN, in
    SQL a cluster's PostgreSQL reads too (`gateway/cluster/erasure.py`)."""
    rows = conn.execute(
        f"SELECT id, {column} FROM {table} WHERE erased_at IS NULL"  # noqa: S608  # fixed names
    ).fetchall()
    hits = [rid for rid, ct in rows if _names_number(c.decrypt(ct, rid, aad), person, mrns)]
    for rid in hits:
        conn.execute(
            f"UPDATE {table} SET {column} = ?, erased_at = ? WHERE id = ?",  # noqa: S608
            (blank(c, rid, aad), now, rid),
        )
    return len(hits)
