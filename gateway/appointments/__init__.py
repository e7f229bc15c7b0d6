"""Appointments: SIU and ADT feeds and the JSON API turned into one appointment state
machine (versions, stale updates ignored, short codes for replies), and Epic's
cancel-then-rebook turned into one "your appointment moved" notice.

- `siu` / `adt`: pure mappers from HL7 v2 messages to commands (`hltime`: their times).
- `machine`: `AppointmentChange`, the command that applies one change in the writer's
  transaction, and the state machine it follows.
- `debounce`: the cancellation notice held for a rebooking, and the send-time rechecks
  of the moved and cancelled notices.
- `settings`: `[appointments]` (the JSON API's profile) and the per-interface keys.
- `queries` / `usecase`: what the API and the panel read and do.
"""
