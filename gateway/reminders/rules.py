"""Reminder rules and their versions (`reminder_rules`), as functions of a connection.

A rule says when, for which appointments, and with what a reminder goes: a lead
before the start ("-24h", "-1d"), an optional delivery time in the clinic's zone,
filters (services, locations, appointment types; empty means any), a "skip if booked
less than this before the start", the purpose and class the message is sent with,
and the template (with optional A/B variants and their weights).

Versions are immutable (research §C1: RapidPro recreates an event rather than edit
it): `save` inserts the next version and retires the current one in one step, so a
notice's (rule_id, rule_version) always names the rule that planned it. Deactivating
is a version too (active = false), so the history shows who turned it off.
"""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import time
from typing import Any

from gateway.reminders.timing import Lead, parse_clock, parse_duration


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    weight: float


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """What a client sets; checked by `check` (the use case turns errors into 422s)."""

    name: str
    lead: str
    template: str
    delivery_time: str | None = None
    services: tuple[str, ...] = ()
    locations: tuple[str, ...] = ()
    appointment_types: tuple[str, ...] = ()
    skip_if_booked_within: str | None = None
    purpose: str = "appointment"
    priority: str | None = None
    variants: tuple[Variant, ...] = ()
    active: bool = True


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    version: int
    spec: RuleSpec
    actor: str
    created_at: float
    current: bool = True

    @property
    def lead(self) -> Lead:
        return Lead.parse(self.spec.lead)

    @property
    def delivery(self) -> time | None:
        t = self.spec.delivery_time
        return None if t is None else parse_clock(t)

    @property
    def skip_within(self) -> float:
        s = self.spec.skip_if_booked_within
        return 0.0 if s is None else parse_duration(s)

    def matches(self, service: str | None, location: str | None, kind: str | None) -> bool:
        """Every non-empty filter lists the appointment's value (case-insensitively)."""
        for allowed, value in (
            (self.spec.services, service),
            (self.spec.locations, location),
            (self.spec.appointment_types, kind),
        ):
            if allowed and (value is None or value.casefold() not in _folded(allowed)):
                return False
        return True

    def variant_for(self, key: str) -> str | None:
        """The A/B variant for `key` (an appointment id): the same every time it is
        planned, and in proportion to the weights over many keys."""
        variants = self.spec.variants
        if not variants:
            return None
        total = sum(v.weight for v in variants)
        digest = hashlib.sha256(f"{self.id}\x1f{key}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64 * total
        for v in variants:
            if point < v.weight:
                return v.name
            point -= v.weight
        return variants[-1].name  # float rounding at the very top


def _folded(values: Sequence[str]) -> frozenset[str]:
    return frozenset(v.casefold() for v in values)


def check(spec: RuleSpec) -> tuple[str, str] | None:
    """(field, what is wrong) for the first invalid field, or None. Never quotes a value."""
    try:
        Lead.parse(spec.lead)
    except ValueError as e:
        return "offset", str(e)
    if spec.delivery_time is not None:
        try:
            parse_clock(spec.delivery_time)
        except ValueError as e:
            return "delivery_time", str(e)
    if spec.skip_if_booked_within is not None:
        try:
            parse_duration(spec.skip_if_booked_within)
        except ValueError as e:
            return "skip_if_booked_within", str(e)
    names = [v.name for v in spec.variants]
    if len(set(names)) != len(names):
        return "variants", "variant names must differ"
    return None


COLUMNS = (
    "id, version, name, lead, delivery_time, services, locations, appt_types, skip_booked,"
    " purpose, priority, template, variants, active, current, actor, created_at"
)


def save(
    conn: sqlite3.Connection, rule_id: str | None, spec: RuleSpec, actor: str, now: float
) -> Rule | None:
    """Insert `spec` as a new rule (`rule_id` None) or as the next version of `rule_id`,
    retiring the current one; None if there is no such rule."""
    version = 1
    if rule_id is None:
        rule_id = "rul_" + secrets.token_hex(8)
    else:
        r = conn.execute(
            "UPDATE reminder_rules SET current = 0 WHERE id = ? AND current = 1 RETURNING version",
            (rule_id,),
        ).fetchone()
        if r is None:
            return None
        version = int(r[0]) + 1
    conn.execute(
        f"INSERT INTO reminder_rules ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,1,?,?)",  # noqa: S608
        (
            rule_id,
            version,
            spec.name,
            spec.lead,
            spec.delivery_time,
            json.dumps(list(spec.services)),
            json.dumps(list(spec.locations)),
            json.dumps(list(spec.appointment_types)),
            spec.skip_if_booked_within,
            spec.purpose,
            spec.priority,
            spec.template,
            json.dumps([[v.name, v.weight] for v in spec.variants]),
            int(spec.active),
            actor,
            now,
        ),
    )
    return Rule(rule_id, version, spec, actor, now)


def current(conn: sqlite3.Connection, *, active_only: bool = False) -> list[Rule]:
    where = "current = 1" + (" AND active = 1" if active_only else "")
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM reminder_rules WHERE {where} ORDER BY created_at, id"  # noqa: S608
    ).fetchall()
    return [row_of(r) for r in rows]


def get(conn: sqlite3.Connection, rule_id: str, version: int | None = None) -> Rule | None:
    args: list[object]
    sql, args = "id = ? AND current = 1", [rule_id]
    if version is not None:
        sql, args = "id = ? AND version = ?", [rule_id, version]
    r = conn.execute(f"SELECT {COLUMNS} FROM reminder_rules WHERE {sql}", args).fetchone()  # noqa: S608
    return None if r is None else row_of(r)


def history(conn: sqlite3.Connection, rule_id: str) -> list[Rule]:
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM reminder_rules WHERE id = ? ORDER BY version",  # noqa: S608
        (rule_id,),
    ).fetchall()
    return [row_of(r) for r in rows]


def row_of(r: Sequence[Any]) -> Rule:
    return _rule(tuple(r))


# A row is one immutable version (its `current` flag is in the key), and the planner
# reads every current rule on each appointment change: decode each row once.
@functools.lru_cache(maxsize=1024)
def _rule(r: tuple[Any, ...]) -> Rule:
    spec = RuleSpec(
        name=r[2],
        lead=r[3],
        delivery_time=r[4],
        services=tuple(json.loads(r[5])),
        locations=tuple(json.loads(r[6])),
        appointment_types=tuple(json.loads(r[7])),
        skip_if_booked_within=r[8],
        purpose=r[9],
        priority=r[10],
        template=r[11],
        variants=tuple(Variant(n, float(w)) for n, w in json.loads(r[12])),
        active=bool(r[13]),
    )
    return Rule(r[0], int(r[1]), spec, r[15], float(r[16]), bool(r[14]))
