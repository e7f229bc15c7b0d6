"""`[replies]`: how patients' replies to appointment texts are handled."""

from __future__ import annotations

import msgspec


class RepliesConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """`enabled`: replies (C / R / N / STOP 1234) are matched to appointments; false
    leaves every inbound text to the consent keywords alone. `cancel_on_reply`: N
    (or CANCEL with the code) cancels the appointment here and in the write-back;
    false (the default) records a request for staff. A reschedule request never
    cancels. `answer`: a short acknowledgement is texted back ("Thanks, your
    appointment is confirmed"), within the consent auto-reply limit."""

    enabled: bool = True
    cancel_on_reply: bool = False
    answer: bool = True
