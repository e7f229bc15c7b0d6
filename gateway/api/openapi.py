"""OpenAPI 3.1 document built from the endpoint table and the msgspec schemas."""

from __future__ import annotations

import re
from collections.abc import Iterable
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
    def query(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def idempotent(self) -> bool: ...


def build_openapi(endpoints: Iterable[_Endpoint]) -> dict[str, Any]:
    endpoints = list(endpoints)
    types = {t for e in endpoints for t in (e.request, e.response) if t is not None}
    ordered = sorted(types, key=lambda t: t.__name__)
    refs, components = msgspec.json.schema_components(
        ordered, ref_template="#/components/schemas/{name}"
    )
    ref_of = dict(zip(ordered, refs, strict=True))
    components["Error"] = ERROR_SCHEMA
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        op: dict[str, Any] = {
            "summary": e.summary,
            "operationId": _operation_id(e.method, e.path),
            "responses": {
                str(e.status): _body(ref_of.get(e.response) if e.response else None, "success")
            },
        }
        params: list[dict[str, Any]] = []
        for name in re.findall(r"{(\w+)}", e.path):
            params.append(
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            )
        for name, description in e.query:
            params.append(
                {
                    "name": name,
                    "in": "query",
                    "required": False,
                    "description": description,
                    "schema": {"type": "string"},
                }
            )
        if e.idempotent:
            params.append(
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "description": "replays return the first response; reuse with a"
                    " different body is 409",
                    "schema": {"type": "string", "maxLength": 255},
                }
            )
        if params:
            op["parameters"] = params
        if e.request is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref_of[e.request]}},
            }
        if e.scope is not None:
            op["security"] = [{"bearer": [e.scope]}]
            op["responses"]["401"] = _error("missing, invalid or revoked token")
            op["responses"]["403"] = _error(f"token lacks the {e.scope!r} scope")
        else:
            op["security"] = []
        if e.request is not None:
            op["responses"]["400"] = _error("malformed JSON")
            op["responses"]["422"] = _error("a field is invalid; `field` names it")
            op["responses"]["409"] = _error("Idempotency-Key reused with another body")
            op["responses"]["503"] = _error("shutting down or store unavailable")
        if "{id}" in e.path:
            op["responses"]["404"] = _error("no such message")
        if "{name}" in e.path:
            op["responses"]["404"] = _error("no such route")
        paths.setdefault(e.path, {})[e.method.lower()] = op
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


def _operation_id(method: str, path: str) -> str:
    words = [w for w in re.split(r"[/{}.]", path.removeprefix("/api/v1/")) if w]
    return method.lower() + "".join(w.capitalize() for w in words)


def _body(schema: dict[str, Any] | None, description: str) -> dict[str, Any]:
    content = {"application/json": {"schema": schema or {"type": "object"}}}
    return {"description": description, "content": content}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
