"""`[templates]`: the site's settings for message templates."""

from __future__ import annotations

import re
import zoneinfo

import msgspec

LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Z]{2})?$")


class TemplatesConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """`default_language`: the site's language in every fallback chain (after the
    patient's language and its base, before English); None takes `consent.language`.
    `time_zone`: the clinic's IANA zone for a notice that names none. `allow_drug_names`:
    templates may name medications (the lint refuses them otherwise). `values`: values
    for variables a notice does not carry (e.g. `clinic`, `portal_url`, `phone`)."""

    default_language: str | None = None
    time_zone: str = "UTC"
    allow_drug_names: bool = False
    values: dict[str, str] = msgspec.field(default_factory=dict)

    def problems(self) -> str | None:
        if self.default_language is not None and not LANGUAGE.match(self.default_language):
            return (
                f'templates.default_language: "{self.default_language}" is not a language;'
                ' write e.g. "en", "es" or "es-MX"'
            )
        try:
            zoneinfo.ZoneInfo(self.time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            return (
                f'templates.time_zone: "{self.time_zone}" is not an IANA zone,'
                ' e.g. "America/New_York"'
            )
        for name, value in self.values.items():
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", name):
                return (
                    f"templates.values.{name}: a variable name is lower case letters, digits and _"
                )
            if not value.strip() or len(value) > 160:
                return f"templates.values.{name}: 1 to 160 characters"
        return None
