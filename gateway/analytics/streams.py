"""The sources the rollup reads, each after its own committed cursor, and how a batch
of their rows is counted.

Theory of operation. Every source is read in the order its rows commit, so a cursor
never skips a row committed late:

- `events`: `message_events` by `seq` (one writer numbers them in commit order): sent,
  delivered (with its latency from the sent event), failed, expired; a sent message's
  parts go to its route's cost counter.
- `blocked`: blocked messages by `(updated_at, id)`, through their partial index, up to
  `SETTLE` seconds ago (a time is taken before its commit, so the newest few seconds
  may still fill in). Those blocked at accept have no event row; blocked is final, so
  each is read once.
- `inbound`: `inbound` by `seq`: a reply counts against the last message sent to its
  sender within `REPLY_WINDOW` (confirm and cancel as `gateway/replies/` classified
  them, in the inbound's own transaction; anything else is `other`). A text the consent
  keywords acted on (STOP, START, ...) is an opt-out or opt-in, not a reply.
- `consent`: `consent_ledger` by `seq`: an opt-out naming its message, or sent by the
  patient (an inbound), counts against that message or the last one sent before it;
  once per decision, however many scopes it recorded (a STOP writes one row per scope).
- `clicks`: `link_clicks` by `seq`, people only (`human` 1): every click, and the first
  per message (distinct people: one message goes to one person).
- `appointments`: appointments by `(start_at, id)` as their start passes: reminded (a
  rule's reminder was sent before the start) or not, per clinic and rule, unless
  cancelled, discontinued or deleted by then.
- `noshow`: `appointment_events` by `seq` turning an appointment `noshow` (S26): counted
  on the day of its start, reminded or not as above.

A message's keys: its campaign, its template variant (`campaign/variant`, or for a
reminder `template/variant`), its notice's rule, its clinic (the appointment's location
code, else the contact's clinic), its purpose and its route.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.analytics.days import LocalDays
from gateway.analytics.figures import BLOCKED, Dimension, latency_metric

SETTLE = 30.0
REPLY_WINDOW = 7 * 86400.0
BATCH = 2000

# (dim, day, key, metric) -> count
Sums = Counter[tuple[str, str, str, str]]
Row = Sequence[Any]


@dataclass(frozen=True, slots=True)
class Cursor:
    seq: int = 0
    at: float = 0.0
    id: str = ""
    rows: int = 0  # rows folded so far (for progress and the benchmark)


@dataclass(frozen=True, slots=True)
class MessageKeys:
    campaign: str | None
    variant: str | None
    rule: str | None
    clinic: str | None
    purpose: str | None
    route: str | None
    segments: int

    def keys(self, route: str | None = None) -> list[tuple[str, str]]:
        out = [(Dimension.TOTAL.value, ""), (Dimension.PURPOSE.value, self.purpose or "none")]
        if self.campaign:
            out.append((Dimension.CAMPAIGN.value, self.campaign))
        if self.variant:
            out.append((Dimension.TEMPLATE.value, self.variant))
        if self.rule:
            out.append((Dimension.RULE.value, self.rule))
        if self.clinic:
            out.append((Dimension.CLINIC.value, self.clinic))
        if route or self.route:
            out.append((Dimension.ROUTE.value, route or self.route or ""))
        return out


TOTAL_ONLY = [(Dimension.TOTAL.value, "")]

# A message's keys, for a batch of ids (a JSON array).
KEYS_SQL = """
SELECT m.id, m.campaign_id, coalesce(m.variant, n.variant), n.template, n.rule_id,
       coalesce(a.location_code, c.clinic), m.purpose, m.route, m.segments
FROM json_each(?) j
JOIN messages m ON m.id = j.value
LEFT JOIN clinical_notices n
    ON n.id = (SELECT x.id FROM clinical_notices x WHERE x.message_id = m.id LIMIT 1)
LEFT JOIN appointments a ON a.id = n.appointment_id
LEFT JOIN contacts c ON c.idx = m.to_index
"""


def message_keys(row: Row) -> MessageKeys:
    _, campaign, variant, template, rule, clinic, purpose, route, segments = row
    owner = campaign or template
    return MessageKeys(
        campaign,
        f"{owner}/{variant}" if variant and owner else None,
        rule,
        clinic,
        purpose,
        route,
        int(segments or 1),
    )


# The last message sent to a number (blind index ?1) before ?2, within the window.
_LAST_SENT = """
(SELECT m.id FROM messages m WHERE m.to_index = {idx} AND m.created_at < {at}
   AND m.created_at >= {at} - {window} AND coalesce(m.purpose, '') <> 'compliance'
   AND EXISTS (SELECT 1 FROM json_each(m.event_seqs) j JOIN message_events s
               ON s.seq = j.value WHERE s.state = 'sent' AND s.at < {at})
 ORDER BY m.created_at DESC, m.id DESC LIMIT 1)
"""

# Rules whose reminder for appointment `a` was sent before its start (JSON array).
_REMINDED = """
(SELECT json_group_array(DISTINCT n.rule_id) FROM clinical_notices n
 WHERE n.appointment_id = a.id AND n.rule_id IS NOT NULL AND n.message_id IS NOT NULL
   AND EXISTS (SELECT 1 FROM messages m, json_each(m.event_seqs) j
               JOIN message_events s ON s.seq = j.value WHERE m.id = n.message_id
               AND s.state = 'sent' AND s.at <= a.start_at))
"""

NOT_HELD = ("cancelled", "discontinued", "deleted")


@dataclass(frozen=True, slots=True)
class Stream:
    """One source: its query (parameters: the cursor, `now`, the batch size), whether
    its rows need their message's keys, and how a row is counted."""

    name: str
    sql: str
    params: Callable[[Cursor, float, int], tuple[Any, ...]]
    advance: Callable[[Cursor, Row, int], Cursor]
    # (row, the keys of its message or None, days, sums)
    count: Callable[[Row, MessageKeys | None, LocalDays, Sums], None]
    message_column: int | None = None  # the row's message id, whose keys it needs


def _by_seq(c: Cursor, row: Row, n: int) -> Cursor:
    return Cursor(int(row[0]), 0.0, "", c.rows + n)


def _by_time(c: Cursor, row: Row, n: int) -> Cursor:
    return Cursor(0, float(row[0]), str(row[1]), c.rows + n)


def _add(sums: Sums, keys: list[tuple[str, str]], day: str, metric: str, n: int = 1) -> None:
    for dim, key in keys:
        sums[(dim, day, key, metric)] += n


# -- events ---------------------------------------------------------------------------
EVENTS_SQL = """
SELECT e.seq, e.at, e.state, e.route, e.message_id,
       CASE WHEN e.state = 'delivered' THEN
           (SELECT max(s.at) FROM messages m, json_each(m.event_seqs) j
            JOIN message_events s ON s.seq = j.value WHERE m.id = e.message_id
            AND s.state = 'sent' AND s.seq < e.seq) END
FROM message_events e
WHERE e.seq > ? AND e.state IN ('sent', 'delivered', 'failed', 'expired')
ORDER BY e.seq LIMIT ?
"""


def _count_event(row: Row, m: MessageKeys | None, days: LocalDays, sums: Sums) -> None:
    _, at, state, route, _, sent_at = row
    keys = TOTAL_ONLY if m is None else m.keys(route)
    day = days.day(at)
    _add(sums, keys, day, state)
    if state == "sent":
        _add(sums, keys, day, "parts", m.segments if m is not None else 1)
    elif state == "delivered" and sent_at is not None:
        _add(sums, keys, day, latency_metric(max(0.0, at - sent_at)))


# -- blocked --------------------------------------------------------------------------
# After the cursor (time, id): `>= ?` first, so the index is entered at the cursor (an OR
# of the two alone walked the whole index on every wake of the rollup: 1.5% CPU idle
# at 150,000 blocked messages).
BLOCKED_SQL = """
SELECT m.updated_at, m.id, m.error_code, m.id
FROM messages m INDEXED BY analytics_blocked_messages
WHERE m.state = 'blocked' AND m.updated_at >= ? AND (m.updated_at > ? OR m.id > ?)
  AND m.updated_at <= ?
ORDER BY m.updated_at, m.id LIMIT ?
"""


def _count_blocked(row: Row, m: MessageKeys | None, days: LocalDays, sums: Sums) -> None:
    at, _, reason, _ = row
    keys = TOTAL_ONLY if m is None else m.keys()
    _add(sums, keys, days.day(at), BLOCKED + (reason or "unknown"))


# -- inbound --------------------------------------------------------------------------
INBOUND_SQL = f"""
SELECT i.seq, i.received_at, r.intent,
       EXISTS (SELECT 1 FROM consent_ledger l WHERE l.contact_idx = i.sender_index
               AND l.inbound_id = i.id),
       {_LAST_SENT.format(idx="i.sender_index", at="i.received_at", window="?")}
FROM inbound i LEFT JOIN appointment_replies r ON r.inbound_id = i.id
WHERE i.seq > ? ORDER BY i.seq LIMIT ?
"""  # noqa: S608 - fixed fragments


def _count_inbound(row: Row, m: MessageKeys | None, days: LocalDays, sums: Sums) -> None:
    _, at, intent, consent, message_id = row
    if consent or message_id is None or m is None:
        return
    kind = intent if intent in ("confirm", "cancel") else "other"
    _add(sums, m.keys(), days.day(at), f"replied_{kind}")


# -- consent --------------------------------------------------------------------------
CONSENT_SQL = f"""
SELECT l.seq, l.at,
       coalesce(l.message_id,
                {_LAST_SENT.format(idx="l.contact_idx", at="l.at", window="?")})
FROM consent_ledger l
WHERE l.seq > ? AND l.decision = 'opt_out'
  AND (l.message_id IS NOT NULL OR l.inbound_id IS NOT NULL)
  AND NOT EXISTS (SELECT 1 FROM consent_ledger p WHERE p.contact_idx = l.contact_idx
                  AND p.seq < l.seq AND p.decision = 'opt_out'
                  AND (p.inbound_id = l.inbound_id
                       OR (l.inbound_id IS NULL AND p.inbound_id IS NULL AND p.at = l.at
                           AND p.message_id IS l.message_id)))
ORDER BY l.seq LIMIT ?
"""  # noqa: S608 - fixed fragments


def _count_opt_out(row: Row, m: MessageKeys | None, days: LocalDays, sums: Sums) -> None:
    _add(sums, TOTAL_ONLY if m is None else m.keys(), days.day(row[1]), "opted_out")


# -- clicks ---------------------------------------------------------------------------
CLICKS_SQL = """
SELECT c.seq, c.at, c.message_id,
       NOT EXISTS (SELECT 1 FROM link_clicks p WHERE p.message_id = c.message_id
                   AND p.human = 1 AND p.seq < c.seq)
FROM link_clicks c
WHERE c.seq > ? AND c.human = 1 AND c.message_id IS NOT NULL
ORDER BY c.seq LIMIT ?
"""


def _count_click(row: Row, m: MessageKeys | None, days: LocalDays, sums: Sums) -> None:
    keys = TOTAL_ONLY if m is None else m.keys()
    day = days.day(row[1])
    _add(sums, keys, day, "clicks")
    if row[3]:
        _add(sums, keys, day, "clicked")


# -- appointments ---------------------------------------------------------------------
APPOINTMENTS_SQL = f"""
SELECT a.start_at, a.id, a.location_code, a.status, {_REMINDED}
FROM appointments a INDEXED BY appointments_start
WHERE a.start_at IS NOT NULL AND (a.start_at > ? OR (a.start_at = ? AND a.id > ?))
  AND a.start_at <= ?
ORDER BY a.start_at, a.id LIMIT ?
"""  # noqa: S608 - fixed fragments

NOSHOW_SQL = f"""
SELECT e.seq, a.start_at, a.id, a.location_code, {_REMINDED}
FROM appointment_events e JOIN appointments a ON a.id = e.appointment_id
WHERE e.seq > ? AND e.new_status = 'noshow' AND e.old_status IS NOT 'noshow'
  AND a.start_at IS NOT NULL
ORDER BY e.seq LIMIT ?
"""  # noqa: S608 - fixed fragments


def _appointment(sums: Sums, days: LocalDays, start: float, clinic: str | None,
                 rules_json: str | None, what: str) -> None:  # fmt: skip
    rules = [r for r in json.loads(rules_json or "[]") if r]
    kind = "reminded" if rules else "unreminded"
    keys = [(Dimension.TOTAL.value, "")]
    if clinic:
        keys.append((Dimension.CLINIC.value, clinic))
    keys += [(Dimension.RULE.value, r) for r in rules]
    _add(sums, keys, days.day(start), f"{what}_{kind}")


def _count_appointment(row: Row, m: MessageKeys | None, days: LocalDays, sums: Sums) -> None:
    start, _, clinic, status, rules = row
    if status not in NOT_HELD:
        _appointment(sums, days, start, clinic, rules, "appointments")


def _count_noshow(row: Row, m: MessageKeys | None, days: LocalDays, sums: Sums) -> None:
    _, start, _, clinic, rules = row
    _appointment(sums, days, start, clinic, rules, "noshow")


STREAMS: tuple[Stream, ...] = (
    Stream("events", EVENTS_SQL, lambda c, now, n: (c.seq, n), _by_seq, _count_event, 4),
    Stream(
        "blocked",
        BLOCKED_SQL,
        lambda c, now, n: (c.at, c.at, c.id, now - SETTLE, n),
        _by_time,
        _count_blocked,
        3,
    ),
    Stream(
        "inbound",
        INBOUND_SQL,
        lambda c, now, n: (REPLY_WINDOW, c.seq, n),
        _by_seq,
        _count_inbound,
        4,
    ),
    Stream(
        "consent",
        CONSENT_SQL,
        lambda c, now, n: (REPLY_WINDOW, c.seq, n),
        _by_seq,
        _count_opt_out,
        2,
    ),
    Stream("clicks", CLICKS_SQL, lambda c, now, n: (c.seq, n), _by_seq, _count_click, 2),
    Stream(
        "appointments",
        APPOINTMENTS_SQL,
        lambda c, now, n: (c.at, c.at, c.id, now, n),
        _by_time,
        _count_appointment,
    ),
    Stream("noshow", NOSHOW_SQL, lambda c, now, n: (c.seq, n), _by_seq, _count_noshow),
)


def fold(
    stream: Stream,
    rows: Sequence[Row],
    keys: dict[str, MessageKeys],
    days: LocalDays,
    cursor: Cursor,
) -> tuple[Sums, Cursor]:
    """A batch of `stream`'s rows counted, and the cursor after its last row."""
    sums: Sums = Counter()
    for row in rows:
        m = None
        if stream.message_column is not None and row[stream.message_column] is not None:
            m = keys.get(row[stream.message_column])
        stream.count(row, m, days, sums)
    return sums, stream.advance(cursor, rows[-1], len(rows)) if rows else cursor


def message_ids(stream: Stream, rows: Sequence[Row]) -> list[str]:
    if stream.message_column is None:
        return []
    col = stream.message_column
    return sorted({str(r[col]) for r in rows if r[col] is not None})
