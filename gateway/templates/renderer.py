"""The `Renderer` the notice runner calls: find, choose a variant, fill, check.

Finding: the active version of the name in the first language of the fallback chain
that has one: the patient's tag (`es-MX`), its base (`es`), the site's default
language, then English. Choosing: a named variant if the version has it; otherwise
the weights split deterministically on the notice's `split_key` (or, without one, on
all its values), so rendering the same notice again picks the same variant, and a
share of `w / sum(weights)` of keys lands on each. Filling: the notice's values over
the site's (`[templates.values]`) over the variable's declared default, each formatted
by its declared type in the clinic's zone (the notice's `time_zone`, else
`[templates] time_zone`) and the language found.
A value that does not fit, or a variable without a value, refuses the render with
`RenderRefused` — a `TemplateMissing`, so the runner skips the notice with the reason
(which names the variable, never a value) and nothing half-filled is ever sent.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import zoneinfo
from collections.abc import Callable, Mapping, Sequence

from gateway.clinical.rendering import Rendered, TemplateMissing
from gateway.templates import language as lang
from gateway.templates import store
from gateway.templates.settings import LANGUAGE, TemplatesConfig
from gateway.templates.store import Draft, TemplateSource, Variant, Version
from gateway.templates.variables import RESERVED, BadVariable


class RenderRefused(TemplateMissing):
    """The template exists but these values cannot fill it."""


def normalise(tag: str | None) -> str | None:
    """`es_mx`, `ES-mx` -> `es-MX`; None for anything that is not a language tag."""
    if not tag:
        return None
    base, _, region = tag.strip().replace("_", "-").partition("-")
    out = base.lower() + (f"-{region.upper()}" if region else "")
    return out if LANGUAGE.match(out) else None


def fallback_chain(language: str | None, site_language: str) -> list[str]:
    out: list[str] = []
    for tag in (normalise(language), normalise(site_language), "en"):
        if tag is None:
            continue
        for candidate in (tag, tag.split("-", 1)[0]):
            if candidate not in out:
                out.append(candidate)
    return out


def choose(name: str, variants: Sequence[Variant], key: str) -> Variant:
    """The variant `key` falls on, by weight; the same key always gives the same one."""
    total = sum(v.weight for v in variants)
    digest = hashlib.sha256(f"{name}\x00{key}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") % total
    for v in variants:
        if point < v.weight:
            return v
        point -= v.weight
    return variants[-1]  # not reached: the points are below the total


def split_key(variables: Mapping[str, str]) -> str:
    key = variables.get("split_key")
    return key if key else json.dumps(dict(variables), sort_keys=True)


class TemplateRenderer:
    """Implements `gateway.clinical.rendering.Renderer`."""

    def __init__(self, config: TemplatesConfig, site_language: str, brand: str) -> None:
        self._config = config
        self.zone_name = config.time_zone
        self.site_language = config.default_language or site_language
        self._values = {"clinic": brand, **config.values}

    def render(
        self,
        conn: sqlite3.Connection,
        name: str,
        language: str | None,
        variables: Mapping[str, str],
        *,
        variant: str | None = None,
    ) -> Rendered:
        return self.render_found(
            lambda tag: store.active(conn, name, tag), name, language, variables, variant=variant
        )

    def render_found(
        self,
        find: Callable[[str], Version | None],
        name: str,
        language: str | None,
        variables: Mapping[str, str],
        *,
        variant: str | None = None,
    ) -> Rendered:
        """`render` with the active version of each language from `find` (a cluster's
        campaign pass reads the template's versions once for all its recipients)."""
        chain = fallback_chain(language, self.site_language)
        for tag in chain:
            found = find(tag)
            if found is not None:
                return self.fill(found, variables, variant)
        raise TemplateMissing(f"template {name}: no active version in {', '.join(chain)}")

    async def render_from(
        self,
        source: TemplateSource,
        name: str,
        language: str | None,
        variables: Mapping[str, str],
        *,
        variant: str | None = None,
    ) -> Rendered:
        """`render` outside a transaction, from `source` (the shared templates on a
        cluster): for a caller that is not a writer job."""
        chain = fallback_chain(language, self.site_language)
        for tag in chain:
            found = await source.active(name, tag)
            if found is not None:
                return self.fill(found, variables, variant)
        raise TemplateMissing(f"template {name}: no active version in {', '.join(chain)}")

    def fill(
        self, version: Version, variables: Mapping[str, str], variant: str | None = None
    ) -> Rendered:
        draft = version.draft
        picked = self.pick(draft, variables, variant)
        text = self.text(draft, picked.body, variables)
        shown = picked.name if len(draft.variants) > 1 else None
        return Rendered(text, version.id, version.version, draft.language, shown)

    def pick(
        self, draft: Draft, variables: Mapping[str, str], variant: str | None = None
    ) -> Variant:
        if len(draft.variants) == 1:
            return draft.variants[0]
        named = next((v for v in draft.variants if v.name == variant), None)
        return named or choose(draft.name, draft.variants, split_key(variables))

    def text(self, draft: Draft, body: str, variables: Mapping[str, str]) -> str:
        """`body` filled from `variables` over the site's values; `RenderRefused`."""
        zone_name = variables.get("time_zone") or self._config.time_zone
        try:
            zone = zoneinfo.ZoneInfo(zone_name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise RenderRefused("time_zone: not an IANA time zone") from None
        values = {**self._values, **{k: v for k, v in variables.items() if k not in RESERVED}}
        declared = {v.name: v for v in draft.variables}
        try:
            pieces = lang.parse(body)
        except lang.TemplateSyntaxError as e:
            raise RenderRefused(f"template {draft.name}: {e}") from None
        filled: dict[tuple[str, str | None], str] = {}
        for p in lang.placeholders(pieces):
            var = declared.get(p.name)
            if var is None:
                raise RenderRefused(f"template {draft.name}: {p.name} is not declared")
            value = values.get(p.name, var.default)
            if value is None:
                raise RenderRefused(f"template {draft.name}: no value for {p.name}")
            try:
                filled[(p.name, p.format)] = var.render(value, p.format, draft.language, zone)
            except BadVariable as e:
                raise RenderRefused(f"template {draft.name}: {e}") from None
        return lang.fill(pieces, filled)
