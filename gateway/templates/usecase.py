"""Templates as the front ends see them: list, read, save, activate, delete, preview, lint.

The API (`/api/v1/templates`) and the panel's editor call these with a `Caller`.
Editing needs `may_edit_templates` (the `admin` scope or role); reading, preview and
lint need only a signed-in caller. A save is refused with the first lint problem's
rule as its code (`template_<rule>`); otherwise the new version, made active, and its
audit entry commit in one writer transaction. On a cluster the templates are the
shared tables (`gateway/clinical/db.py`): a save or activation on any node is what
every node renders next, and its audit entry follows the commit in the node's trail.
"""

from __future__ import annotations

import re
import sqlite3
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from drivers.clock import Clock
from drivers.text import BodyTooLong, choose_encoding, split
from gateway.clinical.db import ClinicalDb, LocalClinicalDb
from gateway.clinical.notices import NoticeKind
from gateway.consent.purposes import CLIENT_PURPOSES
from gateway.errors import ApiError
from gateway.store.audit_log import AuditTrail, DetailValue
from gateway.store.store import Store
from gateway.templates import defaults, lint, store
from gateway.templates.language import LINK
from gateway.templates.renderer import RenderRefused, TemplateRenderer, normalise
from gateway.templates.store import Draft, TemplateReads, Variant, Version
from gateway.templates.variables import Variable, VarType, declare
from gateway.usecases.caller import Caller

NAME = re.compile(r"^(?!(?:preview|lint)$)[a-z][a-z0-9_.-]{0,63}$")  # those two are actions
VARIANT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
MAX_BODY = 1000
MAX_VARIANTS = 8
MAX_WEIGHT = 1000
_SAMPLES = {
    VarType.PROVIDER: "Mercy Clinic",
    VarType.TEXT: "Main Street",
    VarType.SHORT_CODE: "4821",
    VarType.URL: "https://portal.example.org",
    VarType.PHONE: "555-0100",
    VarType.DRUG: "medicine",
    VarType.NOTE: "note",
}


@dataclass(frozen=True, slots=True)
class DraftRequest:
    """A template as a front end sends it (not yet checked)."""

    language: str
    purpose: str
    variables: Mapping[str, Mapping[str, object]]
    body: str | None = None
    variants: tuple[tuple[str, str, int], ...] | None = None  # (name, body, weight)
    kind: str | None = None
    name: str = "draft"


@dataclass(frozen=True, slots=True)
class PreviewText:
    variant: str | None
    text: str | None  # None when it cannot be filled (see the problems)
    characters: int
    encoding: str | None
    segments: int


@dataclass(frozen=True, slots=True)
class Preview:
    language: str
    texts: tuple[PreviewText, ...]
    problems: tuple[lint.Problem, ...]


_R = TypeVar("_R")


@dataclass(frozen=True, slots=True)
class _Entry:
    """An audit entry of an edit (`template` is its target kind)."""

    action: str
    target: str
    details: dict[str, DetailValue]


def _invalid(field: str, code: str, what: str) -> ApiError:
    return ApiError(422, code, f"{field}: {what}", field=field)


class Templates:
    def __init__(
        self,
        *,
        renderer: TemplateRenderer,
        allow_drug_names: bool,
        store_: Store,
        clock: Clock,
        audit: AuditTrail,
        sample_link: str | None = None,
        db: ClinicalDb | None = None,
    ) -> None:
        """`db`: where the templates live (a cluster's shared tables); the store's own
        by default."""
        # A short URL as `{link:NAME}` becomes one (gateway/links/), for the lint's
        # length and the preview; None while tracked links are off.
        self._sample_link = sample_link
        self.renderer = renderer
        self._allow_drugs = allow_drug_names
        self._db = db or LocalClinicalDb(store_)
        self.source = TemplateReads(self._db)
        self._clock = clock
        self._audit = audit

    async def ensure_defaults(self) -> int:
        """Save the built-in templates a site has never saved or deleted; how many."""
        now = self._clock.time()
        drafts = defaults.builtin()
        return await self._db.run(lambda conn: sum(store.seed(conn, d, now) for d in drafts))

    # -- reading -----------------------------------------------------------------------

    async def heads(self, caller: Caller) -> list[Version]:
        """The active version of every template name and language."""
        return await self.source.heads()

    async def versions(self, caller: Caller, name: str) -> list[Version]:
        """Every version of `name` in every language, newest first per language."""
        found = await self.source.versions(name)
        if not found:
            raise ApiError(404, "not_found", "no template with this name")
        return found

    # -- editing -----------------------------------------------------------------------

    def _require_edit(self, caller: Caller) -> None:
        if not caller.may_edit_templates:
            raise ApiError(403, "forbidden", "editing templates needs the 'admin' scope")

    def draft(self, req: DraftRequest) -> Draft:
        """Check the shape of a request (not the lint); `ApiError` 422 naming the field."""
        if not NAME.match(req.name):
            what = "lower case letters, digits, _ . - (not preview, lint)"
            raise _invalid("name", "invalid_name", what)
        language = normalise(req.language)
        if language is None or language != req.language:
            raise _invalid("language", "invalid_language", 'a tag like "en", "es" or "es-MX"')
        if req.purpose not in {p.value for p in CLIENT_PURPOSES}:
            raise _invalid("purpose", "invalid_purpose", "not a purpose")
        if req.kind is not None and req.kind not in {k.value for k in NoticeKind}:
            raise _invalid("kind", "invalid_kind", "not a notice kind")
        try:
            variables = declare(req.variables)
        except ValueError as e:
            raise _invalid("variables", "invalid_variable", str(e)) from None
        return Draft(req.name, language, req.purpose, variables, _variants(req), req.kind)

    def check(self, draft: Draft) -> list[lint.Problem]:
        bodies = [lint.Body(v.name, v.body) for v in draft.variants]
        return lint.lint(
            bodies,
            draft.variables,
            draft.purpose,
            draft.language,
            allow_drug_names=self._allow_drugs,
            link_width=len(self._sample_link or ""),
        )

    async def save(self, caller: Caller, req: DraftRequest) -> Version:
        """A new version of (name, language), active at once; refused by the lint."""
        self._require_edit(caller)
        draft = self.draft(req)
        problems = self.check(draft)
        if problems:
            first = problems[0]
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            field = "variables" if first.start is None and first.variant is None else "body"
            if draft.variants[0].name is not None and field == "body":
                field = "variants"
            raise ApiError(
                422, f"template_{first.rule}", f"{first.rule}: {first.message}{more}", field=field
            )
        now = self._clock.time()

        def job(conn: sqlite3.Connection) -> Version:
            template_id, version = store.save(conn, draft, caller.actor, now)
            return Version(template_id, draft, version, False, now, caller.actor, True)

        def entry(v: Version) -> _Entry:
            details: dict[str, DetailValue] = {
                "name": draft.name,
                "language": draft.language,
                "version": v.version,
            }
            return _Entry("template_saved", v.id, details)

        return await self._audited(caller, now, job, entry)

    async def activate(self, caller: Caller, name: str, language: str, version: int) -> None:
        self._require_edit(caller)
        now = self._clock.time()

        def job(conn: sqlite3.Connection) -> bool:
            return store.activate(conn, name, language, version, now)

        def entry(done: bool) -> _Entry | None:
            details: dict[str, DetailValue] = {"language": language, "version": version}
            return _Entry("template_activated", name, details) if done else None

        if not await self._audited(caller, now, job, entry):
            raise ApiError(404, "not_found", "no such template version")

    async def delete(self, caller: Caller, name: str, language: str) -> None:
        """No active version of (name, language) any more; its versions are kept."""
        self._require_edit(caller)
        now = self._clock.time()

        def job(conn: sqlite3.Connection) -> bool:
            return store.delete(conn, name, language, now)

        def entry(done: bool) -> _Entry | None:
            return _Entry("template_deleted", name, {"language": language}) if done else None

        if not await self._audited(caller, now, job, entry):
            raise ApiError(404, "not_found", "no active template with this name and language")

    async def _audited(
        self,
        caller: Caller,
        now: float,
        job: Callable[[sqlite3.Connection], _R],
        entry: Callable[[_R], _Entry | None],
    ) -> _R:
        """`job` and its audit entry: in one SQLite transaction, or on a cluster the
        entry in the node's own trail once the shared change committed."""
        if self._db.shared:
            done = await self._db.run(job)
            if (e := entry(done)) is not None:
                await self._audit.record(caller.actor, e.action, "template", e.target, **e.details)
            return done

        def audited(conn: sqlite3.Connection) -> _R:
            done = job(conn)
            if (e := entry(done)) is not None:
                self._audit.append_in(
                    conn, now, caller.actor, e.action, "template", e.target, **e.details
                )
            return done

        return await self._db.run(audited)

    # -- preview and lint --------------------------------------------------------------

    def lint(self, caller: Caller, req: DraftRequest) -> list[lint.Problem]:
        return self.check(self.draft(req))

    def preview(
        self,
        caller: Caller,
        req: DraftRequest,
        values: Mapping[str, str],
        time_zone: str | None = None,
    ) -> Preview:
        """Each variant filled with `values` (samples for the rest), its encoding and
        segment count, and the lint's problems."""
        draft = self.draft(req)
        problems = list(self.check(draft))
        zone = time_zone or self.renderer.zone_name
        filled = {**self._samples(draft.variables, zone), **values}
        if time_zone:
            filled["time_zone"] = time_zone
        texts = []
        for v in draft.variants:
            try:
                text: str | None = self.renderer.text(draft, v.body, filled)
            except RenderRefused as e:
                text = None
                problems.append(lint.Problem("render", str(e), v.name))
            if text is not None and self._sample_link is not None:
                text = LINK.sub(lambda _: self._sample_link or "", text)
            encoding, segments = _segments(text)
            texts.append(PreviewText(v.name, text, len(text or ""), encoding, segments))
        return Preview(draft.language, tuple(texts), tuple(problems))

    def _samples(self, variables: tuple[Variable, ...], zone_name: str) -> dict[str, str]:
        try:
            zone = zoneinfo.ZoneInfo(zone_name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise _invalid("time_zone", "invalid_time_zone", "not an IANA time zone") from None
        soon = datetime.fromtimestamp(self._clock.time(), zone) + timedelta(days=2)
        when = soon.replace(hour=14, minute=30, second=0, microsecond=0)
        out = {}
        for v in variables:
            if v.type in (VarType.DATETIME, VarType.DATE, VarType.TIME):
                out[v.name] = when.isoformat()
            else:
                out[v.name] = _SAMPLES[v.type][: v.limit]
        return out


def _segments(text: str | None) -> tuple[str | None, int]:
    if not text:
        return None, 0
    try:
        plan = split(text)
    except BodyTooLong as e:  # over 255 segments: no SMS at all, but say how many
        return choose_encoding(text).value, e.segments
    return plan.encoding.value, plan.segments


def _variants(req: DraftRequest) -> tuple[Variant, ...]:
    if (req.body is None) == (req.variants is None):
        raise _invalid("body", "invalid_field", "give either body or variants")
    if req.body is not None:
        if not 0 < len(req.body) <= MAX_BODY:
            raise _invalid("body", "invalid_field", f"1 to {MAX_BODY} characters")
        return (Variant(None, req.body),)
    assert req.variants is not None
    if not 2 <= len(req.variants) <= MAX_VARIANTS:
        raise _invalid("variants", "invalid_field", f"2 to {MAX_VARIANTS} variants")
    out, names = [], set()
    for i, (name, body, weight) in enumerate(req.variants):
        where = f"variants[{i}]"
        if not VARIANT_NAME.match(name) or name in names:
            raise _invalid(f"{where}.name", "invalid_field", "unique, letters, digits, _ -")
        if not 0 < len(body) <= MAX_BODY:
            raise _invalid(f"{where}.body", "invalid_field", f"1 to {MAX_BODY} characters")
        if not 1 <= weight <= MAX_WEIGHT:
            raise _invalid(f"{where}.weight", "invalid_field", f"1 to {MAX_WEIGHT}")
        names.add(name)
        out.append(Variant(name, body, weight))
    return tuple(out)
