"""Concatenated inbound SMS held on disk until whole: file a part, join a set, expire one.

Theory of operation. A driver acknowledges a part to the carrier (SMPP deliver_sm_resp)
as soon as the gateway says it is durable, so the carrier forgets it; the part must then
survive a crash. Each part is one row of `inbound_parts`, its sender, recipient and
text encrypted like the `inbound` table's (AAD: the part's row id and column). The
parts of one message share a `set_key`, a keyed blind index over route, sender,
recipient, reference, reference width and part count: a part announcing another count
belongs to another message that reuses the reference (8-bit references wrap after 256),
so two such sets never mix. `UNIQUE (set_key, seq)` with INSERT OR IGNORE makes the
first copy of a part count and a redelivered one a no-op.

`file_part` runs as one writer job, i.e. in one transaction: insert the part; if every
seq 1..total is now there, decrypt the parts, join them in order, insert the whole
message into `inbound`, delete the parts and remember a keyed digest of each part's
text in `inbound_sets_done`. A carrier that never got our deliver_sm_resp for the last
part (the link fell after the commit) delivers it again; it matches a digest and is
ignored, instead of opening a new set that would expire as a spurious incomplete
message. A part with the same reference and seq but another text is a new message: the
old digests go and a new set opens. Digests are kept for the reassembly timeout.

`expire_sets` (housekeeping) stores every set whose first part is `timeout` old as one
inbound message flagged `incomplete`, with "[part k of n missing]" where parts are
missing, and remembers its parts' digests the same way; a straggler then opens a set of
its own rather than reviving the old one. It returns when the next set falls due.

The writer thread encrypts here, inside its transaction; `crypto.NoncePool` is locked
for that. Nothing in this module logs, and no exception carries a number or a text.
"""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from drivers.base import InboundPart, InboundSms
from gateway.inbound import join_parts
from gateway.models import new_message_id
from gateway.store import outbox_sql
from gateway.store.crypto import FieldCipher
from gateway.store.writer import Statement

_SET_PURPOSE = "inbound-set"
_PART_PURPOSE = "inbound-part"
_PART_COLUMNS = "id, route, seq, sender_ct, recipient_ct, body_ct, carrier_id, received_at"


class Filed(enum.StrEnum):
    HELD = "held"  # waiting for the rest of its set
    DUPLICATE = "duplicate"  # already held, or part of a set already stored
    COMPLETED = "completed"  # its set is whole and stored as one inbound message


@dataclass(frozen=True, slots=True)
class FiledPart:
    outcome: Filed
    inbound_id: str | None = None  # the message stored when `outcome` is COMPLETED


@dataclass(frozen=True, slots=True)
class ExpiredSets:
    inbound_ids: tuple[str, ...]  # one incomplete message per set given up on
    next_due: float | None  # when the oldest set still held expires; None if none is


@dataclass(frozen=True, slots=True)
class StoredInbound:
    """A whole inbound message just inserted, for a hook run in the same transaction."""

    id: str
    route: str
    sender: str = field(repr=False)
    body: str = field(repr=False)
    recipient: str | None = field(repr=False)
    received_at: float


# Runs inside the transaction that stores an inbound message (the consent step: a STOP
# commits with its text, or neither does).
InboundHook = Callable[[sqlite3.Connection, StoredInbound], None]


@dataclass(frozen=True, slots=True)
class PreparedPart:
    """A part ready for the writer: encrypted on the event loop, keyed, digested."""

    id: str
    route: str
    set_key: bytes = field(repr=False)
    seq: int
    total: int
    sender_ct: bytes = field(repr=False)
    recipient_ct: bytes | None = field(repr=False)
    body_ct: bytes = field(repr=False)
    digest: bytes = field(repr=False)
    carrier_id: str | None
    received_at: float


def set_key(cipher: FieldCipher, route: str, sms: InboundSms, part: InboundPart) -> bytes:
    return cipher.keyed_digest(
        _SET_PURPOSE,
        route,
        sms.sender,
        sms.recipient or "",
        str(part.ref_bits),
        str(part.reference),
        str(part.total),
    )


def part_digest(cipher: FieldCipher, key: bytes, seq: int, text: str) -> bytes:
    return cipher.keyed_digest(_PART_PURPOSE, key.hex(), str(seq), text)


def prepare_part(cipher: FieldCipher, route: str, sms: InboundSms, now: float) -> PreparedPart:
    part = sms.part
    if part is None:
        raise ValueError("not a part of a concatenated message")
    part_id = new_message_id()
    key = set_key(cipher, route, sms, part)
    return PreparedPart(
        id=part_id,
        route=route,
        set_key=key,
        seq=part.seq,
        total=part.total,
        sender_ct=cipher.encrypt(sms.sender, part_id, "sender"),
        recipient_ct=None
        if sms.recipient is None
        else cipher.encrypt(sms.recipient, part_id, "recipient"),
        body_ct=cipher.encrypt(sms.body, part_id, "body"),
        digest=part_digest(cipher, key, part.seq, sms.body),
        carrier_id=sms.carrier_id,
        received_at=now,
    )


def inbound_statement(
    cipher: FieldCipher,
    inbound_id: str,
    route: str,
    sender: str,
    body: str,
    recipient: str | None,
    carrier_id: str | None,
    received_at: float,
    *,
    incomplete: bool = False,
) -> Statement:
    """The row of one inbound message, its personal fields encrypted."""
    return (
        # `seq` is the commit order, given inside the writer's transaction (the polling
        # cursor: ids are made before the commit, so they may commit out of order).
        "INSERT INTO inbound (id, route, sender_ct, sender_index, recipient_ct, body_ct,"
        " carrier_id, received_at, incomplete, seq) VALUES (?,?,?,?,?,?,?,?,?,"
        " (SELECT coalesce(max(seq), 0) + 1 FROM inbound))",
        (
            inbound_id,
            route,
            cipher.encrypt(sender, inbound_id, "sender"),
            cipher.blind_index(sender),
            None if recipient is None else cipher.encrypt(recipient, inbound_id, "recipient"),
            cipher.encrypt(body, inbound_id, "body"),
            carrier_id,
            received_at,
            int(incomplete),
        ),
    )


def file_part(
    conn: sqlite3.Connection,
    cipher: FieldCipher,
    part: PreparedPart,
    now: float,
    timeout: float,
    then: InboundHook | None = None,
) -> FiledPart:
    """Hold one part; store its set if that made it whole, then run `then` on the
    stored message. Run as one writer job."""
    done = conn.execute(
        "SELECT digest, done_at FROM inbound_sets_done WHERE set_key = ? AND seq = ?",
        (part.set_key, part.seq),
    ).fetchone()
    if done is not None:
        if done[0] == part.digest and done[1] + timeout > now:
            return FiledPart(Filed.DUPLICATE)
        # Other text under the same reference: a new message reusing it.
        conn.execute("DELETE FROM inbound_sets_done WHERE set_key = ?", (part.set_key,))
    inserted = conn.execute(
        "INSERT OR IGNORE INTO inbound_parts (id, route, set_key, seq, total, sender_ct,"
        " recipient_ct, body_ct, carrier_id, received_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (
            part.id,
            part.route,
            part.set_key,
            part.seq,
            part.total,
            part.sender_ct,
            part.recipient_ct,
            part.body_ct,
            part.carrier_id,
            part.received_at,
        ),
    ).rowcount
    if not inserted:
        return FiledPart(Filed.DUPLICATE)
    (held,) = conn.execute(
        "SELECT count(*) FROM inbound_parts WHERE set_key = ?", (part.set_key,)
    ).fetchone()
    if held < part.total:
        return FiledPart(Filed.HELD)
    stored = _store_set(conn, cipher, part.set_key, part.total, now, incomplete=False)
    if then is not None:
        then(conn, stored)
    return FiledPart(Filed.COMPLETED, stored.id)


def expire_sets(
    conn: sqlite3.Connection,
    cipher: FieldCipher,
    now: float,
    timeout: float,
    then: InboundHook | None = None,
) -> ExpiredSets:
    """Store every set whose first part is `timeout` old as an incomplete message (and
    run `then` on each)."""
    due = conn.execute(
        "SELECT set_key, max(total) FROM inbound_parts GROUP BY set_key"
        " HAVING min(received_at) + ? <= ? ORDER BY min(received_at)",
        (timeout, now),
    ).fetchall()
    stored = [_store_set(conn, cipher, key, total, now, incomplete=True) for key, total in due]
    if then is not None:
        for message in stored:
            then(conn, message)
    ids = tuple(message.id for message in stored)
    conn.execute("DELETE FROM inbound_sets_done WHERE done_at <= ?", (now - timeout,))
    (oldest,) = conn.execute("SELECT min(received_at) FROM inbound_parts").fetchone()
    # The same double arithmetic as the HAVING above: a set reported due at `next_due`
    # is one that clause takes at that time, never a moment later.
    return ExpiredSets(ids, None if oldest is None else oldest + timeout)


def _store_set(
    conn: sqlite3.Connection,
    cipher: FieldCipher,
    key: bytes,
    total: int,
    now: float,
    *,
    incomplete: bool,
) -> StoredInbound:
    rows: Sequence[Any] = conn.execute(
        f"SELECT {_PART_COLUMNS} FROM inbound_parts WHERE set_key = ? ORDER BY seq",  # noqa: S608 - fixed column list
        (key,),
    ).fetchall()
    part_id, route, _, sender_ct, recipient_ct, _, carrier_id, _ = rows[0]
    texts = {row[2]: cipher.decrypt(row[5], row[0], "body") for row in rows}
    stored = StoredInbound(
        new_message_id(),
        route,
        cipher.decrypt(sender_ct, part_id, "sender"),
        join_parts(texts, total),
        None if recipient_ct is None else cipher.decrypt(recipient_ct, part_id, "recipient"),
        max(row[7] for row in rows),
    )
    inbound_id = stored.id
    sql, params = inbound_statement(
        cipher,
        inbound_id,
        route,
        stored.sender,
        stored.body,
        stored.recipient,
        carrier_id,
        stored.received_at,
        incomplete=incomplete,
    )
    conn.execute(sql, params)
    outbox_sql.write_inbound(conn, inbound_id, route, now)
    conn.execute("DELETE FROM inbound_parts WHERE set_key = ?", (key,))
    conn.executemany(
        "INSERT OR REPLACE INTO inbound_sets_done (set_key, seq, digest, done_at) VALUES (?,?,?,?)",
        [(key, seq, part_digest(cipher, key, seq, text), now) for seq, text in texts.items()],
    )
    return stored
