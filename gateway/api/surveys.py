"""`/api/v1/surveys`: SMS surveys over HTTP (issue 15, point 5).

Handlers translate to `gw.surveys` (`gateway/surveys/usecase.py`) and back. Reading,
results and the export need `read`; creating and a new version (PUT) need `admin`;
sending needs `send`. Saving, sending and every export are audited. The CSV export
carries free-text answers only for a token with `phi`, and numbers only when such a
token asks with `include_numbers=true`; cells that a spreadsheet would run as a
formula are escaped (`gateway/csv_safe.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import msgspec
from aiohttp import web

from gateway.api.handlers import AUTH_RECORD
from gateway.api.openapi import Answer, Query
from gateway.contacts.audience import AudienceSpec
from gateway.csv_safe import csv_line
from gateway.errors import ApiError
from gateway.intake import decode_with
from gateway.surveys.results import Results
from gateway.surveys.spec import Lang, Survey, SurveySpec
from gateway.surveys.usecase import Sent, Target
from gateway.usecases import Caller
from gateway.web.context import gateway_of, json_response
from gateway.web.formats import iso

SURVEY_ID = "{survey_id:svy_[0-9a-f]{16}}"
Phone = Annotated[
    str,
    msgspec.Meta(
        min_length=1, max_length=64, description="one number, E.164 or national form",
        extra_json_schema={"format": "phone"},
    ),
]  # fmt: skip


class SendBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One number (`to`) or an `audience` (groups, tags, attributes), not both."""

    to: Phone | None = None
    audience: AudienceSpec | None = None
    language: Annotated[
        Lang | None,
        msgspec.Meta(description="the survey's language to use; default: the contact's, else"
                     " the survey's first"),
    ] = None  # fmt: skip


class SurveyView(msgspec.Struct, frozen=True):
    id: str
    version: int
    name: str
    created_at: str | None
    created_by: str
    survey: SurveySpec


class SurveyList(msgspec.Struct, frozen=True):
    surveys: list[SurveyView]


class SurveyDetail(msgspec.Struct, frozen=True):
    survey: SurveyView
    versions: list[SurveyView]


_BLOCKED = "first questions the send policy blocked, by reason"
_REFUSED = "recipients refused, by error code (invalid_number, no_route, ...)"


class SentView(msgspec.Struct, frozen=True):
    started: int
    already_open: int
    blocked: Annotated[dict[str, int], msgspec.Meta(description=_BLOCKED)]
    refused: Annotated[dict[str, int], msgspec.Meta(description=_REFUSED)]
    session_id: str | None = None
    status: Annotated[
        str | None, msgspec.Meta(description="one number: queued, scheduled or blocked")
    ] = None


class BarView(msgspec.Struct, frozen=True):
    label: str
    count: int


class QuestionView(msgspec.Struct, frozen=True):
    index: int
    kind: str
    text: str
    answered: int
    invalid: int
    bars: list[BarView]


class ResultsView(msgspec.Struct, frozen=True):
    survey_id: str
    version: int
    sessions: Annotated[dict[str, int], msgspec.Meta(description="sessions by state: open,"
                        " completed, timed_out, stopped, blocked, failed")]  # fmt: skip
    questions: list[QuestionView]


_SURVEY = msgspec.json.Decoder(SurveySpec)
_SEND = msgspec.json.Decoder(SendBody)


def _caller(request: web.Request) -> Caller:
    return Caller.for_token(request[AUTH_RECORD])  # set by the guard


def view_of(s: Survey) -> SurveyView:
    return SurveyView(s.id, s.version, s.spec.name, iso(s.created_at), s.created_by, s.spec)


def sent_view(sent: Sent) -> SentView:
    return SentView(
        sent.started, sent.already_open, dict(sent.blocked), dict(sent.refused),
        sent.session_id, sent.status,
    )  # fmt: skip


def results_view(r: Results) -> ResultsView:
    return ResultsView(
        r.survey.id,
        r.survey.version,
        r.sessions,
        [
            QuestionView(q.index, q.kind, q.text, q.answered, q.invalid,
                         [BarView(b.label, b.count) for b in q.bars])
            for q in r.questions
        ],
    )  # fmt: skip


def _version(request: web.Request) -> int | None:
    text = request.query.get("version")
    if text is None:
        return None
    if not (text.isascii() and text.isdigit() and 0 < len(text) < 10 and int(text) > 0):
        raise ApiError(400, "invalid_query", "version: a version number", field="version")
    return int(text)


def _flag(request: web.Request, name: str) -> bool:
    text = request.query.get(name, "false")
    if text not in ("true", "false"):
        raise ApiError(400, "invalid_query", f"{name}: true or false", field=name)
    return text == "true"


async def list_surveys(request: web.Request) -> web.Response:
    found = await gateway_of(request).surveys.list_surveys(_caller(request))
    return json_response(SurveyList([view_of(s) for s in found]))


async def get_survey(request: web.Request) -> web.Response:
    current, versions = await gateway_of(request).surveys.get(
        _caller(request), request.match_info["survey_id"]
    )
    return json_response(SurveyDetail(view_of(current), [view_of(v) for v in versions]))


async def post_survey(request: web.Request) -> web.Response:
    spec = decode_with(_SURVEY, await request.read())
    made = await gateway_of(request).surveys.create(_caller(request), spec)
    return json_response(view_of(made), status=201)


async def put_survey(request: web.Request) -> web.Response:
    spec = decode_with(_SURVEY, await request.read())
    made = await gateway_of(request).surveys.update(
        _caller(request), request.match_info["survey_id"], spec
    )
    return json_response(view_of(made))


async def send_survey(request: web.Request) -> web.Response:
    body = decode_with(_SEND, await request.read())
    sent = await gateway_of(request).surveys.send(
        _caller(request),
        request.match_info["survey_id"],
        Target(body.to, body.audience, body.language),
    )
    return json_response(sent_view(sent), status=202)


async def survey_results(request: web.Request) -> web.Response:
    found = await gateway_of(request).surveys.results(
        _caller(request), request.match_info["survey_id"], _version(request)
    )
    return json_response(results_view(found))


async def survey_export(request: web.Request) -> web.StreamResponse:
    survey_id = request.match_info["survey_id"]
    header, rows = await gateway_of(request).surveys.export(
        _caller(request),
        survey_id,
        version=_version(request),
        include_numbers=_flag(request, "include_numbers"),
    )
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{survey_id}-results.csv"',
            "Cache-Control": "no-store",
        }
    )
    await response.prepare(request)
    await response.write(csv_line(header).encode())
    for row in rows:
        await response.write(csv_line(row).encode())
    await response.write_eof()
    return response


_NO_SURVEY = Answer(404, "`not_found`: no survey with this id (or no such version)")
_INVALID = Answer(
    422,
    "`invalid_field` (`field` names it: questions[i].options, questions[i].max, intro, ...):"
    " a rule across fields, e.g. every text in the first question's languages",
)
_VERSION = Query("version", "a version of the survey (default: the current one)",
                 {"type": "string", "pattern": "^[1-9][0-9]{0,8}$"})  # fmt: skip
_BAD_QUERY = Answer(400, "`invalid_query`: a bad `version` or `include_numbers`")


def endpoints(endpoint: Callable[..., Any]) -> tuple[Any, ...]:
    """The rows of the server's endpoint table, built with its `Endpoint` class."""
    base = "/api/v1/surveys"
    return (
        endpoint("GET", base, list_surveys, "read", "Surveys (current versions)",
                 None, SurveyList),
        endpoint("POST", base, post_survey, "admin", "Create a survey (audited)",
                 SurveySpec, SurveyView, 201, answers=(_INVALID,)),
        endpoint("GET", f"{base}/{SURVEY_ID}", get_survey, "read",
                 "A survey with all its versions, newest first", None, SurveyDetail,
                 answers=(_NO_SURVEY,)),
        endpoint("PUT", f"{base}/{SURVEY_ID}", put_survey, "admin",
                 "A new version of a survey; sessions already running keep theirs (audited)",
                 SurveySpec, SurveyView, answers=(_NO_SURVEY, _INVALID)),
        endpoint("POST", f"{base}/{SURVEY_ID}/send", send_survey, "send",
                 "Start the survey for one number or an audience: each first question goes"
                 " through the send policy; a number already answering a survey is refused"
                 " (audited)",
                 SendBody, SentView, 202,
                 answers=(_NO_SURVEY,
                          Answer(409, "`survey_open`: this number is answering a survey"),
                          Answer(422, "`invalid_field` (to or audience, not both),"
                                 " `empty_audience`, `invalid_number`, `no_route`"),
                          Answer(503, "`shutting_down`"))),
        endpoint("GET", f"{base}/{SURVEY_ID}/results", survey_results, "read",
                 "Counts per question: per option, a histogram, answers; sessions by state",
                 None, ResultsView, query=(_VERSION,), answers=(_NO_SURVEY, _BAD_QUERY)),
        endpoint("GET", f"{base}/{SURVEY_ID}/results.csv", survey_export, "read",
                 "One row per answer as CSV (audited); free-text answers need phi, numbers"
                 " need phi and include_numbers=true",
                 query=(_VERSION,
                        Query("include_numbers", "add each respondent's number (needs phi)",
                              {"type": "string", "enum": ["true", "false"]})),
                 answers=(_NO_SURVEY, _BAD_QUERY,
                          Answer(403, "`forbidden`: include_numbers needs the 'phi' scope")),
                 content_type="text/csv"),
    )  # fmt: skip
