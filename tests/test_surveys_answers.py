"""Survey answers, the pure part: every kind of question, the ways people type on a
phone (full-width and other scripts' digits, emoji, punctuation, spaces), and a
property: any text at all gets a verdict, never an exception."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.surveys import flow
from gateway.surveys.answers import Verdict, judge
from gateway.surveys.flow import Position
from gateway.surveys.spec import Question
from tests.survey_rows import survey_spec

CHOICE = msgspec.convert(
    {
        "kind": "choice",
        "text": {"en": "?", "es": "?"},
        "options": [
            {"key": "A", "label": {"en": "Very good", "es": "Muy buena"}},
            {"key": "B", "label": {"en": "Bad", "es": "Mala"}},
        ],
    },
    Question,
)
NUMBERED = msgspec.convert(
    {"kind": "choice", "text": {"en": "?"},
     "options": [{"key": "1", "label": {"en": "Yes"}}, {"key": "2", "label": {"en": "No"}}]},
    Question,
)  # fmt: skip
NUMBER = msgspec.convert({"kind": "number", "text": {"en": "?"}, "min": -5, "max": 500}, Question)
SCALE = msgspec.convert({"kind": "scale", "text": {"en": "?"}, "min": 1, "max": 5}, Question)
TEXT = msgspec.convert({"kind": "text", "text": {"en": "?"}, "max_length": 20}, Question)
QUESTIONS = [CHOICE, NUMBERED, NUMBER, SCALE, TEXT]


@pytest.mark.parametrize(
    ("question", "said", "value"),
    [
        (CHOICE, "a", "A"),
        (CHOICE, " B. ", "B"),
        (CHOICE, "(b)", "B"),
        (CHOICE, "\uff22", "B"),  # full-width B
        (CHOICE, "very GOOD!", "A"),
        (CHOICE, "muy buena", "A"),  # the Spanish label
        (CHOICE, "a very good", "A"),
        (CHOICE, "b 👍", "B"),
        (NUMBERED, "\uff12", "2"),  # full-width 2
        (NUMBERED, "٢", "2"),  # Arabic-Indic digit
        (NUMBERED, "1)", "1"),
        (NUMBERED, "yes", "1"),
        (NUMBER, "42", "42"),
        (NUMBER, " 42 !", "42"),
        (NUMBER, "\uff17.\uff15", "7.5"),  # full-width
        (NUMBER, "7,50", "7.5"),
        (NUMBER, "-3", "-3"),
        (NUMBER, "४२", "42"),  # Devanagari digits
        (NUMBER, "0", "0"),
        (NUMBER, "100", "100"),
        (SCALE, "5", "5"),
        (SCALE, "3 🙂", "3"),
        (TEXT, "  The nurse was kind  ", None),
        (TEXT, "👍", None),
        (TEXT, "日本語の答え", None),
    ],
)
def test_valid_answers_normalise(question: Question, said: str, value: str | None) -> None:
    assert judge(question, said) == Verdict(True, value)


@pytest.mark.parametrize(
    ("question", "said", "reason"),
    [
        (CHOICE, "", "empty"),
        (CHOICE, "🙂", "empty"),
        (CHOICE, "c", "not_an_option"),
        (CHOICE, "I think a", "not_an_option"),
        (CHOICE, "Б", "not_an_option"),  # Cyrillic, looks like B
        (NUMBERED, "3", "not_an_option"),
        (NUMBER, "seven", "not_a_number"),
        (NUMBER, "7 out of 10", "not_a_number"),
        (NUMBER, "1 2", "not_a_number"),
        (NUMBER, "501", "out_of_range"),
        (NUMBER, "   ", "empty"),
        (SCALE, "4.5", "not_whole"),
        (SCALE, "0", "out_of_range"),
        (SCALE, "٩", "out_of_range"),
        (TEXT, "   \n ", "empty"),
        (TEXT, "x" * 21, "too_long"),
    ],
)
def test_invalid_answers_have_a_reason(question: Question, said: str, reason: str) -> None:
    assert judge(question, said) == Verdict(False, reason=reason)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(QUESTIONS), st.text(max_size=200))
def test_any_text_gets_a_verdict(question: Question, said: str) -> None:
    verdict = judge(question, said)
    assert isinstance(verdict, Verdict)
    assert verdict.valid == (verdict.reason is None)
    if verdict.valid and question.kind in ("number", "scale"):
        assert question.min is not None and question.max is not None
        assert question.min <= float(verdict.value or "nan") <= question.max
    if verdict.valid and question.kind == "choice":
        assert verdict.value in {o.key for o in question.options}


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=50), st.integers(0, 2))
def test_any_answer_moves_the_flow_on(said: str, index: int) -> None:
    spec = survey_spec()
    question = spec.questions[index]
    for asks in (0, 1):
        step = flow.next_step(spec, Position(index, asks), judge(question, said), "en")
        if step.position is not None:
            assert step.position.question in (index, index + 1)
        assert step.send is None or step.send


def test_the_reask_then_an_invalid_answer_moves_on() -> None:
    spec = survey_spec()
    bad = judge(spec.questions[0], "maybe")
    first = flow.next_step(spec, Position(0, 0), bad, "es")
    assert first.record is None and first.position == Position(0, 1)
    assert first.send is not None and first.send.startswith("Lo sentimos")
    assert "1) Buena" in first.send
    second = flow.next_step(spec, Position(0, 1), bad, "es")
    assert second.record == bad and second.position == Position(1, 0)
    last = flow.next_step(spec, Position(2, 0), judge(spec.questions[2], "ok"), "es")
    assert last.position is None and last.send == "Gracias!"
