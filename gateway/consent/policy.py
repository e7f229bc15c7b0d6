"""The send policy: what a message is for, and whether, when or never it may go.

Theory of operation. At accept, `purpose_of` and `priority_of` shape the message from
its purpose (MSG-1), then `decide` runs on the writer's connection in the transaction
that inserts it, so the count of a frequency cap and the insert that the count allowed
are one step (parallel accepts cannot both take the last place). The verdict is one of:

- send: `queued` (or `scheduled` at the client's `send_at`);
- defer: `scheduled` at the first instant the local sending window is open in every
  zone the recipient may be in (MSG-10) and every cap of the purpose has room (MSG-3);
- block: stored `blocked` with the reason (`opted_out`, `no_consent`, `frequency_cap`,
  or `quiet_hours` / `frequency_cap` when holding it would outlive its expiry).

At claim, `claim_verdict` runs inside the claim's own transaction (the store's
`_claim_many`), so an opt-out committed before the claim keeps the message from ever
becoming `sending` (MSG-5), and a message that waited in the queue until its window
closed waits, still `queued`, for the next opening. `compliance` messages (keyword
replies) are never refused. With `[consent] enabled = false` nothing is checked (a
benchmark's baseline).

Caps count messages to the same recipient (blind index) of the same purpose — every
clinical purpose together — that are not blocked, cancelled or expired, each at the
time it goes: its `send_at` (a deferred message's is when it was allowed), else when
it was accepted. A cap `n/W` holds when no span of length W holds more than n of them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.consent import ledger
from gateway.consent.purposes import (
    CLIENT_PURPOSES,
    Cap,
    Kind,
    Purpose,
)
from gateway.consent.settings import ConsentConfig, policy_table
from gateway.consent.zones import next_open, recipient_zones
from gateway.errors import ApiError
from gateway.models import Priority, State
from gateway.store.claim_check import ClaimSubject, Held

BLOCKING = ("blocked", "cancelled", "expired")
_CLINICAL = tuple(p.value for p in CLIENT_PURPOSES if p.kind is Kind.CLINICAL)
_MAX_STEPS = 64  # quiet hours and caps push a deferral forward in turn; this bounds it


@dataclass(frozen=True, slots=True)
class Verdict:
    state: State  # QUEUED, SCHEDULED or BLOCKED
    send_at: float | None  # when it may go (None: at once)
    reason: str | None  # why it was held or blocked; None when it goes as asked


class Policy:
    def __init__(self, config: ConsentConfig) -> None:
        self.config = config
        self.enabled = config.enabled
        self.table = policy_table(config)

    # -- shaping at accept -------------------------------------------------------------

    def purpose_of(
        self, named: str | None, token_default: str | None, field_prefix: str = ""
    ) -> Purpose:
        """The purpose named, else the token's default, else the config's; else 422."""
        chosen = named or token_default or self.config.default_purpose
        if chosen is None:
            raise ApiError(
                422,
                "missing_purpose",
                f"{field_prefix}purpose: required (no default purpose for this token or"
                " the gateway)",
                field=f"{field_prefix}purpose",
            )
        return Purpose(chosen)

    def priority_of(self, purpose: Purpose, named: str | None, field_prefix: str = "") -> Priority:
        policy = self.table[purpose]
        if named is None:
            return Priority.parse(policy.priority)
        priority = Priority.parse(named)
        if priority < Priority.parse(policy.highest):
            raise ApiError(
                422,
                "priority_not_allowed",
                f"{field_prefix}priority: above the most urgent class the message's purpose"
                f" allows ({policy.highest})",
                field=f"{field_prefix}priority",
            )
        return priority

    # -- the verdict at accept ---------------------------------------------------------

    def decide(
        self,
        conn: sqlite3.Connection,
        *,
        to: str,
        to_index: bytes,
        purpose: Purpose,
        priority: Priority,
        route: str | None,
        start: float,
        expires_at: float,
        quiet_hours_override: bool = False,
    ) -> Verdict:
        """Whether a message may go at `start` (now, or its `send_at`), later, or never."""
        policy = self.table[purpose]
        if not self.enabled or purpose is Purpose.COMPLIANCE:
            return Verdict(State.QUEUED, None, None)
        program = self.config.program_for_route(route or "")
        refusal = ledger.standing(conn, to_index, program, policy).refusal(policy)
        if refusal is not None:
            return Verdict(State.BLOCKED, None, refusal)
        window = policy.window
        if quiet_hours_override or priority is Priority.CRITICAL:
            window = None
        zones: tuple[str, ...] = ()
        if window is not None:
            row = conn.execute("SELECT time_zone FROM contacts WHERE idx = ?", (to_index,))
            found = row.fetchone()
            zones = recipient_zones(to, found[0] if found else None)
        times = _cap_times(conn, to_index, purpose, start, policy.caps) if policy.caps else []
        at, reason = start, None
        for _ in range(_MAX_STEPS):
            room = _cap_room(times, policy.caps, at)
            if room > at:
                if policy.over_cap == "block":
                    return Verdict(State.BLOCKED, None, "frequency_cap")
                at, reason = room, "frequency_cap"
            opening = next_open(window, zones, at) if window is not None else at
            if opening > at:
                at, reason = opening, "quiet_hours"
                continue
            if room <= at:
                break
        if at >= expires_at:
            return Verdict(State.BLOCKED, None, reason or "quiet_hours")
        if reason is None:
            return Verdict(State.QUEUED, None, None)
        return Verdict(State.SCHEDULED, at, reason)

    # -- the check at claim ------------------------------------------------------------

    def claim_verdict(
        self, conn: sqlite3.Connection, s: ClaimSubject, number: Callable[[ClaimSubject], str]
    ) -> str | Held | None:
        """At claim, in the claim's transaction: the reason to block a queued message
        (an opt-out since it was accepted), `Held` until its sending window opens (a
        message that waited in the queue past the window's end), or None to send it.
        `number` decrypts the recipient, needed only when the window is looked at."""
        if not self.enabled or s.purpose is None or s.purpose == Purpose.COMPLIANCE.value:
            return None
        policy = self.table[Purpose(s.purpose)]
        program = self.config.program_for_route(s.route)
        refusal = ledger.standing(conn, s.to_index, program, policy).refusal(policy)
        if refusal is not None:
            return refusal
        window = policy.window
        if window is None or s.quiet_override or s.priority is Priority.CRITICAL:
            return None
        found = conn.execute(
            "SELECT time_zone FROM contacts WHERE idx = ?", (s.to_index,)
        ).fetchone()
        zones = recipient_zones(number(s), found[0] if found else None)
        opening = next_open(window, zones, s.now)
        return Held(opening, "quiet_hours") if opening > s.now else None


def cap_group(purpose: Purpose) -> tuple[str, ...]:
    """The purposes whose messages count against `purpose`'s caps."""
    return _CLINICAL if purpose.kind is Kind.CLINICAL else (purpose.value,)


def _cap_times(
    conn: sqlite3.Connection, to_index: bytes, purpose: Purpose, start: float, caps: Sequence[Cap]
) -> list[float]:
    """When each counted message to this recipient goes, from the longest cap's reach back."""
    group = cap_group(purpose)
    since = start - max(c.seconds for c in caps)
    marks = ",".join("?" * len(group))
    rows = conn.execute(
        "SELECT max(coalesce(send_at, created_at), created_at) AS at FROM messages"  # noqa: S608 - placeholders only
        f" WHERE to_index = ? AND purpose IN ({marks})"
        " AND state NOT IN ('blocked', 'cancelled', 'expired') AND at > ?",
        (to_index, *group, since),
    ).fetchall()
    return sorted(float(r[0]) for r in rows)


def _cap_room(times: Sequence[float], caps: Sequence[Cap], at: float) -> float:
    """The first instant at or after `at` where one more message keeps every cap.

    A cap n/W holds for a new message at x when no span [s, s + W) containing x holds n
    others; such spans start at x - W (exclusive) or at one of the others. Moving x only
    helps once it passes some other's t + W, so those are the candidates."""
    if not caps:
        return at
    candidates = sorted({at, *(t + c.seconds for t in times for c in caps if t + c.seconds > at)})
    for x in candidates:
        if all(_fits(times, cap, x) for cap in caps):
            return x
    return candidates[-1]


def _fits(times: Sequence[float], cap: Cap, x: float) -> bool:
    w = cap.seconds
    near = [t for t in times if x - w < t < x + w]
    if len(near) < cap.count:
        return True
    # The span ending at x, and each span starting at another message before or at x.
    if sum(1 for t in near if t <= x) >= cap.count:
        return False
    for s in near:
        if s <= x and sum(1 for t in near if s <= t < s + w) >= cap.count:
            return False
    # Spans starting after x - W that contain x but start at x itself.
    return sum(1 for t in near if x <= t < x + w) < cap.count
