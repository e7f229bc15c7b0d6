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

import bisect
import functools
import math
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from gateway.consent import ledger
from gateway.consent.purposes import (
    CLIENT_PURPOSES,
    Cap,
    Kind,
    Purpose,
    PurposePolicy,
    Window,
)
from gateway.consent.settings import ConsentConfig, policy_table
from gateway.consent.state_cache import EPOCH_ROW, StateCache
from gateway.consent.zones import next_open, recipient_zones
from gateway.errors import ApiError
from gateway.models import Priority, State
from gateway.store.claim_check import ClaimSubject, Held

if TYPE_CHECKING:
    from gateway.intake import Prepared

BLOCKING = ("blocked", "cancelled", "expired")
_CLINICAL = tuple(p.value for p in CLIENT_PURPOSES if p.kind is Kind.CLINICAL)
_MAX_STEPS = 64  # quiet hours and caps push a deferral forward in turn; this bounds it


class Verdict(msgspec.Struct, frozen=True):
    state: State  # QUEUED, SCHEDULED or BLOCKED
    send_at: float | None  # when it may go (None: at once)
    reason: str | None  # why it was held or blocked; None when it goes as asked


QUEUED = Verdict(State.QUEUED, None, None)  # the one verdict of a message that goes at once
_PURPOSES = {p.value: p for p in Purpose}


@functools.cache
def _blocked(reason: str) -> Verdict:
    return Verdict(State.BLOCKED, None, reason)


_SKEW_MARGIN = 600.0


class Policy:
    def __init__(self, config: ConsentConfig) -> None:
        self.config = config
        self.enabled = config.enabled
        self.table = policy_table(config)
        # How far back any cap looks: what a group's view reads of recent messages.
        self.reach = max((c.seconds for p in self.table.values() for c in p.caps), default=0.0)
        self.capped = sorted(
            {c for p, rule in self.table.items() if rule.caps for c in cap_group(p)}
        )
        self._rules = {p: _Rule.of(p, policy, self.capped) for p, policy in self.table.items()}
        # The purposes some cap of their own applies to: their recipients' sends are read.
        self.capping = frozenset(p for p, rule in self._rules.items() if rule.caps)
        self._programs: dict[str | None, str] = {}  # by route: the config is fixed
        self._state = StateCache()  # the writer's: for views built on its thread alone

    def view(
        self,
        conn: sqlite3.Connection,
        recipients: Sequence[tuple[bytes, Purpose]],
        now: float,
        *,
        writer: bool = False,
    ) -> GroupView:
        """What the accepts of one transaction need to know of these recipients (each
        with the purpose of a message to it). `writer`: `conn` is the writer's and this
        runs on its thread, so the consent rows it kept from earlier groups serve (a
        reader's connection, another thread, reads them afresh)."""
        rules = self._rules
        capped = [idx for idx, purpose in recipients if rules[purpose].caps]
        return self.group_view(conn, [idx for idx, _ in recipients], capped, now, writer=writer)

    def group_view(
        self,
        conn: sqlite3.Connection,
        to_indexes: Sequence[bytes],
        capped_indexes: Sequence[bytes],
        now: float,
        *,
        writer: bool = False,
    ) -> GroupView:
        """`view` from the recipients' blind indexes, and those of the recipients of
        messages whose purpose has caps (`capping`), as the writer's job gathers them."""
        return GroupView(
            conn,
            self._state if writer else StateCache(),
            to_indexes,
            capped_indexes,
            self.counted_since(now),
            self.capped,
        )

    def counted_since(self, now: float) -> float:
        """How far back an accept's view reads the messages its caps count: a send_at
        may lie a little in the past (intake.SEND_AT_SKEW), so that much further back
        than the caps reach, and every message a cap counts is read."""
        return now - self.reach - _SKEW_MARGIN

    def has_caps(self, purpose: Purpose) -> bool:
        return bool(self._rules[purpose].caps)

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
        found = _PURPOSES.get(chosen)  # the enum's own lookup runs Python on every accept
        return found if found is not None else Purpose(chosen)

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
        view: GroupView,
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
        """Whether a message may go at `start` (now, or its `send_at`), later, or never,
        from what `view` knows of its recipient. A message that may go (now or later)
        is counted in `view` from here on, so the caps of the messages judged after it
        in the same transaction count it."""
        return self.verdict(
            view, to, to_index, purpose, priority, route, start, expires_at, quiet_hours_override
        )

    def verdict(
        self,
        view: GroupView,
        to: str,
        to_index: bytes,
        purpose: Purpose,
        priority: Priority,
        route: str | None,
        start: float,
        expires_at: float,
        quiet_hours_override: bool,
    ) -> Verdict:
        """`decide`, its arguments by position."""
        rule = self._rules[purpose]
        if rule.exempt or not self.enabled:
            return QUEUED
        refusal = rule.refusal(view.state.get(to_index, ()), self._program(route))
        if refusal is not None:
            return _blocked(refusal)
        window = rule.window
        if window is not None and (quiet_hours_override or priority is Priority.CRITICAL):
            window = None
        return self._timed(view, rule, to, to_index, window, start, expires_at)

    def verdict_of(self, view: GroupView, p: Prepared) -> Verdict:
        """`verdict` on a prepared message (its `to_index` set), reading of it only what
        the verdict comes to need: it runs in the writer for every message accepted,
        and most are refused or go at once. The same rules as `verdict`, which the
        tests hold it to."""
        rule = self._rules[p.purpose]
        if rule.exempt or not self.enabled:
            return QUEUED
        m = p.message
        to_index: bytes = m.to_index  # type: ignore[assignment]  # set: see the docstring
        candidates = p.entry.candidates
        route = candidates[0] if candidates else m.route_hint
        program = self._programs.get(route)
        if program is None:
            program = self._program(route)
        refusal = rule.refusal(view.state.get(to_index, ()), program)
        if refusal is not None:
            return _blocked(refusal)
        start = m.created_at
        if m.send_at is not None and m.send_at > start:
            start = m.send_at
        window = rule.window
        if window is not None and (p.quiet_hours_override or m.priority is Priority.CRITICAL):
            window = None
        if window is None:
            # The common case, `_timed`'s first steps written out: no window, and no
            # counted message of the cap group to this recipient within the caps' reach.
            if not rule.counted:
                return QUEUED
            sent = view.sent
            key = (rule.group, to_index)
            times = sent.get(key)
            if times is None:
                sent[key] = [start]
                return QUEUED
            if not rule.caps or times[-1] <= start - rule.reach:
                bisect.insort(times, start)
                return QUEUED
        expires_at = math.inf if p.lifetime is not None else m.expires_at
        return self._timed(view, rule, m.to, to_index, window, start, expires_at)

    def _program(self, route: str | None) -> str:
        program = self._programs.get(route)
        if program is None:
            program = self._programs[route] = self.config.program_for_route(route or "")
        return program

    def _timed(
        self,
        view: GroupView,
        rule: _Rule,
        to: str,
        to_index: bytes,
        window: Window | None,
        start: float,
        expires_at: float,
    ) -> Verdict:
        """The verdict on a message no consent refuses: at `start`, later (its window
        closed, a cap full) or never (held past its expiry)."""
        times: Sequence[float] = ()
        if rule.caps:
            times = view.times(to_index, rule.group, start - rule.reach)
        if window is None and not times:
            if rule.counted:
                view.add(to_index, rule.group, start)
            return QUEUED  # nothing to wait for
        zones: tuple[str, ...] = ()
        if window is not None:
            zones = recipient_zones(to, view.time_zone(to_index))
        at, reason = start, None
        for _ in range(_MAX_STEPS):
            room = _cap_room(times, rule.limits, at)
            if room > at:
                if rule.policy.over_cap == "block":
                    return _blocked("frequency_cap")
                at, reason = room, "frequency_cap"
            opening = next_open(window, zones, at) if window is not None else at
            if opening > at:
                at, reason = opening, "quiet_hours"
                continue
            if room <= at:
                break
        if at >= expires_at:
            return Verdict(State.BLOCKED, None, reason or "quiet_hours")
        if rule.counted:
            view.add(to_index, rule.group, at)
        if reason is None:
            return QUEUED
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
        rows = ledger.state_rows(conn, [s.to_index]).get(s.to_index, ())

        def zone() -> str | None:
            found = conn.execute(
                "SELECT time_zone FROM contacts WHERE idx = ?", (s.to_index,)
            ).fetchone()
            return found[0] if found else None

        return self.claim_verdict_of(s, rows, zone, number)

    def claim_verdict_of(
        self,
        s: ClaimSubject,
        rows: Sequence[ledger.StateRow],
        zone: Callable[[], str | None],
        number: Callable[[ClaimSubject], str],
    ) -> str | Held | None:
        """`claim_verdict` from the recipient's consent rows as read (`ledger.StateRow`)
        and its time zone, read by `zone` only when a window is looked at: either
        backend's claim reads them its own way."""
        if not self.enabled or s.purpose is None or s.purpose == Purpose.COMPLIANCE.value:
            return None
        policy = self.table[Purpose(s.purpose)]
        program = self.config.program_for_route(s.route)
        refusal = ledger.standing_among(rows, program, policy).refusal(policy)
        if refusal is not None:
            return refusal
        window = policy.window
        if window is None or s.quiet_override or s.priority is Priority.CRITICAL:
            return None
        zones = recipient_zones(number(s), zone())
        opening = next_open(window, zones, s.now)
        return Held(opening, "quiet_hours") if opening > s.now else None


class GroupView:
    """What one writer transaction's accepts know of their recipients, read once for
    the whole group (consent rows, which `StateCache` keeps from earlier groups until
    `consent_state` changes; the times of recent messages; time zones), with the
    messages judged so far added in: their rows are inserted together at its end, so a
    cap's count and the inserts it allowed stay one step."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        state: StateCache,
        to_indexes: Sequence[bytes],
        capped_indexes: Sequence[bytes],
        since: float,
        capped: Sequence[str],
    ) -> None:
        """`capped_indexes`: the recipients of messages some cap applies to, whose
        messages of the `capped` purposes (those some cap counts) are read."""
        self._conn = conn
        self._idxs = idxs = list(dict.fromkeys(to_indexes))
        kinds = ",".join("?" * len(capped))
        # By (cap group (`group_key`), recipient): when each counted message goes,
        # sorted, so a cap check slices instead of filtering and sorting per message.
        # One dict keyed by the pair: one lookup a row and a check, not two.
        self.sent: dict[tuple[str, bytes], list[float]] = {}
        keep, key_of = self.sent.setdefault, _GROUP_KEY
        epoch: int | None = None
        read = list(dict.fromkeys(capped_indexes))
        for marks, chunk in ledger.in_chunks(read):
            # `+purpose`: seek the recipient index by `to_index` alone and filter the
            # few entries each has, rather than one seek per recipient and purpose.
            # The consent epoch comes with it (the row with no recipient): a group
            # whose recipients' consent rows are all kept runs this one read.
            for idx, purpose, at in conn.execute(
                "SELECT to_index, purpose, max(coalesce(send_at, created_at), created_at) AS at"  # noqa: S608 - placeholders only
                f" FROM messages WHERE to_index IN ({marks}) AND +purpose IN ({kinds})"
                f" AND uncounted = 0 AND at > ? UNION ALL {EPOCH_ROW}",
                (*chunk, *capped, since),
            ):
                # One call a row: a recipient with sends held ahead (a day apart, a cap
                # of one a day) has a row for each, and a long load stacks many.
                if idx is not None:
                    keep((key_of[purpose], idx), []).append(at)
                else:
                    epoch = at
        self.state = state.rows(conn, idxs, epoch)  # consent rows by recipient
        for times in self.sent.values():
            if len(times) > 1:
                times.sort()
        self._zones: dict[bytes, str | None] | None = None

    @classmethod
    def of_reads(
        cls,
        state: dict[bytes, list[ledger.StateRow]],
        sent: Sequence[tuple[bytes, str, float]],
        zones: dict[bytes, str | None],
    ) -> GroupView:
        """A view from reads made elsewhere (the cluster's accept, on PostgreSQL): the
        recipients' consent rows, (recipient, purpose, when it goes) of their counted
        messages within the caps' reach, and their time zones."""
        view = cls.__new__(cls)
        view.state = state
        view.sent = {}
        for idx, purpose, at in sent:
            view.add(idx, _GROUP_KEY[purpose], at)
        view._zones = zones
        return view

    def times(self, to_index: bytes, group: str, since: float) -> Sequence[float]:
        """When each counted message of cap group `group` (`group_key`) to this
        recipient goes, after `since`, in order."""
        times = self.sent.get((group, to_index))
        if not times:
            return ()
        return times[bisect.bisect_right(times, since) :]

    def time_zone(self, to_index: bytes) -> str | None:
        if self._zones is None:
            # Read on first need only: with no sending window to check, no group asks.
            self._zones = {}
            for marks, chunk in ledger.in_chunks(self._idxs):
                for idx, zone in self._conn.execute(
                    f"SELECT idx, time_zone FROM contacts WHERE idx IN ({marks})",  # noqa: S608 - placeholders only
                    chunk,
                ):
                    self._zones[idx] = zone
        return self._zones.get(to_index)

    def add(self, to_index: bytes, group: str, at: float) -> None:
        """Count a message of cap group `group` to this recipient, going at `at`."""
        key = (group, to_index)
        times = self.sent.get(key)
        if times is None:
            self.sent[key] = [at]
        else:
            bisect.insort(times, at)


def cap_group(purpose: Purpose) -> tuple[str, ...]:
    """The purposes whose messages count against `purpose`'s caps."""
    return _CLINICAL if purpose.kind is Kind.CLINICAL else (purpose.value,)


def group_key(purpose: Purpose) -> str:
    """The name of `purpose`'s cap group: every clinical purpose shares one."""
    return Kind.CLINICAL.value if purpose.kind is Kind.CLINICAL else purpose.value


_GROUP_KEY: dict[str, str] = {p.value: group_key(p) for p in Purpose}


@dataclass(frozen=True, slots=True)
class _Rule:
    """A purpose's row of the policy table as the verdict at accept reads it, worked
    out once rather than for every message."""

    policy: PurposePolicy
    exempt: bool  # compliance: never refused nor held
    refusal: Callable[[Sequence[ledger.StateRow], str], str | None]  # `Refusals.among`
    window: Window | None
    caps: tuple[Cap, ...]
    limits: tuple[tuple[int, float], ...]  # its caps as `_cap_room` takes them
    reach: float  # how far back its caps look (0.0: it has none)
    group: str  # its cap group (`group_key`)
    counted: bool  # some cap counts its messages: a group's view adds each that goes

    @classmethod
    def of(cls, purpose: Purpose, policy: PurposePolicy, capped: Sequence[str]) -> _Rule:
        return cls(
            policy,
            purpose is Purpose.COMPLIANCE,
            ledger.Refusals.of(policy).among,
            policy.window,
            policy.caps,
            limits_of(policy.caps),
            max((c.seconds for c in policy.caps), default=0.0),
            group_key(purpose),
            purpose.value in capped,
        )


def _cap_room(times: Sequence[float], limits: Sequence[tuple[int, float]], at: float) -> float:
    """The first instant at or after `at` where one more message keeps every cap, each
    cap n/W given as (n, W) (`limits_of`).

    A cap n/W holds for a new message at x when no span [s, s + W) containing x holds n
    others; such spans start at x - W (exclusive) or at one of the others. Moving x only
    helps once it passes some other's t + W, so the answer is `at` or one of those. A
    run of n others that x breaks keeps breaking it until x passes its first + W, so
    the search jumps there instead of trying each t + W in between. `_blocked_until`
    for each cap, written out in one loop: a held message's search runs it once per
    cap for every send stacked ahead of it (bench/README.md, "Accept rate with the
    consent policy")."""
    size = len(times)
    if not size:
        return at
    x = at
    while True:  # each jump passes one of the finitely many t + W, or x grows past them
        later = x
        i = bisect.bisect_left(times, x)  # every cap looks around x's place
        for n, w in limits:
            last_run = size - n
            if last_run < 0:
                continue
            j = i if i < last_run else last_run
            stop = i - n - 1 if i > n else -1
            while j > stop:  # from the latest run: its first + W is the latest
                first, last = times[j], times[j + n - 1]
                if (last if last > x else x) - (first if first < x else x) < w:
                    until = first + w
                    # In exact arithmetic first + w > x; rounding may say otherwise.
                    if until <= x:
                        until = math.nextafter(x, math.inf)
                    if until > later:
                        later = until
                    break
                j -= 1
        if later == x:
            return x
        x = later


def limits_of(caps: Sequence[Cap]) -> tuple[tuple[int, float], ...]:
    """Caps as `_cap_room` takes them: (count, seconds) each."""
    return tuple((c.count, c.seconds) for c in caps)


def _blocked_until(times: Sequence[float], cap: Cap, x: float) -> float:
    """`x` if a message at `x` keeps cap n/W over the others at `times` (sorted): no
    span [s, s + W) holds x and n others. Else an instant after `x` before which none
    does: the latest first + W of the runs that x breaks. If a span breaks the cap, it
    holds n others that stand next to each other in `times`, so only the runs of n
    around x's place are looked at (those nearest x have the shortest span with it)."""
    n, w = cap.count, cap.seconds
    last_run = len(times) - n
    if last_run < 0:
        return x
    i = bisect.bisect_left(times, x)
    # Runs later in `times` start later: the first one found from the end that x
    # breaks has the latest first + W of all those x breaks.
    for j in range(i if i < last_run else last_run, i - n - 1 if i > n else -1, -1):
        first, last = times[j], times[j + n - 1]
        # The span of x and the run: runs end at or after x, or start at or before it.
        if (last if last > x else x) - (first if first < x else x) < w:
            until = first + w
            # In exact arithmetic first + w > x; rounding may say otherwise.
            return until if until > x else math.nextafter(x, math.inf)
    return x


def _fits(times: Sequence[float], cap: Cap, x: float) -> bool:
    """Whether a message at `x` keeps cap n/W over the others at `times` (sorted)."""
    return _blocked_until(times, cap, x) == x
