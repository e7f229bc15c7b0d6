"""A survey's results: counts per question for its charts, and the CSV export.

Counts need no decryption: an answer row keeps the canonical value of a choice,
number or scale. A free-text question counts its answers; their texts, like the
numbers, are read (decrypted from the inbound messages and the survey's messages)
only for an export by a caller with PHI rights who asked, and each such export is
audited before a row is returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from gateway.clinical.db import ClinicalDb
from gateway.errors import ApiError
from gateway.surveys import sql
from gateway.surveys.spec import Question, Survey
from gateway.usecases.audit import AuditSink
from gateway.usecases.caller import Caller
from gateway.web.formats import iso

MAX_BINS = 10


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    count: int


@dataclass(frozen=True, slots=True)
class QuestionResult:
    index: int
    kind: str
    text: str
    answered: int  # valid answers
    invalid: int  # recorded invalid after the re-ask
    bars: tuple[Bar, ...]  # choice: per option; number, scale: a histogram; text: none


@dataclass(frozen=True, slots=True)
class Results:
    survey: Survey
    sessions: dict[str, int]  # by state: open, completed, timed_out, stopped, blocked, failed
    questions: tuple[QuestionResult, ...]


def bars_of(q: Question, values: dict[str, int], language: str) -> tuple[Bar, ...]:
    if q.kind == "choice":
        return tuple(
            Bar(f"{o.key}) {o.label.get(language) or next(iter(o.label.values()))}",
                values.get(o.key, 0))
            for o in q.options
        )  # fmt: skip
    if q.kind == "text":
        return ()
    assert q.min is not None and q.max is not None
    low, high = Decimal(q.min), Decimal(q.max)
    steps = int(high - low) + 1
    if q.kind == "scale" or steps <= MAX_BINS:
        counts = dict.fromkeys(range(q.min, q.max + 1), 0)
        other = 0
        for v, n in values.items():
            d = Decimal(v)
            if d == d.to_integral_value() and int(d) in counts:
                counts[int(d)] += n
            else:
                other += n
        bars = [Bar(str(k), n) for k, n in counts.items()]
        return tuple(bars + ([Bar("other", other)] if other else []))
    width = (high - low) / MAX_BINS
    bins = [0] * MAX_BINS
    for v, n in values.items():
        bins[min(int((Decimal(v) - low) / width), MAX_BINS - 1)] += n
    return tuple(
        Bar(f"{_num(low + i * width)} to {_num(low + (i + 1) * width)}", bins[i])
        for i in range(MAX_BINS)
    )


def _num(d: Decimal) -> str:
    q = d.quantize(Decimal("0.1")).normalize()
    return format(q, "f")


async def results(db: ClinicalDb, survey: Survey) -> Results:
    states = await db.all(
        "SELECT state, count(*) FROM survey_sessions WHERE survey_id = ? AND version = ?"
        " GROUP BY state",
        (survey.id, survey.version),
    )
    rows = await db.all(
        "SELECT question, valid, value, count(*) FROM survey_answers"
        " WHERE survey_id = ? AND version = ? GROUP BY question, valid, value",
        (survey.id, survey.version),
    )
    valid: dict[int, dict[str, int]] = {}
    answered: dict[int, int] = {}
    invalid: dict[int, int] = {}
    for question, ok, value, n in rows:
        if ok:
            answered[question] = answered.get(question, 0) + n
            if value is not None:
                valid.setdefault(question, {})[value] = n
        else:
            invalid[question] = invalid.get(question, 0) + n
    language = survey.spec.languages[0]
    out = tuple(
        QuestionResult(
            i,
            q.kind,
            q.text[language],
            answered.get(i, 0),
            invalid.get(i, 0),
            bars_of(q, valid.get(i, {}), language),
        )
        for i, q in enumerate(survey.spec.questions)
    )
    by_state = dict.fromkeys((sql.OPEN, *sql.CLOSED_STATES), 0)
    by_state.update({str(s): int(n) for s, n in states})
    return Results(survey, by_state, out)


EXPORT_HEADER = (
    "session", "started_at", "state", "language", "question", "kind", "valid", "value",
    "reason", "answered_at",
)  # fmt: skip


async def export_rows(
    db: ClinicalDb, audit: AuditSink, caller: Caller, survey: Survey, *, include_numbers: bool
) -> tuple[list[str], list[list[object]]]:
    """The header and one row per recorded answer. Free-text answers' texts come with
    PHI rights (the panel's operators, a `phi` token); numbers only when asked for
    as well. Audited before anything is read."""
    if include_numbers and not caller.may_read_phi:
        raise ApiError(
            403,
            "forbidden",
            "include_numbers: exporting numbers needs the 'phi' scope",
            field="include_numbers",
        )
    texts = caller.may_read_phi
    await audit.record(
        caller.actor, "survey_export", "survey", survey.id,
        version=survey.version, texts=texts, numbers=include_numbers,
    )  # fmt: skip
    rows = await db.all(
        "SELECT s.id, s.started_at, s.state, s.language, a.question, a.valid, a.value,"
        " a.reason, a.at, a.inbound_id, i.body_ct, m.id, m.to_ct"
        " FROM survey_answers a JOIN survey_sessions s ON s.id = a.session_id"
        " LEFT JOIN inbound i ON i.id = a.inbound_id"
        " LEFT JOIN messages m ON m.id = s.message_id"
        " WHERE a.survey_id = ? AND a.version = ? ORDER BY s.started_at, s.id, a.seq",
        (survey.id, survey.version),
    )
    header = (
        list(EXPORT_HEADER) + (["text"] if texts else []) + (["number"] if include_numbers else [])
    )
    out: list[list[object]] = []
    questions = survey.spec.questions
    for r in rows:
        kind = questions[r[4]].kind
        line: list[object] = [r[0], iso(r[1]), r[2], r[3], r[4] + 1, kind, bool(r[5]), r[6], r[7],
                              iso(r[8])]  # fmt: skip
        if texts:
            text = None
            if kind == "text" and r[10] is not None:
                text = db.cipher.decrypt(bytes(r[10]), r[9], "body")
            line.append(text)
        if include_numbers:
            line.append(None if r[12] is None else db.cipher.decrypt(bytes(r[12]), r[11], "to"))
        out.append(line)
    return header, out
