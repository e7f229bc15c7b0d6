"""What a survey is: its questions (choice, number, scale, free text) in one or more
languages, an intro, a thank-you and the re-ask text, its purpose and class.

`SurveySpec` is the API's request body as well as the stored definition (JSON in
`surveys.spec`); `check` adds the rules a schema cannot say, as `ApiError`s naming the
field and never quoting what was sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec

from gateway.consent.settings import ClientPurpose
from gateway.errors import ApiError

Lang = Annotated[str, msgspec.Meta(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=320)]
Texts = Annotated[
    dict[Lang, Text],
    msgspec.Meta(min_length=1, max_length=8, description="the text per language code"),
]
Key = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9]{1,3}$")]
Kind = Literal["choice", "number", "scale", "text"]
MAX_QUESTIONS = 20
MAX_SCALE_STEPS = 11  # 0-10
DEFAULT_TIMEOUT_MINUTES = 24 * 60
DEFAULT_TEXT_LENGTH = 160
REASK: dict[str, str] = {
    "en": "Sorry, we could not read that answer.",
    "es": "Lo sentimos, no pudimos leer esa respuesta.",
}


class Option(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One answer of a choice question: its key (`1`, `A`) and its label per language;
    a reply of the key, the label, or both (`2 Good`) chooses it."""

    key: Key
    label: Texts


class Question(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    kind: Kind
    text: Texts
    options: Annotated[list[Option], msgspec.Meta(max_length=10)] = []  # choice
    min: Annotated[int, msgspec.Meta(ge=-1_000_000, le=1_000_000)] | None = None  # number, scale
    max: Annotated[int, msgspec.Meta(ge=-1_000_000, le=1_000_000)] | None = None
    max_length: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None  # text; default 160
    timeout_minutes: Annotated[int, msgspec.Meta(ge=1, le=30 * 24 * 60)] | None = None


class SurveySpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A survey (POST) or its next version (PUT). Every text has the same languages as
    the first question's; the first of them is the default."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=80)]
    questions: Annotated[list[Question], msgspec.Meta(min_length=1, max_length=MAX_QUESTIONS)]
    intro: Texts | None = None
    thanks: Texts | None = None
    reask: Annotated[
        Texts | None,
        msgspec.Meta(description="said before a question asked again; default built in"),
    ] = None
    purpose: ClientPurpose = "informational"
    priority: Literal["high", "normal", "bulk"] = "normal"
    timeout_minutes: Annotated[
        int,
        msgspec.Meta(ge=1, le=30 * 24 * 60, description="a question's time-out unless it sets one"),
    ] = DEFAULT_TIMEOUT_MINUTES

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(self.questions[0].text)

    def timeout(self, index: int) -> float:
        q = self.questions[index]
        return 60.0 * (q.timeout_minutes or self.timeout_minutes)

    def reask_text(self, language: str) -> str:
        if self.reask is not None:
            return self.reask.get(language) or next(iter(self.reask.values()))
        return REASK.get(language.split("-")[0], REASK["en"])


def _invalid(field: str, what: str) -> ApiError:
    return ApiError(422, "invalid_field", f"{field}: {what}", field=field)


def check(spec: SurveySpec) -> SurveySpec:
    """`spec` if it is a survey that can run; else the first problem, as an ApiError."""
    languages = set(spec.languages)
    named: list[tuple[str, dict[str, str] | None]] = [
        ("intro", spec.intro),
        ("thanks", spec.thanks),
        ("reask", spec.reask),
    ]
    for i, q in enumerate(spec.questions):
        where = f"questions[{i}]"
        named.append((f"{where}.text", q.text))
        if q.kind == "choice":
            _check_choice(q, where)
            named.extend((f"{where}.options[{k}].label", o.label) for k, o in enumerate(q.options))
        elif q.options:
            raise _invalid(f"{where}.options", "only a choice question has options")
        if q.kind in ("number", "scale"):
            _check_range(q, where)
        elif q.min is not None or q.max is not None:
            raise _invalid(f"{where}.min", "only a number or scale question has a range")
        if q.kind != "text" and q.max_length is not None:
            raise _invalid(f"{where}.max_length", "only a text question has a longest answer")
    for field, texts in named:
        if texts is not None and set(texts) != languages:
            raise _invalid(field, "needs a text in each language of the first question")
    return spec


def _check_choice(q: Question, where: str) -> None:
    if len(q.options) < 2:
        raise _invalid(f"{where}.options", "a choice question needs 2 to 10 options")
    keys = [o.key.casefold() for o in q.options]
    if len(set(keys)) != len(keys):
        raise _invalid(f"{where}.options", "each option needs its own key")


def _check_range(q: Question, where: str) -> None:
    if q.min is None or q.max is None:
        raise _invalid(f"{where}.min", "a number or scale question needs min and max")
    if q.min > q.max:
        raise _invalid(f"{where}.max", "max is below min")
    if q.kind == "scale" and q.max - q.min + 1 > MAX_SCALE_STEPS:
        raise _invalid(f"{where}.max", "a scale has at most 11 steps (0-10)")


def encode(spec: SurveySpec) -> str:
    return msgspec.json.encode(spec).decode()


_DECODER = msgspec.json.Decoder(SurveySpec)


def decode(text: str) -> SurveySpec:
    return _DECODER.decode(text)


@dataclass(frozen=True, slots=True)
class Survey:
    """One stored version of a survey."""

    id: str
    version: int
    spec: SurveySpec
    created_at: float
    created_by: str
