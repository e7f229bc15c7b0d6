"""Template versions in SQLite: immutable rows, and one head per name and language.

A save inserts the next version (computed in the same statement, so two saves at
once get two numbers) and points the head at it; activating an older version moves
the head; a delete empties the head but keeps every version (and stops the built-in
defaults from coming back at the next start). Functions take the writer's
connection, so a save commits together with its audit entry; the renderer reads
through the notice runner's connection. On a cluster the same functions run on the
shared PostgreSQL (`gateway/clinical/db.py`), so every node renders from one set.

`TemplateSource` is the read side for a caller outside a transaction (the API, the
panel, a campaign's render: `TemplateRenderer.render_from`): `TemplateReads` over
either backend.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from gateway.templates.variables import Variable, as_json, declare

if TYPE_CHECKING:
    from gateway.clinical.db import ClinicalDb


@dataclass(frozen=True, slots=True)
class Variant:
    name: str | None  # None: a template of one text
    body: str
    weight: int = 1


@dataclass(frozen=True, slots=True)
class Draft:
    """What a save or a preview is given."""

    name: str
    language: str
    purpose: str
    variables: tuple[Variable, ...]
    variants: tuple[Variant, ...]
    kind: str | None = None


@dataclass(frozen=True, slots=True)
class Version:
    id: str
    draft: Draft
    version: int
    builtin: bool
    created_at: float
    created_by: str
    active: bool


COLUMNS = (
    "t.id, t.name, t.language, t.version, t.purpose, t.kind, t.variables, t.variants,"
    " t.builtin, t.created_at, t.created_by, CASE WHEN h.active = t.version THEN 1 ELSE 0 END"
)
FROM = " FROM templates t LEFT JOIN template_heads h ON h.name = t.name AND h.language = t.language"
ACTIVE_SQL = f"SELECT {COLUMNS}{FROM} WHERE t.name = ? AND t.language = ? AND h.active = t.version"
OF_NAME_SQL = f"SELECT {COLUMNS}{FROM} WHERE t.name = ? ORDER BY t.language, t.version DESC"
HEADS_SQL = f"SELECT {COLUMNS}{FROM} WHERE h.active = t.version ORDER BY t.name, t.language"


def version_of(r: Sequence[Any]) -> Version:
    variants = tuple(Variant(v["name"], v["body"], v["weight"]) for v in json.loads(r[7]))
    draft = Draft(r[1], r[2], r[4], declare(json.loads(r[6])), variants, r[5])
    return Version(r[0], draft, r[3], bool(r[8]), r[9], r[10], bool(r[11]))


def save(
    conn: sqlite3.Connection, draft: Draft, actor: str, now: float, *, builtin: bool = False
) -> tuple[str, int]:
    """Insert the next version of (name, language) and make it the active one."""
    template_id = "tpl_" + secrets.token_hex(8)
    variants = [{"name": v.name, "body": v.body, "weight": v.weight} for v in draft.variants]
    (version,) = conn.execute(
        "INSERT INTO templates (id, name, language, version, purpose, kind, variables,"
        " variants, builtin, created_at, created_by)"
        " SELECT ?, ?, ?, coalesce(max(version), 0) + 1, ?, ?, ?, ?, ?, ?, ?"
        " FROM templates WHERE name = ? AND language = ? RETURNING version",
        (
            template_id,
            draft.name,
            draft.language,
            draft.purpose,
            draft.kind,
            json.dumps(as_json(draft.variables), sort_keys=True),
            json.dumps(variants),
            int(builtin),
            now,
            actor,
            draft.name,
            draft.language,
        ),
    ).fetchone()
    conn.execute(
        "INSERT INTO template_heads (name, language, active, updated_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (name, language) DO UPDATE SET active = excluded.active,"
        " updated_at = excluded.updated_at",
        (draft.name, draft.language, version, now),
    )
    return template_id, int(version)


def seed(conn: sqlite3.Connection, draft: Draft, now: float) -> bool:
    """Save a built-in default unless (name, language) was ever saved or deleted."""
    known = conn.execute(
        "SELECT 1 FROM template_heads WHERE name = ? AND language = ?",
        (draft.name, draft.language),
    ).fetchone()
    if known is not None:
        return False
    save(conn, draft, "system:templates", now, builtin=True)
    return True


def activate(conn: sqlite3.Connection, name: str, language: str, version: int, now: float) -> bool:
    """Point the head at an existing version; False if there is no such version."""
    r = conn.execute(
        "INSERT INTO template_heads (name, language, active, updated_at)"
        " SELECT name, language, version, ? FROM templates"
        " WHERE name = ? AND language = ? AND version = ?"
        " ON CONFLICT (name, language) DO UPDATE SET active = excluded.active,"
        " updated_at = excluded.updated_at RETURNING active",
        (now, name, language, version),
    ).fetchone()
    return r is not None


def delete(conn: sqlite3.Connection, name: str, language: str, now: float) -> bool:
    """No active version any more (the versions stay); False if there was none."""
    r = conn.execute(
        "UPDATE template_heads SET active = NULL, updated_at = ?"
        " WHERE name = ? AND language = ? AND active IS NOT NULL RETURNING name",
        (now, name, language),
    ).fetchone()
    return r is not None


def active(conn: sqlite3.Connection, name: str, language: str) -> Version | None:
    r = conn.execute(ACTIVE_SQL, (name, language)).fetchone()
    return None if r is None else version_of(r)


class TemplateSource(Protocol):
    """The templates every node renders from, read outside a transaction."""

    async def active(self, name: str, language: str) -> Version | None:
        """The active version of (name, language), or None."""
        ...

    async def heads(self) -> list[Version]:
        """The active version of every name and language."""
        ...

    async def versions(self, name: str) -> list[Version]:
        """Every version of `name`, by language, newest first."""
        ...


class TemplateReads:
    """`TemplateSource` over the clinical tables' backend (SQLite or the cluster's)."""

    def __init__(self, db: ClinicalDb) -> None:
        self._db = db

    async def active(self, name: str, language: str) -> Version | None:
        r = await self._db.one(ACTIVE_SQL, (name, language))
        return None if r is None else version_of(r)

    async def heads(self) -> list[Version]:
        return [version_of(r) for r in await self._db.all(HEADS_SQL)]

    async def versions(self, name: str) -> list[Version]:
        return [version_of(r) for r in await self._db.all(OF_NAME_SQL, (name,))]
