"""The texts the gateway answers keywords with, per language (reference §4, MSG-6/8/9).

Each text is a template with three placeholders: `{program}` (the program's title,
`consent.program_titles`, else `consent.brand`), `{contact}` (`consent.help_contact`)
and `{frequency}` (the language's `frequency`). Nothing else is substituted, so a
template from the config cannot reach into objects the way `str.format` would. The
built-in texts avoid letters outside the GSM 7-bit alphabet (Spanish without á, í, ó,
ú), so each fits one 160-character SMS; `check` proves that for every program at load.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping

from drivers.text import BodyTooLong, split


class Reply(enum.StrEnum):
    OPT_OUT = "opt_out"  # scope per MSG-7; offers STOP ALL
    OPT_OUT_ALL = "opt_out_all"
    OPT_IN = "opt_in"  # MSG-9: program, frequency, rates, HELP and STOP
    HELP = "help"  # MSG-8 / R-OPT-3: program, contact, frequency, rates, STOP
    HELP_OPTED_OUT = "help_opted_out"  # HELP from a number that has opted out


PLACEHOLDERS = frozenset({"program", "contact", "frequency"})
_FIELD = re.compile(r"\{([A-Za-z_]*)\}")

DEFAULT_TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "frequency": "Msg frequency varies",
        Reply.OPT_OUT: "{program}: You're unsubscribed and will get no more of these texts."
        " Reply STOP ALL to stop all texts, START to resubscribe. Help: {contact}",
        Reply.OPT_OUT_ALL: "{program}: You're unsubscribed from all texts and will get no"
        " more messages. Reply START to resubscribe. Help: {contact}",
        Reply.OPT_IN: "{program}: You're resubscribed. {frequency}. Msg & data rates may"
        " apply. Reply HELP for help, STOP to cancel.",
        Reply.HELP: "{program}: Help: {contact}. {frequency}. Msg & data rates may apply."
        " Reply STOP to cancel.",
        Reply.HELP_OPTED_OUT: "{program}: You're unsubscribed. Reply START to resubscribe."
        " Help: {contact}. Msg & data rates may apply.",
    },
    "es": {
        "frequency": "Frecuencia variable",
        Reply.OPT_OUT: "{program}: Suscripcion cancelada, no recibira mas de estos mensajes."
        " ALTO TODO para cancelar todo, COMENZAR para volver. Ayuda: {contact}",
        Reply.OPT_OUT_ALL: "{program}: Suscripcion cancelada, no recibira mas mensajes."
        " Responda COMENZAR para volver. Ayuda: {contact}",
        Reply.OPT_IN: "{program}: Suscripcion reanudada. {frequency}. Pueden aplicar tarifas"
        " de mensajes y datos. AYUDA para ayuda, ALTO para cancelar.",
        Reply.HELP: "{program}: Ayuda: {contact}. {frequency}. Pueden aplicar tarifas de"
        " mensajes y datos. Responda ALTO para cancelar.",
        Reply.HELP_OPTED_OUT: "{program}: Su suscripcion esta cancelada. Responda COMENZAR"
        " para volver. Ayuda: {contact}. Pueden aplicar tarifas de mensajes y datos.",
    },
}


def template_problem(template: str) -> str | None:
    """Why `template` cannot be used, or None."""
    for name in _FIELD.findall(template):
        if name not in PLACEHOLDERS:
            return f"unknown placeholder {{{name}}} (allowed: {', '.join(sorted(PLACEHOLDERS))})"
    if "{" in _FIELD.sub("", template) or "}" in _FIELD.sub("", template):
        return "a brace that is not one of the placeholders"
    if not template.strip():
        return "empty"
    return None


class ReplyBook:
    """Templates per language; `render` fills one in for a program."""

    def __init__(
        self,
        texts: Mapping[str, Mapping[str, str]],
        default_language: str,
        titles: Mapping[str, str],
        brand: str,
        contact: str,
    ) -> None:
        self._texts = {lang: dict(t) for lang, t in texts.items()}
        self.default_language = default_language
        self._titles = dict(titles)
        self._brand = brand
        self._contact = contact

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(self._texts)

    def language_for(self, preferred: Iterable[str | None]) -> str:
        """The first of `preferred` that has texts, else the default language."""
        for lang in preferred:
            # A contact's language may be a tag ("es-MX", "ES"): its language part counts.
            code = None if lang is None else lang.split("-")[0].split("_")[0].lower()
            if code is not None and code in self._texts:
                return code
        return self.default_language

    def title(self, program: str) -> str:
        return self._titles.get(program, self._brand)

    def render(self, reply: Reply, language: str, program: str) -> str:
        texts = self._texts[language]
        values = {
            "program": self.title(program),
            "contact": self._contact,
            "frequency": texts["frequency"],
        }
        return _FIELD.sub(lambda m: values[m[1]], texts[reply])

    def check(self, programs: Iterable[str], max_segments: int) -> str | None:
        """The first text too long for `max_segments` with some program, named by key."""
        for lang in self._texts:
            for reply in Reply:
                for program in (*programs, "default"):
                    text = self.render(reply, lang, program)
                    try:
                        split(text, max_segments=max_segments)
                    except BodyTooLong as e:
                        return (
                            f"consent.replies.{lang}.{reply.value}: with program"
                            f" {program!r} the reply is {e.segments} SMS segments; at most"
                            f" consent.reply_segments ({max_segments})"
                        )
        return None
