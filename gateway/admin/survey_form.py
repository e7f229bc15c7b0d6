"""The survey editor's form, both ways: a `SurveySpec` from what was typed, and the
form's values from a spec (to edit a version, or to show back what was typed).

Texts are written one language a line, `en: How was your visit?`; a choice
question's options one a line, `1 | Good | Buena` (the key, then the label in each
language of the survey, in the order the languages are listed)."""

from __future__ import annotations

from typing import Any

import msgspec
from multidict import MultiDictProxy

from gateway.errors import ApiError
from gateway.intake import validation_error
from gateway.surveys.spec import SurveySpec, check

FormData = MultiDictProxy[str | bytes | Any]
MIN_SLOTS = 3
MAX_SLOTS = 20
KINDS = ("choice", "number", "scale", "text")
TOP_FIELDS = ("name", "intro", "thanks", "reask", "purpose", "priority", "timeout_minutes")
Q_FIELDS = ("kind", "text", "options", "min", "max", "max_length", "timeout_minutes")


def _text(form: FormData, name: str) -> str:
    return str(form.get(name, "")).strip()


def _invalid(field: str, what: str) -> ApiError:
    return ApiError(422, "invalid_field", f"{field}: {what}", field=field)


def texts_of(text: str, field: str) -> dict[str, str] | None:
    """`lang: text` lines as a dict (None if blank)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        lang, colon, said = line.partition(":")
        if not colon or not said.strip():
            raise _invalid(field, "write one line per language, like en: Thank you")
        out[lang.strip()] = said.strip()
    return out or None


def options_of(text: str, languages: list[str], field: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split("|")]
        if len(parts) != len(languages) + 1:
            raise _invalid(field, "write key | label per language, like 1 | Good | Buena")
        out.append({"key": parts[0], "label": dict(zip(languages, parts[1:], strict=True))})
    return out


def _number(text: str, field: str) -> int | None:
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise _invalid(field, "a whole number") from None


def spec_of(form: FormData) -> SurveySpec:
    """The survey typed in; an ApiError naming the field otherwise."""
    questions: list[dict[str, Any]] = []
    languages: list[str] = []
    for i in range(MAX_SLOTS):
        kind = _text(form, f"q{i}_kind")
        if not kind:
            continue
        where = f"questions[{len(questions)}]"
        text = texts_of(_text(form, f"q{i}_text"), f"{where}.text") or {}
        if not languages:
            languages = list(text)
        q: dict[str, Any] = {"kind": kind, "text": text}
        if kind == "choice":
            q["options"] = options_of(_text(form, f"q{i}_options"), languages, f"{where}.options")
        for name in ("min", "max", "max_length", "timeout_minutes"):
            value = _number(_text(form, f"q{i}_{name}"), f"{where}.{name}")
            if value is not None:
                q[name] = value
        questions.append(q)
    raw: dict[str, Any] = {
        "name": _text(form, "name"),
        "questions": questions,
        "purpose": _text(form, "purpose") or "informational",
        "priority": _text(form, "priority") or "normal",
    }
    for name in ("intro", "thanks", "reask"):
        found = texts_of(_text(form, name), name)
        if found is not None:
            raw[name] = found
    timeout = _number(_text(form, "timeout_minutes"), "timeout_minutes")
    if timeout is not None:
        raw["timeout_minutes"] = timeout
    try:
        spec = msgspec.convert(raw, SurveySpec)
    except msgspec.ValidationError as e:
        raise validation_error(str(e)) from None
    return check(spec)


def _lines(texts: dict[str, str] | None) -> str:
    return "" if texts is None else "\n".join(f"{k}: {v}" for k, v in texts.items())


def form_of(spec: SurveySpec | None = None, typed: FormData | None = None) -> dict[str, Any]:
    """The form's values: a spec's, what was typed, or a blank form."""
    if typed is not None:
        top = {k: _text(typed, k) for k in TOP_FIELDS}
        slots = [{f: _text(typed, f"q{i}_{f}") for f in Q_FIELDS} for i in range(MAX_SLOTS)]
        used = max((i + 1 for i, s in enumerate(slots) if s["kind"]), default=0)
        return {**top, "questions": slots[: min(MAX_SLOTS, max(MIN_SLOTS, used + 2))]}
    if spec is None:
        blank = dict.fromkeys(Q_FIELDS, "")
        return {"name": "", "intro": "", "thanks": "en: Thank you!", "reask": "",
                "purpose": "informational", "priority": "normal", "timeout_minutes": "1440",
                "questions": [dict(blank) for _ in range(MIN_SLOTS)]}  # fmt: skip
    languages = spec.languages
    questions = [
        {
            "kind": q.kind,
            "text": _lines(q.text),
            "options": "\n".join(
                " | ".join([o.key, *(o.label.get(lang, "") for lang in languages)])
                for o in q.options
            ),
            "min": "" if q.min is None else str(q.min),
            "max": "" if q.max is None else str(q.max),
            "max_length": "" if q.max_length is None else str(q.max_length),
            "timeout_minutes": "" if q.timeout_minutes is None else str(q.timeout_minutes),
        }
        for q in spec.questions
    ]
    blank = dict.fromkeys(Q_FIELDS, "")
    extra = min(MAX_SLOTS, len(questions) + 2) - len(questions)
    return {
        "name": spec.name, "intro": _lines(spec.intro), "thanks": _lines(spec.thanks),
        "reask": _lines(spec.reask), "purpose": spec.purpose, "priority": spec.priority,
        "timeout_minutes": str(spec.timeout_minutes),
        "questions": questions + [dict(blank) for _ in range(max(extra, 0))],
    }  # fmt: skip
