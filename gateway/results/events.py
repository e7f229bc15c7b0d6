"""Clinical events that each deserve one notice: a result that became final (or was
corrected), a prescription dispensed and ready. One row per order and status, inserted
with `ON CONFLICT DO NOTHING ... RETURNING`: the check whether it was seen before and
the record that it now has been are one statement, so a repeated message (or two at
once) never notifies twice.

Orders are kept as a keyed index of their number (`order_ref`), never the number:
order numbers appear on lab slips and portals, and need not be readable here.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.clinical import notices
from gateway.clinical.commands import ApplyContext
from gateway.clinical.notices import Notice, NoticeKind
from gateway.results.recipient import Recipient


@dataclass(frozen=True, slots=True)
class OrderKey:
    """An order as a feed names it: `number` (EI-1) and `namespace` (EI-2, the
    assigning application), and which number it is (`filler` or `placer`)."""

    number: str
    namespace: str = ""
    role: str = "filler"


@dataclass(frozen=True, slots=True)
class Event:
    order: OrderKey
    status: str  # no PHI: a result status code, or "dispensed"


@dataclass(frozen=True, slots=True)
class Outcome:
    new: tuple[str, ...]  # ids of the events not seen before
    notice_id: str | None
    outcome: str | None  # notice | joined | no_contact; None if nothing was new


def order_ref(ctx: ApplyContext, order: OrderKey) -> str:
    digest = ctx.cipher.keyed_digest("order", ctx.source, order.role, order.namespace, order.number)
    return digest.hex()


def record(
    conn: sqlite3.Connection,
    ctx: ApplyContext,
    kind: NoticeKind,
    recipient: Recipient,
    events: Sequence[Event],
    *,
    template: str,
    purpose: str,
    due_at: float,
    variables: Mapping[str, str],
) -> Outcome:
    """Record `events`; if any is new, plan one notice of `kind` for the recipient, or
    join the one still pending for them (a second result of the same visit needs no
    second SMS saying results are available)."""
    new: list[str] = []
    for event in events:
        event_id = "cev_" + secrets.token_hex(8)
        row = conn.execute(
            "INSERT INTO clinical_events (id, kind, source, order_ref, status, patient_id,"
            " contact_idx, outcome, message_ref, created_at)"
            " VALUES (?,?,?,?,?,?,?,'no_contact',?,?)"
            " ON CONFLICT (kind, source, order_ref, status) DO NOTHING RETURNING id",
            (
                event_id,
                kind.value,
                ctx.source,
                order_ref(ctx, event.order),
                event.status,
                recipient.patient_id,
                recipient.contact_idx,
                ctx.message_ref,
                ctx.now,
            ),
        ).fetchone()
        if row is not None:
            new.append(event_id)
    if not new:
        return Outcome((), None, None)
    if recipient.contact_idx is None:
        return Outcome(tuple(new), None, "no_contact")
    pending = conn.execute(
        "SELECT id FROM clinical_notices WHERE contact_idx = ? AND kind = ? AND state = 'pending'"
        " ORDER BY due_at LIMIT 1",
        (recipient.contact_idx, kind.value),
    ).fetchone()
    if pending is not None:
        notice_id, outcome = str(pending[0]), "joined"
    else:
        notice_id, outcome = (
            notices.schedule(
                conn,
                ctx.cipher,
                Notice(
                    kind,
                    recipient.contact_idx,
                    template,
                    purpose,
                    due_at,
                    variables,
                    language=recipient.language,
                    patient_id=recipient.patient_id,
                    ref=new[0],
                ),
                ctx.now,
            ),
            "notice",
        )
    marks = ",".join("?" * len(new))
    conn.execute(
        f"UPDATE clinical_events SET notice_id = ?, outcome = ? WHERE id IN ({marks})",  # noqa: S608
        (notice_id, outcome, *new),
    )
    return Outcome(tuple(new), notice_id, outcome)


def withdraw(
    conn: sqlite3.Connection, ctx: ApplyContext, kind: NoticeKind, orders: Sequence[OrderKey]
) -> int:
    """Mark the events of `orders` withdrawn (their results will not come); returns how
    many. A notice whose every event is withdrawn is skipped at send time (`recheck`)."""
    refs = [order_ref(ctx, o) for o in orders]
    marks = ",".join("?" * len(refs))
    return conn.execute(
        "UPDATE clinical_events SET withdrawn_at = ? WHERE kind = ? AND source = ?"  # noqa: S608
        f" AND order_ref IN ({marks}) AND withdrawn_at IS NULL",
        (ctx.now, kind.value, ctx.source, *refs),
    ).rowcount


def recheck(conn: sqlite3.Connection, row: notices.NoticeRow, now: float) -> str | None:
    """RESULT_AVAILABLE / MEDICATION_READY at send time: something is still to tell."""
    del now
    r = conn.execute(
        "SELECT count(*), count(withdrawn_at) FROM clinical_events WHERE notice_id = ?",
        (row.id,),
    ).fetchone()
    return "withdrawn" if r[0] and r[0] == r[1] else None


notices.register_recheck(NoticeKind.RESULT_AVAILABLE, recheck)
notices.register_recheck(NoticeKind.MEDICATION_READY, recheck)
