"""`/api/v1/templates`: message templates over HTTP.

Handlers translate to `gw.templates` (`gateway/templates/usecase.py`) and back.
Reading, preview and lint need `read`; saving, activating and deleting need `admin`.
A save is refused with `422 template_<rule>` when the lint finds a problem (the rule
is also in the message); `POST /templates/lint` lists every problem with its span.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

import msgspec
from aiohttp import web

from gateway.api.handlers import AUTH_RECORD
from gateway.api.openapi import Answer
from gateway.clinical.notices import NoticeKind
from gateway.consent.purposes import CLIENT_PURPOSES
from gateway.intake import decode_with
from gateway.templates.lint import Problem
from gateway.templates.store import Version
from gateway.templates.usecase import DraftRequest, Preview
from gateway.templates.variables import VarType
from gateway.usecases import Caller
from gateway.web.context import gateway_of, json_response
from gateway.web.formats import iso

E = TypeVar("E")
Body = Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
_LANG_DOC = 'a language tag: "en", "es", "es-MX"'
_PURPOSE_DOC = "the consent purpose the texts are sent under (appointment, results...)"
_VARS_DOC = (
    "declared variables by name: {type, max_length}; type is one of provider, text,"
    " datetime, date, time, short_code, url, phone, drug, note (clinic, provider,"
    " location, start, date, time, short_code, portal_url, phone need no type)"
)


# Documented in the schema, checked by the use case (its codes: invalid_purpose, ...).
_PURPOSES = {"enum": [p.value for p in CLIENT_PURPOSES]}
_KINDS = {"enum": [k.value for k in NoticeKind]}
_TYPES = {"enum": [t.value for t in VarType]}
_NAMES = {"propertyNames": {"pattern": "^[a-z][a-z0-9_]{0,31}$"}}
_LANGUAGE = {"pattern": "^[a-z]{2,3}(-[A-Z]{2})?$"}
Purpose = Annotated[
    str, msgspec.Meta(max_length=32, description=_PURPOSE_DOC, extra_json_schema=_PURPOSES)
]
Kind = Annotated[
    Annotated[str, msgspec.Meta(max_length=32, extra_json_schema=_KINDS)] | None,
    msgspec.Meta(description="the notice kind it is written for, if any"),
]


class VariableSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    type: Annotated[str, msgspec.Meta(max_length=16, extra_json_schema=_TYPES)] | None = None
    max_length: Annotated[int, msgspec.Meta(ge=1, le=160)] | None = None
    default: Annotated[
        Annotated[str, msgspec.Meta(min_length=1, max_length=160)] | None,
        msgspec.Meta(description="text types: the text when no value is given"),
    ] = None


Variables = Annotated[
    dict[str, VariableSpec], msgspec.Meta(description=_VARS_DOC, extra_json_schema=_NAMES)
]


class VariantSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: Annotated[str, msgspec.Meta(pattern="^[A-Za-z0-9_-]{1,16}$")]
    body: Body
    weight: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1


Variants = Annotated[
    list[VariantSpec] | None,
    msgspec.Meta(description="A/B variants with weights (2 to 8, unique names); or body"),
]


class TemplateRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    purpose: Purpose
    kind: Kind = None
    variables: Variables = msgspec.field(default_factory=dict)
    body: Annotated[Body | None, msgspec.Meta(description="the text; or variants")] = None
    variants: Variants = None


class DraftBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    language: Annotated[
        str, msgspec.Meta(max_length=8, description=_LANG_DOC, extra_json_schema=_LANGUAGE)
    ]
    purpose: Purpose
    kind: Kind = None
    variables: Variables = msgspec.field(default_factory=dict)
    body: Annotated[Body | None, msgspec.Meta(description="the text; or variants")] = None
    variants: Variants = None
    values: Annotated[
        dict[str, Annotated[str, msgspec.Meta(max_length=160)]],
        msgspec.Meta(description="preview only: values for variables (samples otherwise)"),
    ] = msgspec.field(default_factory=dict)
    time_zone: Annotated[
        Annotated[str, msgspec.Meta(max_length=64, extra_json_schema={"format": "iana-time-zone"})]
        | None,
        msgspec.Meta(description="preview only: the clinic's IANA zone"),
    ] = None


class VariableView(msgspec.Struct, frozen=True):
    name: str
    type: str
    max_length: int | None
    default: str | None


class VariantView(msgspec.Struct, frozen=True):
    name: str | None
    body: str
    weight: int


class TemplateView(msgspec.Struct, frozen=True):
    id: str
    name: str
    language: str
    version: int
    purpose: str
    kind: str | None
    variables: list[VariableView]
    variants: list[VariantView]
    builtin: bool
    active: bool
    created_at: str | None
    created_by: str


class TemplateList(msgspec.Struct, frozen=True):
    templates: list[TemplateView]


class ProblemView(msgspec.Struct, frozen=True):
    rule: str
    message: str
    variant: str | None
    start: int | None
    end: int | None


class LintView(msgspec.Struct, frozen=True):
    ok: bool
    problems: list[ProblemView]


class PreviewTextView(msgspec.Struct, frozen=True):
    variant: str | None
    text: str | None
    characters: int
    encoding: str | None
    segments: int


class PreviewView(msgspec.Struct, frozen=True):
    ok: bool
    language: str
    texts: list[PreviewTextView]
    problems: list[ProblemView]


_TEMPLATE = msgspec.json.Decoder(TemplateRequest)
_DRAFT = msgspec.json.Decoder(DraftBody)


def _caller(request: web.Request) -> Caller:
    return Caller.for_token(request[AUTH_RECORD])


def template_view(v: Version) -> TemplateView:
    d = v.draft
    return TemplateView(
        v.id,
        d.name,
        d.language,
        v.version,
        d.purpose,
        d.kind,
        [VariableView(x.name, x.type.value, x.max_length, x.default) for x in d.variables],
        [VariantView(x.name, x.body, x.weight) for x in d.variants],
        v.builtin,
        v.active,
        iso(v.created_at),
        v.created_by,
    )


def problem_view(p: Problem) -> ProblemView:
    return ProblemView(p.rule, p.message, p.variant, p.start, p.end)


def preview_view(p: Preview) -> PreviewView:
    return PreviewView(
        not p.problems,
        p.language,
        [PreviewTextView(t.variant, t.text, t.characters, t.encoding, t.segments) for t in p.texts],
        [problem_view(x) for x in p.problems],
    )


def draft_request(body: TemplateRequest | DraftBody, name: str, language: str) -> DraftRequest:
    return DraftRequest(
        language,
        body.purpose,
        {
            k: {"type": v.type, "max_length": v.max_length, "default": v.default}
            for k, v in body.variables.items()
        },
        body.body,
        None if body.variants is None else tuple((v.name, v.body, v.weight) for v in body.variants),
        body.kind,
        name,
    )


async def list_templates(request: web.Request) -> web.Response:
    heads = await gateway_of(request).templates.heads(_caller(request))
    return json_response(TemplateList([template_view(v) for v in heads]))


async def get_template(request: web.Request) -> web.Response:
    versions = await gateway_of(request).templates.versions(
        _caller(request), request.match_info["name"]
    )
    return json_response(TemplateList([template_view(v) for v in versions]))


async def put_template(request: web.Request) -> web.Response:
    body = decode_with(_TEMPLATE, await request.read())
    req = draft_request(body, request.match_info["name"], request.match_info["language"])
    saved = await gateway_of(request).templates.save(_caller(request), req)
    return json_response(template_view(saved), status=201)


async def activate_template(request: web.Request) -> web.Response:
    m = request.match_info
    templates = gateway_of(request).templates
    await templates.activate(_caller(request), m["name"], m["language"], int(m["version"]))
    versions = await templates.versions(_caller(request), m["name"])
    active = next(v for v in versions if v.draft.language == m["language"] and v.active)
    return json_response(template_view(active))


async def delete_template(request: web.Request) -> web.Response:
    m = request.match_info
    await gateway_of(request).templates.delete(_caller(request), m["name"], m["language"])
    return json_response({"name": m["name"], "language": m["language"], "active": None})


async def preview_template(request: web.Request) -> web.Response:
    body = decode_with(_DRAFT, await request.read())
    req = draft_request(body, "draft", body.language)
    done = gateway_of(request).templates.preview(_caller(request), req, body.values, body.time_zone)
    return json_response(preview_view(done))


async def lint_template(request: web.Request) -> web.Response:
    body = decode_with(_DRAFT, await request.read())
    problems = gateway_of(request).templates.lint(
        _caller(request), draft_request(body, "draft", body.language)
    )
    return json_response(LintView(not problems, [problem_view(p) for p in problems]))


# -- the endpoint table's rows (`gateway.api.server.ENDPOINTS`) --------------------------
# "preview" and "lint" are actions, never a template's name (`usecase.NAME`).
_TPL_NAME = "{name:(?!(?:preview|lint)$)[a-z][a-z0-9_.-]{0,63}}"
_TPL_LANG = "{language:[a-z]{2,3}(?:-[A-Z]{2})?}"
_TPL_NONE = Answer(404, "`not_found`: no such template (or version)")
_TPL_PATH = Answer(404, "`not_found`: a name or language tag the path does not take")
_TPL_DRAFT = Answer(
    422,
    "`invalid_name`, `invalid_language`, `invalid_purpose`, `invalid_kind`,"
    " `invalid_variable`, `invalid_field` (body or variants), `invalid_time_zone`",
)


def endpoints(make: Callable[..., E]) -> tuple[E, ...]:
    """The rows `gateway.api.server` adds to its table (`make` is its `Endpoint`)."""
    return (
        make(
            "GET",
            "/api/v1/templates",
            list_templates,
            "read",
            "The active version of every template, per name and language",
            None,
            TemplateList,
        ),
        make(
            "GET",
            f"/api/v1/templates/{_TPL_NAME}",
            get_template,
            "read",
            "Every version of a template in every language, newest first",
            None,
            TemplateList,
            answers=(_TPL_NONE,),
        ),
        make(
            "PUT",
            f"/api/v1/templates/{_TPL_NAME}/{_TPL_LANG}",
            put_template,
            "admin",
            "Save a new version of a template in a language (made active; audited);"
            " refused by the lint with `template_<rule>`",
            TemplateRequest,
            TemplateView,
            201,
            answers=(
                _TPL_DRAFT,
                _TPL_PATH,
                Answer(
                    422,
                    "`template_<rule>`: the lint refused it; rules: syntax, unknown_variable,"
                    " bad_format, result_value, diagnosis, drug_name, free_text, and for"
                    " clinical purposes (MSG-3) provider_name, opt_out, too_long, marketing",
                ),
            ),
        ),
        make(
            "POST",
            f"/api/v1/templates/{_TPL_NAME}/{_TPL_LANG}/versions/{{version:[0-9]{{1,9}}}}/activate",
            activate_template,
            "admin",
            "Make an earlier (or later) version the active one (audited)",
            None,
            TemplateView,
            answers=(Answer(404, "`not_found`: no such template version"),),
        ),
        make(
            "DELETE",
            f"/api/v1/templates/{_TPL_NAME}/{_TPL_LANG}",
            delete_template,
            "admin",
            "No active version in this language any more (versions kept; audited)",
            answers=(_TPL_NONE,),
        ),
        make(
            "POST",
            "/api/v1/templates/preview",
            preview_template,
            "read",
            "Render a draft with sample (or given) values: text, encoding, segments, and"
            " the lint's problems",
            DraftBody,
            PreviewView,
            answers=(_TPL_DRAFT,),
        ),
        make(
            "POST",
            "/api/v1/templates/lint",
            lint_template,
            "read",
            "Lint a draft: every problem with its rule, variant and character span",
            DraftBody,
            LintView,
            answers=(_TPL_DRAFT,),
        ),
    )
