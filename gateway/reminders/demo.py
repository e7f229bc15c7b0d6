"""Reminder rules for the demo (`smsgw run` with the simulated peers): a booking from
the sample feed plans reminders without anyone writing a rule first.

Seeded once, into a store with no rule at all, through the rules' use case (so the
audit trail shows `system:demo` made them); edited or deactivated like any other."""

from __future__ import annotations

from gateway.reminders.rules import RuleSpec
from gateway.reminders.usecase import ReminderRules
from gateway.usecases.caller import Caller

DEMO_RULES = (
    RuleSpec("The evening before", "-1d", "reminder", delivery_time="18:00"),
    RuleSpec("Two hours before", "-2h", "reminder", skip_if_booked_within="4h"),
)
_DEMO = Caller(actor="system:demo", token_id=None, sees_all=True, may_send=True, may_read_phi=False)


async def seed(rules: ReminderRules) -> int:
    """Create `DEMO_RULES` if there is no rule yet; how many were made."""
    if await rules.any_rule():
        return 0
    for spec in DEMO_RULES:
        await rules.create(_DEMO, spec)
    return len(DEMO_RULES)
