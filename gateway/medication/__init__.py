"""Medication notices: a dispense ready for pick-up (RDS^O13), and dose reminders from
schedules (times of day in the patient's zone, start and end dates) put by RDE^O11 /
RDE^O25 and `POST /medications`, stopped by a discontinue."""
