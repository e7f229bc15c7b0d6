"""The seam between notices and templates: what the notice runner asks of a renderer.

`gateway.templates` implements `Renderer`; the runner (`gateway.clinical.runner`)
calls it for each due notice with the contact's language. A template that is missing
in every language of the fallback chain raises `TemplateMissing`, and the notice is
skipped with that reason (never sent blank)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol


class TemplateMissing(Exception):
    """No active version of the named template in any language of the fallback chain."""


@dataclass(frozen=True, slots=True)
class Rendered:
    text: str
    template_id: str
    version: int
    language: str
    variant: str | None = None


class Renderer(Protocol):
    def render(
        self,
        conn: sqlite3.Connection,
        name: str,
        language: str | None,
        variables: Mapping[str, str],
        *,
        variant: str | None = None,
    ) -> Rendered:
        """The named template's active version in `language` (or the next language of
        its fallback chain), with `variables` filled in; `variant` picks an A/B variant
        (None: the template's split decides, deterministically from the variables'
        `split_key` if given)."""
        ...
