"""Reminder rules as use cases: list, get, create, a new version, deactivate, preview.

Every front end (the API's `/reminder-rules`, the panel's "Reminder rules" page) calls
these with a `Caller`. Changing a rule needs an administrator (an `admin` token, a
panel user who may act) and is audited with the rule's id and version; the change and
the re-plan of every upcoming appointment commit in one writer transaction (on a
cluster, one PostgreSQL transaction over the shared rules and notices). Errors are
`ApiError`s that name the field and never quote what was sent.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from drivers.clock import Clock
from gateway.clinical.db import ClinicalDb, LocalClinicalDb
from gateway.consent.policy import Policy
from gateway.consent.purposes import CLIENT_PURPOSES, Purpose
from gateway.consent.zones import valid_zone
from gateway.errors import ApiError
from gateway.reminders import planner, rules
from gateway.reminders.planner import Appointment, Planner
from gateway.reminders.rules import Rule, RuleSpec
from gateway.store.store import Store
from gateway.usecases.audit import AuditSink
from gateway.usecases.caller import Caller


@dataclass(frozen=True, slots=True)
class Sample:
    """A sample appointment for the preview: its start, the clinic's zone, when it was
    booked (None: long before), and what the rules' filters look at."""

    start: float
    time_zone: str
    booked_at: float | None = None
    service: str | None = None
    location: str | None = None
    appointment_type: str | None = None


@dataclass(frozen=True, slots=True)
class Preview:
    """One rule's answer for the sample: `status` is `planned`, or why not (`past`,
    `not_before_start`, `booked_late`, `filtered`, `inactive`); `due_at` when computed."""

    rule: Rule
    status: str
    due_at: float | None
    time_zone: str


def not_found() -> ApiError:
    return ApiError(404, "not_found", "no reminder rule with this id")


class ReminderRules:
    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        audit: AuditSink,
        policy: Policy,
        planner: Planner,
        db: ClinicalDb | None = None,
    ) -> None:
        """`db`: where the rules and notices live (a cluster's shared tables)."""
        self._db = db or LocalClinicalDb(store)
        self._clock = clock
        self._audit = audit
        self._policy = policy
        self._planner = planner

    async def list_rules(self, caller: Caller) -> list[Rule]:
        """The current version of every rule, active or not, oldest first."""
        rows = await self._db.all(
            f"SELECT {rules.COLUMNS} FROM reminder_rules WHERE current = 1"  # noqa: S608
            " ORDER BY created_at, id"
        )
        return [rules.row_of(r) for r in rows]

    async def any_rule(self) -> bool:
        """Whether any rule was ever made (active or not)."""
        return await self._db.one("SELECT 1 FROM reminder_rules LIMIT 1") is not None

    async def get(self, caller: Caller, rule_id: str) -> tuple[Rule, list[Rule]]:
        """The current version and every version before it (oldest first)."""
        rows = await self._db.all(
            f"SELECT {rules.COLUMNS} FROM reminder_rules WHERE id = ? ORDER BY version",  # noqa: S608
            (rule_id,),
        )
        versions = [rules.row_of(r) for r in rows]
        if not versions:
            raise not_found()
        return versions[-1], versions

    async def create(self, caller: Caller, spec: RuleSpec) -> Rule:
        return await self._save(caller, None, spec, "reminder_rule_created")

    async def update(self, caller: Caller, rule_id: str, spec: RuleSpec) -> Rule:
        """A new version of the rule; its pending reminders are re-planned with it."""
        return await self._save(caller, rule_id, spec, "reminder_rule_changed")

    async def deactivate(self, caller: Caller, rule_id: str) -> Rule:
        """A new, inactive version: its pending reminders are withdrawn (superseded)."""
        current, _ = await self.get(caller, rule_id)
        if not current.spec.active:
            return current
        spec = dataclasses.replace(current.spec, active=False)
        return await self._save(caller, rule_id, spec, "reminder_rule_deactivated")

    async def _save(self, caller: Caller, rule_id: str | None, spec: RuleSpec, action: str) -> Rule:
        _require_admin(caller)
        self._check(spec)
        now = self._clock.time()
        cipher = self._db.cipher

        def job(conn: sqlite3.Connection) -> tuple[Rule | None, int]:
            rule = rules.save(conn, rule_id, spec, caller.actor, now)
            if rule is None:
                return None, 0
            return rule, len(self._planner.replan_rule(conn, cipher, rule, now))

        rule, planned = await self._db.run(job)
        if rule is None:
            raise not_found()
        await self._audit.record(
            caller.actor, action, "reminder_rule", rule.id, version=rule.version, planned=planned
        )
        return rule

    def _check(self, spec: RuleSpec) -> None:
        problem = rules.check(spec)
        if problem is not None:
            field, what = problem
            raise ApiError(422, "invalid_field", f"{field}: {what}", field=field)
        if spec.purpose not in {p.value for p in CLIENT_PURPOSES}:
            raise ApiError(
                422, "invalid_field", "purpose: not one of the allowed values", field="purpose"
            )
        self._policy.priority_of(Purpose(spec.purpose), spec.priority)

    async def preview(self, caller: Caller, rule_id: str | None, sample: Sample) -> list[Preview]:
        """Due times of one rule (`rule_id`) or of every current rule for `sample`,
        computed as the planner would now (DST-aware, in the sample's zone)."""
        if not valid_zone(sample.time_zone):
            raise ApiError(
                422, "invalid_field", "time_zone: not an IANA time zone", field="time_zone"
            )
        chosen = (
            [(await self.get(caller, rule_id))[0]] if rule_id else await self.list_rules(caller)
        )
        now = self._clock.time()
        appt = Appointment(
            id="sample",
            patient_id="sample",
            contact_idx=None,
            language=None,
            status="booked",
            start_at=sample.start,
            version=1,
            time_zone=ZoneInfo(sample.time_zone).key,
            service=sample.service,
            location_code=sample.location,
            appt_type=sample.appointment_type,
            booked_at=sample.booked_at if sample.booked_at is not None else float("-inf"),
            short_code="0000",
            clinic=None,
            place=None,
            provider=None,
        )
        out = []
        for rule in chosen:
            status, due = planner.verdict(rule, appt, now)
            out.append(Preview(rule, status, due, appt.time_zone))
        return out


def _require_admin(caller: Caller) -> None:
    if not (caller.sees_all and caller.may_send):
        raise ApiError(403, "forbidden", "changing reminder rules needs the 'admin' scope")
