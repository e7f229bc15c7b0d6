"""`[consent.keywords.<lang>]` and `[consent.replies.<lang>]`: the inbound tables as
configured, checked at load and built into a `Matcher` and a `ReplyBook`."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import msgspec

from gateway.consent.keywords import Action, LanguageTable, Matcher, tables_with
from gateway.consent.replies import DEFAULT_TEXTS, Reply, ReplyBook, template_problem

if TYPE_CHECKING:
    from gateway.consent.settings import ConsentConfig

_LANGUAGE = re.compile(r"^[a-z]{2,3}$")


class KeywordsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One language's keywords. By default they add to the built-in table of that
    language; `replace = true` uses only these. Matching ignores case, accents,
    punctuation and emoji, and compares the whole text (phrases: whole words)."""

    replace: bool = False
    opt_out: tuple[str, ...] = ()
    opt_out_all: tuple[str, ...] = ()
    opt_in: tuple[str, ...] = ()
    opt_in_if_asked: tuple[str, ...] = ()  # YES: an opt-in only right after an opt-out
    help: tuple[str, ...] = ()
    phrases: tuple[str, ...] = ()  # free-text revocations: suppress and queue for staff
    watch: tuple[str, ...] = ()  # word starts that send a text to staff review
    negations: tuple[str, ...] = ()  # words that make a following phrase ambiguous

    def table(self) -> LanguageTable:
        return LanguageTable.build(
            {
                Action.OPT_OUT: self.opt_out,
                Action.OPT_OUT_ALL: self.opt_out_all,
                Action.OPT_IN: self.opt_in,
                Action.OPT_IN_IF_ASKED: self.opt_in_if_asked,
                Action.HELP: self.help,
            },
            self.phrases,
            self.watch,
            self.negations,
        )


class RepliesConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One language's reply texts; a text left out keeps the built-in one."""

    frequency: str | None = None
    opt_out: str | None = None
    opt_out_all: str | None = None
    opt_in: str | None = None
    help: str | None = None
    help_opted_out: str | None = None


def matcher_for(config: ConsentConfig) -> Matcher:
    return Matcher(tables_with({k: (v.replace, v.table()) for k, v in config.keywords.items()}))


def replies_for(config: ConsentConfig) -> ReplyBook:
    texts: dict[str, dict[str, str]] = {k: dict(v) for k, v in DEFAULT_TEXTS.items()}
    for lang, r in config.replies.items():
        given = {k: v for k, v in msgspec.structs.asdict(r).items() if v is not None}
        texts[lang] = {**texts.get(lang, {}), **given}
    return ReplyBook(
        texts, config.language, config.program_titles, config.brand, config.help_contact
    )


def inbound_problems(config: ConsentConfig) -> str | None:
    """The first problem of the inbound keys, naming its key; None if they are fine."""
    for lang, kw in config.keywords.items():
        if not _LANGUAGE.match(lang):
            return f"consent.keywords.{lang}: a language is a 2- or 3-letter code, e.g. en, es"
        table = kw.table()
        if kw.replace and not table.exact[Action.OPT_OUT]:
            return (
                f"consent.keywords.{lang}.opt_out: a replaced table needs at least one"
                " opt-out keyword"
            )
    for lang, r in config.replies.items():
        if not _LANGUAGE.match(lang):
            return f"consent.replies.{lang}: a language is a 2- or 3-letter code, e.g. en, es"
        if lang not in DEFAULT_TEXTS:
            missing = [k for k, v in msgspec.structs.asdict(r).items() if v is None]
            if missing:
                return f"consent.replies.{lang}.{missing[0]}: a new language needs every text"
        for reply in Reply:
            template = getattr(r, reply.value)
            if template is not None and (problem := template_problem(template)):
                return f"consent.replies.{lang}.{reply.value}: {problem}"
    book = replies_for(config)
    if config.language not in book.languages:
        return (
            f"consent.language: no replies in {config.language!r}"
            f" (one of {', '.join(book.languages)})"
        )
    if not 1 <= config.reply_segments <= 10:
        return "consent.reply_segments: expected 1 to 10"
    if not 0 <= config.auto_replies_per_hour <= 100:
        return "consent.auto_replies_per_hour: expected 0 to 100"
    for name, title in config.program_titles.items():
        if not title.strip():
            return f"consent.program_titles.{name}: empty"
    if not config.brand.strip():
        return "consent.brand: empty"
    if not config.help_contact.strip():
        return "consent.help_contact: empty (HELP answers must say where to get help)"
    programs = [p.name for p in config.programs]
    return book.check(programs, config.reply_segments)
