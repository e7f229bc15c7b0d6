"""What follows an answer, and the texts a survey sends (pure).

Theory of operation. A session stands at one question (`position.question`) and knows
whether it was already asked again (`position.asks`). A reply gets a verdict
(`answers.judge`), then:

| verdict | asked again yet | recorded          | next                                  |
|---------|-----------------|-------------------|---------------------------------------|
| valid   | either          | the value         | the next question, or thanks and done |
| invalid | no              | nothing           | the same question, with the re-ask    |
| invalid | yes             | invalid, a reason | the next question, or thanks and done |

The first question goes out with the intro before it; a choice question lists its
options (`1) Yes`), one per line. A question not answered by its time-out closes the
session as timed out (`runner`), and nothing more is sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.surveys.answers import Verdict
from gateway.surveys.spec import SurveySpec


@dataclass(frozen=True, slots=True)
class Position:
    question: int
    asks: int  # times the current question was asked again (0 or 1)


@dataclass(frozen=True, slots=True)
class Step:
    """`record`: the verdict to store for the current question (None: none yet).
    `send`: the text to send next (None: nothing). `position`: where the session
    stands after (None: done)."""

    record: Verdict | None
    send: str | None
    position: Position | None


def question_text(spec: SurveySpec, index: int, language: str) -> str:
    q = spec.questions[index]
    lines = [_in(q.text, language)]
    lines.extend(f"{o.key}) {_in(o.label, language)}" for o in q.options)
    return "\n".join(lines)


def first_text(spec: SurveySpec, language: str) -> str:
    intro = "" if spec.intro is None else _in(spec.intro, language) + "\n"
    return intro + question_text(spec, 0, language)


def next_step(spec: SurveySpec, at: Position, verdict: Verdict, language: str) -> Step:
    if not verdict.valid and at.asks == 0:
        again = spec.reask_text(language) + "\n" + question_text(spec, at.question, language)
        return Step(None, again, Position(at.question, 1))
    following = at.question + 1
    if following < len(spec.questions):
        return Step(verdict, question_text(spec, following, language), Position(following, 0))
    thanks = None if spec.thanks is None else _in(spec.thanks, language)
    return Step(verdict, thanks, None)


def language_for(spec: SurveySpec, *wanted: str | None) -> str:
    """The first of `wanted` the survey speaks (by full tag, then by its language),
    else the survey's first language."""
    for w in wanted:
        if not w:
            continue
        for candidate in (w, w.split("-")[0]):
            if candidate in spec.languages:
                return candidate
    return spec.languages[0]


def _in(texts: dict[str, str], language: str) -> str:
    return texts.get(language) or next(iter(texts.values()))
