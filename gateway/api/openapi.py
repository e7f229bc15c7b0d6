"""OpenAPI 3.1 document built from the endpoint table and the msgspec schemas.

Every status an endpoint can answer is described: the ones each kind of endpoint shares
(auth, body, idempotency) are added here, the endpoint's own in its `answers`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

import gateway

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "stable, machine-readable"},
                "message": {"type": "string", "description": "for people; never holds PHI"},
                "field": {"type": "string", "description": "the request field at fault"},
            },
        }
    },
}


@dataclass(frozen=True, slots=True)
class Query:
    """A query parameter: its name, what it does, and its JSON schema."""

    name: str
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False


@dataclass(frozen=True, slots=True)
class Answer:
    """A status an endpoint may answer besides its success, with the error codes it
    carries; `schema` None means the standard error object."""

    status: int
    description: str
    schema: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Link:
    """An OpenAPI link from the success answer to another operation."""

    name: str
    operation_id: str
    parameters: dict[str, str]


PROMETHEUS_TEXT = "text/plain; version=0.0.4"


class _Endpoint(Protocol):
    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def scope(self) -> str | None: ...
    @property
    def summary(self) -> str: ...
    @property
    def request(self) -> type | None: ...
    @property
    def response(self) -> type | None: ...
    @property
    def status(self) -> int: ...
    @property
    def query(self) -> tuple[Query, ...]: ...
    @property
    def idempotent(self) -> bool: ...
    @property
    def answers(self) -> tuple[Answer, ...]: ...
    @property
    def links(self) -> tuple[Link, ...]: ...
    @property
    def content_type(self) -> str: ...
    @property
    def request_text(self) -> str | None: ...


_PARAM = re.compile(r"{(\w+)(?::((?:[^{}]|{[^{}]*})+))?}")


def openapi_path(path: str) -> str:
    """An aiohttp route path with its `{name:regex}` parts written as `{name}`."""
    return _PARAM.sub(lambda m: "{" + m.group(1) + "}", path)


def build_openapi(
    endpoints: Iterable[_Endpoint], *, max_batch: int, routes: Sequence[str] = ()
) -> dict[str, Any]:
    """The document, with this deployment's limits: `max_batch` (`http.max_batch`) is
    the batch's `maxItems`, and a send's `route` and `/routes/{name}` name one of
    `routes` (the configured route names)."""
    endpoints = list(endpoints)
    types = {t for e in endpoints for t in (e.request, e.response) if t is not None}
    ordered = sorted(types, key=lambda t: t.__name__)
    refs, components = msgspec.json.schema_components(
        ordered, ref_template="#/components/schemas/{name}"
    )
    ref_of = dict(zip(ordered, refs, strict=True))
    components["Error"] = ERROR_SCHEMA
    batch = components.get("BatchRequest")
    if batch is not None:
        batch["properties"]["messages"]["maxItems"] = max_batch
    send = components.get("SendRequest")
    if send is not None and routes:
        send["properties"]["route"] = {"anyOf": [{"enum": list(routes)}, {"type": "null"}]}
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        path = openapi_path(e.path)
        success = _body(ref_of.get(e.response) if e.response else None, "success", e.content_type)
        if e.links:
            success["links"] = {
                link.name: {"operationId": link.operation_id, "parameters": link.parameters}
                for link in e.links
            }
        op: dict[str, Any] = {
            "summary": e.summary,
            "operationId": _operation_id(e.method, path),
            "responses": {str(e.status): success},
        }
        params: list[dict[str, Any]] = []
        for m in _PARAM.finditer(e.path):
            schema: dict[str, Any] = {"type": "string"}
            if m.group(2):
                schema["pattern"] = f"^{m.group(2)}$"
            if m.group(1) == "name" and routes:
                schema["enum"] = list(routes)
            params.append({"name": m.group(1), "in": "path", "required": True, "schema": schema})
        for q in e.query:
            params.append(
                {
                    "name": q.name,
                    "in": "query",
                    "required": q.required,
                    "description": q.description,
                    "schema": q.schema,
                }
            )
        if e.idempotent:
            params.append(
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "description": "replays return the first response; reuse with a"
                    " different body is 409; empty or longer than 255 is 400",
                    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                }
            )
        if params:
            op["parameters"] = params
        if e.request is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref_of[e.request]}},
            }
        elif e.request_text is not None:  # a text body (a CSV list), read as a stream
            op["requestBody"] = {
                "required": True,
                "content": {e.request_text: {"schema": {"type": "string"}}},
            }
        answers: list[Answer] = []
        if e.scope is not None:
            op["security"] = [{"bearer": [e.scope]}]
            answers.append(Answer(401, "`unauthenticated`: missing, invalid or revoked token"))
            answers.append(Answer(403, f"`forbidden`: the token lacks the {e.scope!r} scope"))
        else:
            op["security"] = []
        if e.request is not None:
            answers.append(Answer(400, "`bad_json`: the body is not JSON"))
            answers.append(Answer(413, "`too_large`: the body is over http.max_body_bytes"))
            answers.append(
                Answer(
                    422,
                    "`invalid_field`, `missing_field`, `unknown_field`, ...:"
                    " a field is invalid; `field` names it",
                )
            )
            answers.append(Answer(503, "`shutting_down`, `store_unavailable` or `key_retired`"))
        if e.idempotent:
            answers.append(Answer(400, "`invalid_idempotency_key`: empty or too long"))
            answers.append(Answer(409, "`idempotency_conflict`: key reused with another body"))
        answers.extend(e.answers)
        answers.extend(_HTTP_LAYER)
        for status, answer in _merge(answers).items():
            op["responses"][str(status)] = answer
        paths.setdefault(path, {})[e.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "smsgw API",
            "version": gateway.__version__,
            "description": "Send and track SMS through the hospital's gateway. Numbers"
            " and bodies are never returned; errors are {error: {code, message}}.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "smsgw_<id>_<secret> token",
                }
            },
        },
    }


# What the HTTP layer below the endpoints (gateway/web/) answers for any request.
_HTTP_LAYER = (
    Answer(400, "`bad_request`, `invalid_path` or `missing_host`: the request is malformed"),
    Answer(417, "`expectation_failed`: an `Expect` other than 100-continue"),
    Answer(421, "`unknown_host`: the Host header names none of http.server_names"),
    Answer(503, "`too_many_connections`: this address or the server is at its connection cap"),
    Answer(
        503,
        "`store_unavailable`: the store cannot be read or written now (a database failover:"
        " retry after `Retry-After`)",
    ),
)


def _operation_id(method: str, path: str) -> str:
    words = [w for w in re.split(r"[/{}.]", path.removeprefix("/api/v1/")) if w]
    return method.lower() + "".join(w.capitalize() for w in words)


def _body(
    schema: dict[str, Any] | None, description: str, content_type: str = "application/json"
) -> dict[str, Any]:
    if content_type != "application/json":
        text = {content_type: {"schema": {"type": "string"}}}
        return {"description": description, "content": text}
    content = {"application/json": {"schema": schema or {"type": "object"}}}
    return {"description": description, "content": content}


def _merge(answers: Iterable[Answer]) -> dict[int, dict[str, Any]]:
    """One response per status; the descriptions of the answers sharing it joined."""
    merged: dict[int, dict[str, Any]] = {}
    for a in answers:
        schema = a.schema or {"$ref": "#/components/schemas/Error"}
        if a.status in merged:
            merged[a.status]["description"] += "; " + a.description
            body = merged[a.status]["content"]["application/json"]
            if body["schema"] != schema:
                alternatives = body["schema"].get("anyOf", [body["schema"]])
                if schema not in alternatives:
                    body["schema"] = {"anyOf": [*alternatives, schema]}
        else:
            merged[a.status] = {
                "description": a.description,
                "content": {"application/json": {"schema": schema}},
            }
    return dict(sorted(merged.items()))
