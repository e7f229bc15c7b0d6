"""Campaigns in SQLite: the rows, their state changes, the per-recipient ledger that
keeps a recipient from a second message, and the progress counts.

Write functions take the writer's connection, so a change commits with its audit entry
(and a recipient's row with its message). The progress reads are indexed:
`messages_campaign` (campaign, variant, state) for the message counts, the inbound and
ledger indexes by number for replies and opt-outs, `campaign_recipients_skipped` for
the recipients that got no message.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from gateway.campaigns.model import (
    FROM,
    Campaign,
    CampaignSpec,
    CampaignState,
    Progress,
    Split,
    Tally,
)
from gateway.contacts.audience import AudienceSpec
from gateway.store.crypto import FieldCipher

COLUMNS = (
    "id, name, state, spec, content_ct, audience_size, created_by, created_at, updated_at,"
    " started_at, done_at"
)
GET_SQL = f"SELECT {COLUMNS} FROM campaigns WHERE id = ?"  # noqa: S608 - constant columns
LIST_SQL = f"SELECT {COLUMNS} FROM campaigns ORDER BY created_at DESC, id LIMIT ?"  # noqa: S608
LIVE_SQL = (
    f"SELECT {COLUMNS} FROM campaigns"  # noqa: S608 - constant columns
    " WHERE state IN ('scheduled', 'running') ORDER BY created_at, id"
)

GROUPS_SQL = "SELECT id, name FROM contact_groups ORDER BY name, id LIMIT 500"
TEMPLATE_NAMES_SQL = (
    "SELECT DISTINCT name FROM template_heads WHERE active IS NOT NULL ORDER BY name LIMIT 500"
)


def new_id() -> str:
    return "cmp_" + secrets.token_hex(8)


def _spec_json(spec: CampaignSpec, priority: str, rate: float) -> str:
    return json.dumps(
        {
            "audience": msgspec.to_builtins(spec.audience),
            "purpose": spec.purpose,
            "template": spec.template,
            "split": [[s.name, s.weight] for s in spec.split],
            "priority": spec.priority,
            "class": priority,
            "starts_at": spec.starts_at,
            "ends_at": spec.ends_at,
            "rate": rate,
        },
        sort_keys=True,
    )


def insert_row(
    cipher: FieldCipher,
    campaign_id: str,
    spec: CampaignSpec,
    priority: str,
    rate: float,
    actor: str,
    now: float,
) -> tuple[Any, ...]:
    """A new draft's `campaigns` row: id, name, state, spec, content_ct, created_by,
    created_at, updated_at (its text and values encrypted, bound to its id)."""
    content = None
    if spec.text is not None or spec.variables:
        content = cipher.encrypt(
            json.dumps({"text": spec.text, "variables": dict(spec.variables)}),
            campaign_id,
            "content",
        )
    return (
        campaign_id,
        spec.name,
        CampaignState.DRAFT.value,
        _spec_json(spec, priority, rate),
        content,
        actor,
        now,
        now,
    )


def insert(
    conn: sqlite3.Connection,
    cipher: FieldCipher,
    campaign_id: str,
    spec: CampaignSpec,
    priority: str,
    rate: float,
    actor: str,
    now: float,
) -> None:
    conn.execute(
        "INSERT INTO campaigns (id, name, state, spec, content_ct, created_by, created_at,"
        " updated_at) VALUES (?,?,?,?,?,?,?,?)",
        insert_row(cipher, campaign_id, spec, priority, rate, actor, now),
    )


def audience_of(spec_json: str) -> AudienceSpec:
    """The audience of a campaign's `spec` column."""
    return msgspec.convert(json.loads(spec_json)["audience"], AudienceSpec)


def campaign_of(cipher: FieldCipher, r: Sequence[Any]) -> Campaign:
    raw = json.loads(r[3])
    content: dict[str, Any] = {}
    if r[4] is not None:
        content = json.loads(cipher.decrypt(r[4], r[0], "content"))
    spec = CampaignSpec(
        name=r[1],
        audience=msgspec.convert(raw["audience"], AudienceSpec),
        purpose=raw["purpose"],
        template=raw["template"],
        text=content.get("text"),
        split=tuple(Split(n, w) for n, w in raw["split"]),
        variables=tuple(sorted(content.get("variables", {}).items())),
        priority=raw["priority"],
        starts_at=raw["starts_at"],
        ends_at=raw["ends_at"],
        rate=raw["rate"],
    )
    return Campaign(
        id=r[0],
        spec=spec,
        state=CampaignState(r[2]),
        priority=raw["class"],
        rate=raw["rate"],
        audience_size=r[5],
        created_by=r[6],
        created_at=r[7],
        updated_at=r[8],
        started_at=r[9],
        done_at=r[10],
    )


def get(conn: sqlite3.Connection, cipher: FieldCipher, campaign_id: str) -> Campaign | None:
    r = conn.execute(GET_SQL, (campaign_id,)).fetchone()
    return None if r is None else campaign_of(cipher, r)


def move(
    conn: sqlite3.Connection,
    campaign_id: str,
    allowed: Iterable[CampaignState],
    target: CampaignState,
    now: float,
    *,
    audience_size: int | None = None,
) -> bool:
    """`target` if the campaign is in one of `allowed`, in one statement; False if not."""
    states = [s.value for s in allowed]
    marks = ",".join("?" * len(states))
    started = now if target in (CampaignState.SCHEDULED, CampaignState.RUNNING) else None
    done = now if target.done else None
    r = conn.execute(
        "UPDATE campaigns SET state = ?, updated_at = ?,"  # noqa: S608 - placeholders only
        " started_at = coalesce(started_at, ?), done_at = coalesce(?, done_at),"
        " audience_size = coalesce(?, audience_size)"
        f" WHERE id = ? AND state IN ({marks}) RETURNING id",
        (target.value, now, started, done, audience_size, campaign_id, *states),
    ).fetchone()
    return r is not None


def act(
    conn: sqlite3.Connection, campaign_id: str, action: str, target: CampaignState, now: float
) -> bool:
    return move(conn, campaign_id, FROM[action], target, now)


def state_of(conn: sqlite3.Connection, campaign_id: str) -> tuple[CampaignState, bytes] | None:
    r = conn.execute("SELECT state, cursor FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()
    return None if r is None else (CampaignState(r[0]), bytes(r[1]))


def set_cursor(conn: sqlite3.Connection, campaign_id: str, cursor: bytes, now: float) -> None:
    conn.execute(
        "UPDATE campaigns SET cursor = ?, updated_at = ? WHERE id = ?", (cursor, now, campaign_id)
    )


def _marks(values: Sequence[object]) -> str:
    return ",".join("?" * len(values))


def contacts_of(conn: sqlite3.Connection, idxs: Sequence[bytes]) -> dict[bytes, sqlite3.Row]:
    """Number ciphertext and language of a pass's contacts, in one read."""
    if not idxs:
        return {}
    rows = conn.execute(
        f"SELECT idx, number_ct, language FROM contacts WHERE idx IN ({_marks(idxs)})",  # noqa: S608 - placeholders only
        list(idxs),
    ).fetchall()
    return {bytes(r[0]): r for r in rows}


def handled_before(conn: sqlite3.Connection, campaign_id: str, idxs: Sequence[bytes]) -> set[bytes]:
    """Which of `idxs` already have their row (a second pass, a restart with its cursor
    lost): the caller must not send to them. Read in the pass's own transaction on the
    one writer, so nothing can record them between this read and the pass's insert."""
    if not idxs:
        return set()
    rows = conn.execute(
        "SELECT contact_idx FROM campaign_recipients"  # noqa: S608 - placeholders only
        f" WHERE campaign_id = ? AND contact_idx IN ({_marks(idxs)})",
        [campaign_id, *idxs],
    ).fetchall()
    return {bytes(r[0]) for r in rows}


@dataclass(frozen=True, slots=True)
class Handled:
    """One recipient a pass handled: its outcome and the message it got, if any."""

    idx: bytes
    outcome: str
    message_id: str | None = None
    variant: str | None = None


def record_recipients(
    conn: sqlite3.Connection, campaign_id: str, handled: Sequence[Handled], now: float
) -> None:
    """Each recipient's row, and each message tagged with the campaign and variant. A
    plain insert: a row already there (which `handled_before` rules out) fails the
    whole pass rather than let a recipient have two messages."""
    conn.executemany(
        "INSERT INTO campaign_recipients (campaign_id, contact_idx, message_id, outcome, at)"
        " VALUES (?, ?, ?, ?, ?)",
        [(campaign_id, h.idx, h.message_id, h.outcome, now) for h in handled],
    )
    conn.executemany(
        "UPDATE messages SET campaign_id = ?, variant = ? WHERE id = ?",
        [(campaign_id, h.variant, h.message_id) for h in handled if h.message_id is not None],
    )


def waiting_messages(conn: sqlite3.Connection, campaign_id: str) -> list[str]:
    """The campaign's messages not yet handed to a carrier (what a cancel withdraws)."""
    rows = conn.execute(
        "SELECT id FROM messages WHERE campaign_id = ? AND state IN ('queued', 'scheduled')",
        (campaign_id,),
    ).fetchall()
    return [r[0] for r in rows]


# -- progress ---------------------------------------------------------------------------

STATES_SQL = (
    "SELECT coalesce(variant, ''), state, count(*) FROM messages"
    " WHERE campaign_id = ? GROUP BY 1, 2"
)
BLOCKED_SQL = (
    "SELECT coalesce(variant, ''), coalesce(error_code, 'blocked'), count(*) FROM messages"
    " WHERE campaign_id = ? AND state = 'blocked' GROUP BY 1, 2"
)
SKIPPED_SQL = (
    "SELECT outcome, count(*) FROM campaign_recipients"
    " WHERE campaign_id = ? AND message_id IS NULL GROUP BY outcome"
)
# A reply: an inbound message from a recipient received after the campaign's message
# and before any later message to them (else it answers that one: a survey's question),
# that no consent keyword acted on (STOP is an opt-out); as the analytics count it.
# Both counts start from the few senders (opt-outs) since the campaign was created (the
# second parameter: none of its messages is older) and look up their messages by
# number (`+` keeps SQLite from reading the whole campaign through its index instead).
REPLIES_SQL = (
    "SELECT coalesce(m.variant, ''), count(*) FROM messages m WHERE +m.campaign_id = ?1"
    " AND m.to_index IN (SELECT sender_index FROM inbound WHERE received_at >= ?2)"
    " AND EXISTS (SELECT 1 FROM inbound i WHERE i.sender_index = m.to_index"
    " AND i.received_at >= m.created_at"
    " AND NOT EXISTS (SELECT 1 FROM consent_ledger l WHERE l.contact_idx = i.sender_index"
    " AND l.inbound_id = i.id)"
    " AND NOT EXISTS (SELECT 1 FROM messages n WHERE n.to_index = m.to_index"
    " AND n.created_at > m.created_at AND n.created_at < i.received_at"
    " AND coalesce(n.purpose, '') <> 'compliance')) GROUP BY 1"
)
# An opt-out: a ledger entry naming the campaign's message, or any opt-out after it
# (a STOP keyword is recorded with the inbound message, not with ours).
OPT_OUTS_SQL = (
    "SELECT coalesce(m.variant, ''), count(*) FROM messages m WHERE +m.campaign_id = ?1"
    " AND m.to_index IN (SELECT contact_idx FROM consent_ledger"
    " WHERE decision = 'opt_out' AND at >= ?2)"
    " AND EXISTS (SELECT 1 FROM consent_ledger l WHERE l.contact_idx = m.to_index"
    " AND l.decision = 'opt_out' AND (l.message_id = m.id OR l.at >= m.created_at))"
    " GROUP BY 1"
)


def any_blocked(states: Iterable[Sequence[Any]]) -> bool:
    """Whether the rows of `STATES_SQL` count any blocked message."""
    return any(state == "blocked" for _, state, _ in states)


def progress_of(
    states: Iterable[Sequence[Any]],
    blocked: Iterable[Sequence[Any]],
    skipped: Iterable[Sequence[Any]],
    replies: Iterable[Sequence[Any]],
    opt_outs: Iterable[Sequence[Any]],
    audience_size: int | None,
) -> Progress:
    """The counts from the rows of the five progress queries."""
    total = Tally()
    variants: dict[str, Tally] = {}
    handled = 0

    def of(variant: str) -> Tally:
        return variants.setdefault(variant, Tally())

    for variant, state, n in states:
        total.add_state(state, n)
        of(variant).add_state(state, n)
        handled += n
    for variant, reason, n in blocked:
        for t in (total, of(variant)):
            t.blocked[reason] = t.blocked.get(reason, 0) + n
    for outcome, n in skipped:
        reason = str(outcome).removeprefix("skipped:")
        total.skipped[reason] = total.skipped.get(reason, 0) + n
        handled += n
    for variant, n in replies:
        total.replies += n
        of(variant).replies += n
    for variant, n in opt_outs:
        total.opt_outs += n
        of(variant).opt_outs += n
    return Progress(total, variants, handled, audience_size)
