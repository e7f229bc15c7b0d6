"""Is a reply a valid answer to a question, and which (pure; never raises on text).

Theory of operation. A reply is read the way a person would type it on a phone:

- Unicode NFKC first, so full-width digits and letters (U+FF13, U+FF21) read as ASCII; then
  every decimal digit of any script (Arabic-Indic, Devanagari, ...) becomes its
  ASCII digit.
- choice: the consent keywords' normalisation (`keywords.normalise`: case- and
  accent-folded, punctuation and emoji made spaces), so `b`, `B.`, `(b)`, ` B 👍`
  all read `b`. The reply must be exactly an option's key, its label in any of the
  survey's languages, or the key followed by the label (`2 good`). Nothing is guessed
  from longer text.
- number and scale: exactly one number (`7`, `-2`, `7.5`, `7,5`), with nothing but
  punctuation, emoji and spaces around it (`7!`, ` 7 👍`); a scale takes whole numbers
  only; either must lie within min..max. `7 out of 10` is not an answer.
- text: anything with a letter, digit or symbol in it, at most `max_length` characters
  (stripped); the text itself is stored only where the inbound message is (encrypted).

A verdict carries the canonical value (an option's key as the survey spells it, or the
number as digits) or, when invalid, a stable reason: `empty`, `not_an_option`,
`not_a_number`, `not_whole`, `out_of_range`, `too_long`.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from gateway.consent.keywords import normalise
from gateway.surveys.spec import DEFAULT_TEXT_LENGTH, Question


@dataclass(frozen=True, slots=True)
class Verdict:
    valid: bool
    value: str | None = None  # choice: the option key; number/scale: the number; text: None
    reason: str | None = None


_NUMBER = re.compile(r"[-+]?[0-9]+(?:[.,][0-9]+)?")
_WORDY = re.compile(r"[^\W_]", re.UNICODE)  # a letter or digit of any script


def ascii_digits(text: str) -> str:
    """NFKC, and every decimal digit of any script as its ASCII digit."""
    out = []
    for c in unicodedata.normalize("NFKC", text):
        d = unicodedata.decimal(c, None) if not c.isascii() else None
        out.append(str(d) if d is not None else c)
    return "".join(out)


def judge(question: Question, text: str) -> Verdict:
    """The verdict on `text` as an answer to `question`."""
    if question.kind == "choice":
        return _choice(question, text)
    if question.kind in ("number", "scale"):
        return _number(question, text)
    return _free_text(question, text)


def _choice(question: Question, text: str) -> Verdict:
    said = normalise(ascii_digits(text))
    if not said:
        return Verdict(False, reason="empty")
    for option in question.options:
        key = normalise(option.key)
        labels = {normalise(label) for label in option.label.values()}
        if said == key or said in labels or any(said == f"{key} {lb}" for lb in labels):
            return Verdict(True, option.key)
    return Verdict(False, reason="not_an_option")


def _number(question: Question, text: str) -> Verdict:
    said = ascii_digits(text)
    if not said.strip():
        return Verdict(False, reason="empty")
    found = _NUMBER.findall(said)
    rest = _NUMBER.sub(" ", said)
    if len(found) != 1 or _WORDY.search(rest):
        return Verdict(False, reason="not_a_number")
    try:
        value = Decimal(found[0].replace(",", "."))
    except InvalidOperation:  # the pattern admits none, but a verdict never raises
        return Verdict(False, reason="not_a_number")
    if question.kind == "scale" and value != value.to_integral_value():
        return Verdict(False, reason="not_whole")
    low = question.min if question.min is not None else value
    high = question.max if question.max is not None else value
    if not low <= value <= high:
        return Verdict(False, reason="out_of_range")
    canonical = value.normalize()
    return Verdict(True, format(canonical, "f") if canonical != 0 else "0")


def _free_text(question: Question, text: str) -> Verdict:
    said = text.strip()
    if not said or all(unicodedata.category(c)[0] in "ZC" for c in said):
        return Verdict(False, reason="empty")
    if len(said) > (question.max_length or DEFAULT_TEXT_LENGTH):
        return Verdict(False, reason="too_long")
    return Verdict(True)
