"""What an inbound text asks for: STOP, START, HELP, a free-text revocation (pure).

Theory of operation (reference §4, R-OPT-2). A text is normalised — Unicode NFKC,
case-folded, accents folded, anything that is not a letter or a digit made a space,
spaces collapsed — so `" Stop "`, `"STOP."`, `"stop!"`, full-width STOP, `"Stop 🛑"` and
`"opt-out"`/`"Opt Out"` all read alike. Then, in this order:

1. The WHOLE normalised text equal to a keyword of some language's table decides:
   opt-out-all (STOP ALL) > opt-out > help > opt-in > opt-in-if-asked (YES), the most
   conservative class winning when languages disagree. Only exact keywords act on
   their own; "STOP PLEASE" is not a keyword.
2. A revocation phrase found anywhere, as whole words ("please stop texting me",
   "wrong number", "stop please"), and not right after a negation ("don't stop texting
   me") is a free-text revocation: suppressed, and queued for staff (MSG-4).
3. A text holding a word that starts with a watch word ("stopping by later", "Don't
   stop", "stopp") or a phrase after a negation is ambiguous: staff review only.
4. Anything else is ordinary conversation.

Nothing here is ever an opt-in except an exact opt-in keyword, and YES-like words
only count where the caller knows the patient was just asked (after an opt-out).
The tables are data: built-in English and Spanish, extended or replaced per language
by `[consent.keywords.<lang>]`.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


class Action(enum.StrEnum):
    OPT_OUT_ALL = "opt_out_all"
    OPT_OUT = "opt_out"
    HELP = "help"
    OPT_IN = "opt_in"
    OPT_IN_IF_ASKED = "opt_in_if_asked"  # YES: an opt-in only right after an opt-out
    REVOCATION = "revocation"  # a free-text revocation phrase
    AMBIGUOUS = "ambiguous"  # looks like one, is not sure: staff review
    NONE = "none"


# Exact-keyword classes, most conservative first: the first class a text is in wins.
EXACT_ORDER = (
    Action.OPT_OUT_ALL,
    Action.OPT_OUT,
    Action.HELP,
    Action.OPT_IN,
    Action.OPT_IN_IF_ASKED,
)

_NOT_WORD = re.compile(r"[^\w]|_", re.UNICODE)
_SPACES = re.compile(r"\s+")


def normalise(text: str) -> str:
    """The words of `text`, NFKC, case- and accent-folded, joined by single spaces."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    # Accents go (NFKD, then drop combining marks) so "ARRÊT" and "arret", "sí" and
    # "si" read alike; then every non-word character (punctuation, emoji) is a space.
    bare = "".join(c for c in unicodedata.normalize("NFKD", folded) if not unicodedata.combining(c))
    return _SPACES.sub(" ", _NOT_WORD.sub(" ", bare)).strip()


@dataclass(frozen=True, slots=True)
class LanguageTable:
    """One language's keywords (normalised), revocation phrases and watch words."""

    exact: Mapping[Action, frozenset[str]]
    phrases: tuple[str, ...]
    watch: tuple[str, ...]
    negations: tuple[str, ...]

    @classmethod
    def build(
        cls,
        exact: Mapping[Action, Iterable[str]],
        phrases: Iterable[str] = (),
        watch: Iterable[str] = (),
        negations: Iterable[str] = (),
    ) -> LanguageTable:
        def words(items: Iterable[str]) -> tuple[str, ...]:
            return tuple(dict.fromkeys(w for w in (normalise(i) for i in items) if w))

        return cls(
            {a: frozenset(words(exact.get(a, ()))) for a in EXACT_ORDER},
            words(phrases),
            words(watch),
            words(negations),
        )

    def merged(self, other: LanguageTable) -> LanguageTable:
        """This table with `other`'s entries added."""
        return LanguageTable(
            {a: self.exact[a] | other.exact[a] for a in EXACT_ORDER},
            tuple(dict.fromkeys(self.phrases + other.phrases)),
            tuple(dict.fromkeys(self.watch + other.watch)),
            tuple(dict.fromkeys(self.negations + other.negations)),
        )


ENGLISH = LanguageTable.build(
    {
        Action.OPT_OUT_ALL: ("STOPALL", "STOP ALL", "UNSUBSCRIBE ALL"),
        Action.OPT_OUT: (
            "STOP",
            "END",
            "CANCEL",
            "UNSUBSCRIBE",
            "QUIT",
            "REVOKE",
            "OPTOUT",
            "OPT OUT",
            "OPT-OUT",
            "REMOVE",
        ),
        Action.HELP: ("HELP", "INFO"),
        Action.OPT_IN: ("START", "UNSTOP"),
        Action.OPT_IN_IF_ASKED: ("YES",),
    },
    phrases=(
        "please stop",
        "stop please",
        "stop texting",
        "stop sending",
        "stop messaging",
        "stop contacting",
        "stop text me",
        "quit texting",
        "quit sending",
        "quit messaging",
        "please unsubscribe",
        "unsubscribe please",
        "wrong number",
        "wrong person",
        "remove me",
        "remove my number",
        "delete my number",
        "take me off",
        "take my number off",
        "unsubscribe me",
        "opt me out",
        "do not text",
        "dont text",
        "don't text",
        "do not contact",
        "don't contact",
        "no more texts",
        "no more messages",
        "don't want these",
        "do not want these",
        "don't want any more",
        "don't want your texts",
        "don't want texts",
        "don't want messages",
        "do not wish to receive",
        "don't wish to receive",
        "not interested",
    ),
    watch=("stop", "unsubscri", "optout", "opt out", "revoke", "unsub"),
    negations=("don't", "dont", "do not", "never", "not", "no"),
)

SPANISH = LanguageTable.build(
    {
        Action.OPT_OUT_ALL: ("ALTO TODO", "PARAR TODO", "BAJA TODO", "CANCELAR TODO"),
        Action.OPT_OUT: (
            "ALTO",
            "PARAR",
            "PARE",
            "BAJA",
            "CANCELAR",
            "DETENER",
            "DESUSCRIBIR",
            "FIN",
            "TERMINAR",
        ),
        Action.HELP: ("AYUDA", "INFO", "INFORMACION"),
        Action.OPT_IN: ("COMENZAR", "INICIO", "INICIAR", "REANUDAR"),
        Action.OPT_IN_IF_ASKED: ("SI",),
    },
    phrases=(
        "numero equivocado",
        "numero incorrecto",
        "no me envie",
        "no me envien",
        "no me manden",
        "no me mande",
        "no me escriban",
        "dejen de enviar",
        "dejen de enviarme",
        "dejen de mandar",
        "dejen de mandarme",
        "dejen de escribir",
        "dejen de escribirme",
        "deje de enviar",
        "deje de enviarme",
        "deje de mandarme",
        "quitenme de",
        "quitame de",
        "borren mi numero",
        "borrenme",
        "ya no quiero",
        "no quiero recibir",
        "no quiero mensajes",
        "no quiero mas mensajes",
        "no mas mensajes",
        "por favor paren",
        "por favor pare",
    ),
    watch=("parar", "desuscrib", "darme de baja"),
    negations=("no", "nunca"),
)

DEFAULT_TABLES: dict[str, LanguageTable] = {"en": ENGLISH, "es": SPANISH}


@dataclass(frozen=True, slots=True)
class Match:
    action: Action
    languages: tuple[str, ...]  # the tables that matched, in the matcher's order


NO_MATCH = Match(Action.NONE, ())


class Matcher:
    """Classifies texts against the tables, languages tried in the order given."""

    def __init__(self, tables: Mapping[str, LanguageTable]) -> None:
        self._tables = dict(tables)
        self._exact: dict[str, tuple[Action, tuple[str, ...]]] = {}
        for action in reversed(EXACT_ORDER):  # conservative classes overwrite the rest
            for lang, table in self._tables.items():
                for word in table.exact[action]:
                    have = self._exact.get(word)
                    langs = have[1] if have and have[0] is action else ()
                    self._exact[word] = (action, (*langs, lang))
        self._phrases = [
            (lang, re.compile(rf"(?:^| ){re.escape(p)}(?= |$)"))
            for lang, t in self._tables.items()
            for p in t.phrases
        ]
        self._watch = [
            (lang, re.compile(rf"(?:^| ){re.escape(w)}"))
            for lang, t in self._tables.items()
            for w in t.watch
        ]
        self._negations = {lang: t.negations for lang, t in self._tables.items()}

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(self._tables)

    def classify(self, text: str) -> Match:
        words = normalise(text)
        if not words:
            return NO_MATCH
        exact = self._exact.get(words)
        if exact is not None:
            return Match(exact[0], exact[1])
        negated: list[str] = []
        for lang, pattern in self._phrases:
            for m in pattern.finditer(words):
                before = words[: m.start()].rstrip()
                if self._negated(before, lang):
                    negated.append(lang)
                else:
                    return Match(Action.REVOCATION, (lang,))
        if negated:
            return Match(Action.AMBIGUOUS, (negated[0],))
        for lang, pattern in self._watch:
            if pattern.search(words):
                return Match(Action.AMBIGUOUS, (lang,))
        return NO_MATCH

    def _negated(self, before: str, lang: str) -> bool:
        padded = " " + before
        return any(padded.endswith(" " + n) for n in self._negations[lang])


def tables_with(
    overrides: Mapping[str, tuple[bool, LanguageTable]],
) -> dict[str, LanguageTable]:
    """The built-in tables with `overrides`: language -> (replace, table)."""
    tables = dict(DEFAULT_TABLES)
    for lang, (replace, table) in overrides.items():
        base = tables.get(lang)
        tables[lang] = table if replace or base is None else base.merged(table)
    return tables
