"""Shared survey fixtures for the engine, API and panel tests: a sample survey, the
callers, sending a text in from a handset, reading what the survey sent."""

from __future__ import annotations

from typing import Any

from drivers.base import InboundSms
from gateway.app import Gateway
from gateway.surveys.spec import SurveySpec
from gateway.surveys.usecase import Target
from gateway.usecases.caller import Caller

WHO = "+12025550123"
OTHER = "+12025550188"

ADMIN = Caller(
    actor="token:admin", token_id=None, sees_all=True, may_send=True, may_read_phi=False,
    may_edit_templates=True,
)  # fmt: skip
PHI = Caller(actor="token:phi", token_id=None, sees_all=True, may_send=True, may_read_phi=True)

SURVEY: dict[str, Any] = {
    "name": "How was your visit?",
    "intro": {"en": "GH Clinic: 3 quick questions.", "es": "Clinica GH: 3 preguntas."},
    "thanks": {"en": "Thank you!", "es": "Gracias!"},
    "questions": [
        {
            "kind": "choice",
            "text": {"en": "How was your visit?", "es": "Como fue su visita?"},
            "options": [
                {"key": "1", "label": {"en": "Good", "es": "Buena"}},
                {"key": "2", "label": {"en": "OK", "es": "Regular"}},
                {"key": "3", "label": {"en": "Bad", "es": "Mala"}},
            ],
        },
        {
            "kind": "scale",
            "text": {"en": "Rate us 0-10", "es": "Califiquenos 0-10"},
            "min": 0,
            "max": 10,
            "timeout_minutes": 60,
        },
        {"kind": "text", "text": {"en": "Anything else?", "es": "Algo mas?"}, "max_length": 100},
    ],
}


def survey_spec(**changes: Any) -> SurveySpec:
    import msgspec

    return msgspec.convert({**SURVEY, **changes}, SurveySpec)


async def make_survey(gw: Gateway, **changes: Any) -> str:
    return (await gw.surveys.create(ADMIN, survey_spec(**changes))).id


async def start(gw: Gateway, survey_id: str, to: str = WHO, **kw: Any) -> str:
    sent = await gw.surveys.send(ADMIN, survey_id, Target(to=to, **kw))
    assert sent.session_id is not None
    return sent.session_id


async def text(gw: Gateway, body: str, sender: str = WHO) -> None:
    """`body` from `sender`, in where a driver hands it over."""
    await gw.sink.inbound("main", InboundSms(sender=sender, body=body, recipient="4000"))


async def sent_to(gw: Gateway, who: str = WHO) -> list[str]:
    """The bodies of the survey's messages to `who`, oldest first."""
    rows = await gw.store.reader.all(
        "SELECT id, body_ct FROM messages WHERE to_index = ? AND category = 'survey'"
        " ORDER BY created_at, id",
        (gw.store.blind_index(who),),
    )
    return [gw.store.decrypt(r[1], r[0], "body") for r in rows]


async def session_state(gw: Gateway, session_id: str) -> tuple[str, int, int]:
    row = await gw.store.reader.one(
        "SELECT state, question, asks FROM survey_sessions WHERE id = ?", (session_id,)
    )
    assert row is not None
    return str(row[0]), int(row[1]), int(row[2])


Row = tuple[int, bool, str | None, str | None]


async def answer_rows(gw: Gateway, session_id: str) -> list[Row]:
    rows = await gw.store.reader.all(
        "SELECT question, valid, value, reason FROM survey_answers WHERE session_id = ?"
        " ORDER BY seq",
        (session_id,),
    )
    return [(int(r[0]), bool(r[1]), r[2], r[3]) for r in rows]
