"""The audit trail page (admin, auditor) and its "verify chain" action.

On a cluster node the page lists every node's entries (a column names the node) and
the action checks every node's chain and the anchors (`gateway/cluster/audit_reads.py`).
Entries store ids (`user:<id>`, a user id as target) and a JSON detail; the page
shows user names and API token names beside them and the detail as labelled values,
so a reader needs no second lookup. The stored entry is never changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from aiohttp import web

from gateway.admin.panel import actor, panel
from gateway.admin.render import render
from gateway.admin.routing import AUDIT_READERS, PanelRoute
from gateway.usecases.audit_log import AuditEntry, TrailEntry

PAGE = 100
FIXED_ACTORS = {
    "console": "command line",
    "system": "the gateway",
    "anonymous": "not signed in",
}


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One entry as the page shows it: names resolved, detail as (label, value) pairs."""

    entry: AuditEntry
    node: str  # the node whose chain holds it ("" on one node)
    who: str
    target: str
    details: list[tuple[str, str]]


def _value(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _details(detail: str, names: dict[str, str]) -> list[tuple[str, str]]:
    try:
        loaded = json.loads(detail)
    except ValueError:
        return [("detail", detail)]
    if not isinstance(loaded, dict):
        return [("detail", _value(loaded))]
    pairs = []
    for key, value in loaded.items():
        text = _value(value)
        if key.endswith("user_id") and text in names:
            text = f"{names[text]} ({text})"
        pairs.append((key.replace("_", " "), text))
    return pairs


def _who(actor_id: str, users: dict[str, str], tokens: dict[str, str]) -> str:
    kind, _, ident = actor_id.partition(":")
    if kind == "user" and ident in users:
        return users[ident]
    if kind == "token" and ident in tokens:
        return f"API token “{tokens[ident]}”"
    return FIXED_ACTORS.get(actor_id, actor_id)


def _target(e: AuditEntry, users: dict[str, str], tokens: dict[str, str]) -> str:
    if not e.target_kind:
        return ""
    ident = e.target_id or ""
    if e.target_kind == "user" and ident in users:
        return f"user {users[ident]}"
    if e.target_kind == "token" and ident in tokens:
        return f"token “{tokens[ident]}” ({ident})"
    return f"{e.target_kind.replace('_', ' ')} {ident}".strip()


async def _page(request: web.Request, verification: object = None) -> web.Response:
    p = panel(request)
    found = await p.gateway.usecases.audit_log.entries(
        before=request.query.get("before"), limit=PAGE
    )
    users = {u.id: u.username for u in await p.repo.users()}
    tokens = await p.gateway.usecases.tokens.names()
    rows = [_row(t, users, tokens) for t in found]
    return render(
        request,
        "audit.html",
        rows=rows,
        nodes=any(t.node for t in found),  # a cluster node: every node's entries
        verification=verification,
        older=found[-1].cursor if len(found) == PAGE else None,
    )


def _row(t: TrailEntry, users: dict[str, str], tokens: dict[str, str]) -> AuditRow:
    e = t.entry
    return AuditRow(
        e,
        t.node,
        _who(e.actor, users, tokens),
        _target(e, users, tokens),
        _details(e.detail, users),
    )


async def audit_page(request: web.Request) -> web.StreamResponse:
    return await _page(request)


async def verify_chain(request: web.Request) -> web.StreamResponse:
    result = await panel(request).gateway.usecases.audit_log.verify(actor(request))
    return await _page(request, result)


ROUTES: tuple[PanelRoute, ...] = (
    PanelRoute("GET", "/audit", audit_page, AUDIT_READERS, False, "audit"),
    PanelRoute("POST", "/audit/verify", verify_chain, AUDIT_READERS, False, "audit_verify"),
)
