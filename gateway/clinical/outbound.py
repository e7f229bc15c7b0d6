"""HL7 messages to send to an EHR (reply write-back): queued here in the transaction
that decided them, sent by the MLLP client lane of `gateway.hl7`, which waits for
the ACK, retries with back-off on AR or a timeout, and parks the message on AE."""

from __future__ import annotations

import enum
import secrets
import sqlite3

from gateway.store.crypto import FieldCipher


class OutboundState(enum.StrEnum):
    PENDING = "pending"  # waiting for (another) attempt at `next_attempt_at`
    ACKED = "acked"  # the peer answered AA / CA
    PARKED = "parked"  # the peer answered AE / CE, or attempts ran out: staff must look
    CANCELLED = "cancelled"


def enqueue(
    conn: sqlite3.Connection,
    cipher: FieldCipher,
    interface: str,
    message: str,
    control_id: str,
    now: float,
    *,
    kind: str,
    ref: str | None = None,
) -> str:
    """Queue `message` (an HL7 v2 message, segments separated by CR, MSH-10 =
    `control_id`) for the outbound interface `interface`. `kind` says what it is
    (`appointment_reply`), `ref` what it is about (a reply id); neither holds PHI."""
    row_id = "hlo_" + secrets.token_hex(8)
    conn.execute(
        "INSERT INTO hl7_outbound (id, interface, control_id, kind, ref, message_ct, state,"
        " attempts, next_attempt_at, created_at, updated_at)"
        " VALUES (?,?,?,?,?,?,'pending',0,?,?,?)",
        (
            row_id,
            interface,
            control_id,
            kind,
            ref,
            cipher.encrypt(message, row_id, "message"),
            now,
            now,
            now,
        ),
    )
    return row_id
