"""Reminders relative to appointments (issue 13, point 4).

- `timing`: when a reminder is due (lead, delivery time, the clinic's zone, DST).
- `rules`: reminder rules and their immutable versions.
- `planner`: re-plans an appointment's REMINDER notices on every change, and a rule's
  over every upcoming appointment; the send-time recheck.
- `usecase`: the rules' use cases (list, create, new version, deactivate, preview).

The notices it plans are sent by `gateway.clinical.runner`.
"""
