"""What a patient's reply to an appointment text asks for (pure).

Theory of operation. The text is normalised as the consent keywords are
(`gateway.consent.keywords.normalise`: NFKC, case- and accent-folded, punctuation and
emoji made spaces), then the WHOLE of it must be one intent word, optionally followed by
an appointment's short code (`C 1234`, `c1234`, `STOP 1234`). Nothing is guessed from
free text: "Can't make it", "C u there", "Yes I'll be there" or "CANCEL my
subscription" are not intents (the caller sends them to staff as unclear replies).

The consent keywords decide first (`gateway.consent.inbound`), so bare STOP, CANCEL
and CANCELAR stay opt-outs (the FCC's per-se revocation words) and never reach this
module as a cancel request; a patient asks to cancel with N, or CANCEL with the
appointment's code. `YES` / `SI` reach it only when consent did not take them as an
opt-in (they were not the answer to an opt-out confirmation).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from gateway.consent.keywords import normalise


class Intent(enum.StrEnum):
    CONFIRM = "confirm"
    RESCHEDULE = "reschedule"
    CANCEL = "cancel"  # a request; cancels only where `[replies] cancel_on_reply`
    STOP = "stop"  # with a code only: an opt-out of that appointment's texts
    UNCLEAR = "unclear"  # not an intent: staff read it (never parsed here)


# Normalised words (accents already folded: "sí" is "si").
WORDS: dict[Intent, frozenset[str]] = {
    Intent.CONFIRM: frozenset({"c", "y", "yes", "confirm", "confirmed", "si", "confirmar"}),
    Intent.RESCHEDULE: frozenset({"r", "reschedule", "cambiar", "reprogramar"}),
    Intent.CANCEL: frozenset({"n", "cancel", "cancelar"}),
    Intent.STOP: frozenset({"stop", "alto"}),
}
_BY_WORD = {word: intent for intent, words in WORDS.items() for word in words}
# Short codes are digits (`appointments.short_code`); a word then 4 to 6 of them.
_REPLY = re.compile(r"([a-z]+) ?([0-9]{4,6})?")


@dataclass(frozen=True, slots=True)
class Parsed:
    intent: Intent
    code: str | None  # the short code the reply named, if any


def parse(text: str) -> Parsed | None:
    """The intent of `text`, or None if it is not exactly one (with an optional code).
    STOP without a code is None: a bare STOP is the consent keywords' business."""
    m = _REPLY.fullmatch(normalise(text))
    if m is None:
        return None
    intent = _BY_WORD.get(m[1])
    code = m[2]
    if intent is None or (intent is Intent.STOP and code is None):
        return None
    return Parsed(intent, code)


def scoped_stop(text: str) -> str | None:
    """The code of a `STOP 1234` / `ALTO 1234` reply, else None."""
    parsed = parse(text)
    return parsed.code if parsed is not None and parsed.intent is Intent.STOP else None
