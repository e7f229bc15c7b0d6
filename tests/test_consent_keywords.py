"""The keyword matcher (R-OPT-2, reference §4) and the reply texts, without I/O.

The same matrix runs through the real gateway and the SMSC simulator in
test_consent_inbound.py; here every row is checked against the pure matcher, with
hypothesis feeding it any text: it never raises, and nothing but an exact opt-in
keyword is ever an opt-in.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from drivers.text import Encoding, split
from gateway.config import ConfigError, from_mapping
from gateway.consent.answers import reply_id
from gateway.consent.inbound_config import (
    KeywordsConfig,
    RepliesConfig,
    matcher_for,
    replies_for,
)
from gateway.consent.keywords import DEFAULT_TABLES, Action, Matcher, normalise
from gateway.consent.replies import DEFAULT_TEXTS, Reply
from gateway.models import new_message_id

MATCHER = matcher_for(from_mapping({}).consent)

# R-OPT-2's inputs and more: (text, action, language of the table that matched).
MATRIX = [
    ("stop", Action.OPT_OUT, "en"),
    (" Stop ", Action.OPT_OUT, "en"),
    ("STOP.", Action.OPT_OUT, "en"),
    ("stop!", Action.OPT_OUT, "en"),
    ("\uff33\uff34\uff2f\uff30", Action.OPT_OUT, "en"),  # full-width STOP
    ("Stop \U0001f6d1", Action.OPT_OUT, "en"),
    ("STOP\u200b", Action.OPT_OUT, "en"),  # a zero-width space after it
    ("UNSUBSCRIBE", Action.OPT_OUT, "en"),
    ("opt-out", Action.OPT_OUT, "en"),
    ("Opt Out", Action.OPT_OUT, "en"),
    ("optout", Action.OPT_OUT, "en"),
    ("revoke", Action.OPT_OUT, "en"),
    ("End", Action.OPT_OUT, "en"),
    ("cancel", Action.OPT_OUT, "en"),
    ("quit", Action.OPT_OUT, "en"),
    ("Remove", Action.OPT_OUT, "en"),
    ("STOP ALL", Action.OPT_OUT_ALL, "en"),
    ("Stop all", Action.OPT_OUT_ALL, "en"),
    ("stopall", Action.OPT_OUT_ALL, "en"),
    ("please stop texting me", Action.REVOCATION, "en"),
    ("STOP PLEASE", Action.REVOCATION, "en"),
    ("Wrong number!", Action.REVOCATION, "en"),
    ("Please remove me from your list", Action.REVOCATION, "en"),
    ("stopp", Action.AMBIGUOUS, "en"),
    ("stopping by later", Action.AMBIGUOUS, "en"),
    ("Don't stop", Action.AMBIGUOUS, "en"),
    ("don't stop texting me, I like the reminders", Action.AMBIGUOUS, "en"),
    ("START", Action.OPT_IN, "en"),
    ("unstop", Action.OPT_IN, "en"),
    ("Yes", Action.OPT_IN_IF_ASKED, "en"),
    ("yes I'll be there", Action.NONE, ""),
    ("HELP", Action.HELP, "en"),
    ("info?", Action.HELP, "en"),
    ("See you Tuesday", Action.NONE, ""),
    ("\U0001f6d1", Action.NONE, ""),
    ("", Action.NONE, ""),
    ("¡ALTO!", Action.OPT_OUT, "es"),
    ("Baja", Action.OPT_OUT, "es"),
    ("parar todo", Action.OPT_OUT_ALL, "es"),
    ("Ayuda", Action.HELP, "es"),
    ("Comenzar", Action.OPT_IN, "es"),
    ("Sí", Action.OPT_IN_IF_ASKED, "es"),
    ("Número equivocado", Action.REVOCATION, "es"),
    ("por favor no me envien mas mensajes", Action.REVOCATION, "es"),
]


# Variants written the way people text, none of them in the tables as written.
HELD_OUT = [
    ("Stop!!!", Action.OPT_OUT),
    ("STOP 🙏🏽", Action.OPT_OUT),
    ("  unsubscribe.  ", Action.OPT_OUT),
    ("Opt-Out!", Action.OPT_OUT),
    ("Quit texting me", Action.REVOCATION),
    ("Please unsubscribe", Action.REVOCATION),
    ("Please don't text me anymore", Action.REVOCATION),
    ("I don't want texts from you", Action.REVOCATION),
    ("Remove my number please", Action.REVOCATION),
    ("who is this? wrong number", Action.REVOCATION),
    ("Dejen de mandarme mensajes", Action.REVOCATION),
    ("Ya no quiero mas mensajes", Action.REVOCATION),
    ("I'll stop by the front desk", Action.AMBIGUOUS),
    ("I don't want to reschedule", Action.NONE),
    ("Yes, see you then", Action.NONE),
    ("Starting my new meds today", Action.NONE),
    ("Helpful, thanks", Action.NONE),
]


@pytest.mark.parametrize(("text", "action"), HELD_OUT, ids=repr)
def test_held_out_variants_are_read_as_a_person_would(text: str, action: Action) -> None:
    assert MATCHER.classify(text).action is action


@pytest.mark.parametrize(("text", "action", "language"), MATRIX, ids=repr)
def test_the_keyword_and_look_alike_matrix(text: str, action: Action, language: str) -> None:
    match = MATCHER.classify(text)
    assert match.action is action
    assert match.languages[:1] == ((language,) if language else ())


def test_info_matches_both_languages_and_english_comes_first() -> None:
    assert MATCHER.classify("INFO").languages == ("en", "es")


def test_the_most_conservative_class_wins_when_languages_disagree() -> None:
    # FIN is an opt-out in Spanish; a site that also lists it as a help word still
    # gets an opt-out: an opt-out beats help, help beats an opt-in.
    assert Matcher(DEFAULT_TABLES).classify("fin").action is Action.OPT_OUT
    config = from_mapping({"consent": {"keywords": {"es": {"help": ["fin"]}}}})
    assert matcher_for(config.consent).classify("FIN").action is Action.OPT_OUT


def test_config_extends_a_table_or_replaces_it_and_adds_languages() -> None:
    config = from_mapping(
        {
            "consent": {
                "keywords": {
                    "en": {"opt_out": ["Leave me be"], "phrases": ["go away"]},
                    "fr": {"opt_out": ["ARRÊT"], "help": ["AIDE"], "opt_in": ["DEBUT"]},
                    "es": {"replace": True, "opt_out": ["BASTA"]},
                },
                "replies": {
                    "fr": {
                        "frequency": "Frequence variable",
                        "opt_out": "{program}: desinscrit. Aide: {contact}",
                        "opt_out_all": "{program}: desinscrit de tout. Aide: {contact}",
                        "opt_in": "{program}: reinscrit. {frequency}. STOP pour arreter.",
                        "help": "{program}: aide {contact}. {frequency}. STOP pour arreter.",
                        "help_opted_out": "{program}: desinscrit. Aide: {contact}",
                    }
                },
            }
        }
    )
    m = matcher_for(config.consent)
    assert m.classify("leave me be!").action is Action.OPT_OUT
    assert m.classify("STOP").action is Action.OPT_OUT  # the English defaults stay
    assert m.classify("oh just go away").action is Action.REVOCATION
    assert m.classify("arret").languages == ("fr",)
    assert m.classify("basta").action is Action.OPT_OUT
    assert m.classify("ALTO").action is Action.NONE  # Spanish replaced
    book = replies_for(config.consent)
    assert book.render(Reply.HELP, "fr", "default").startswith("Hospital: aide")


@pytest.mark.parametrize(
    ("consent", "message"),
    [
        ({"replies": {"en": {"help": "{program} {phone}"}}}, r"^consent\.replies\.en\.help: "),
        ({"replies": {"en": {"help": "{program.__class__}"}}}, r"^consent\.replies\.en\.help: "),
        ({"replies": {"en": {"opt_in": "x" * 161}}}, r"^consent\.replies\.en\.opt_in: .*160|SMS"),
        ({"replies": {"fr": {"help": "aide"}}}, r"^consent\.replies\.fr\.frequency: "),
        ({"keywords": {"English": {"opt_out": ["x"]}}}, r"^consent\.keywords\.English: "),
        ({"keywords": {"es": {"replace": True}}}, r"^consent\.keywords\.es\.opt_out: "),
        ({"language": "de"}, r"^consent\.language: "),
        ({"help_contact": " "}, r"^consent\.help_contact: "),
        ({"auto_replies_per_hour": -1}, r"^consent\.auto_replies_per_hour: "),
        ({"brand": "B" * 150}, r"^consent\.replies\.en\.opt_out: "),
        ({"program_titles": {"x": "T" * 140}, "programs": [{"name": "x"}]}, r"program 'x'"),
    ],
)
def test_bad_inbound_settings_stop_the_load_naming_the_key(
    consent: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        from_mapping({"consent": consent})


def test_every_built_in_reply_fits_one_gsm7_sms_and_says_what_it_must() -> None:
    book = replies_for(from_mapping({"consent": {"help_contact": "555-0100"}}).consent)
    for lang in ("en", "es"):
        for reply in Reply:
            plan = split(book.render(reply, lang, "default"))
            assert (plan.encoding, plan.segments) == (Encoding.GSM7, 1), (lang, reply)
    help_text = book.render(Reply.HELP, "en", "default")
    for needed in ("Hospital", "555-0100", "Msg frequency varies", "Msg & data rates may apply"):
        assert needed in help_text
    assert "STOP" in help_text
    opt_in = book.render(Reply.OPT_IN, "en", "default")
    assert all(w in opt_in for w in ("Msg & data rates may apply", "HELP", "STOP", "frequency"))
    assert "STOP ALL" in book.render(Reply.OPT_OUT, "en", "default")  # MSG-7
    assert "START" in book.render(Reply.OPT_OUT_ALL, "en", "default")


def test_a_reply_id_is_fixed_by_its_inbound_and_never_a_generated_id() -> None:
    ids = [new_message_id() for _ in range(2000)]
    replies = [reply_id(i) for i in ids]
    assert replies == [reply_id(i) for i in ids]  # deterministic
    assert not set(replies) & set(ids)
    assert len(set(replies)) == len(ids)
    assert all(len(r) == 26 and r[:9] == i[:9] for r, i in zip(replies, ids, strict=True))
    for bad in ("not-an-id", ids[0][:-1], "Z" + ids[0][1:]):
        with pytest.raises(ValueError, match="not a message id"):
            reply_id(bad)


# -- properties -------------------------------------------------------------------------

OPT_IN_WORDS = {normalise(w) for t in DEFAULT_TABLES.values() for w in t.exact[Action.OPT_IN]}
IF_ASKED = {normalise(w) for t in DEFAULT_TABLES.values() for w in t.exact[Action.OPT_IN_IF_ASKED]}


@settings(max_examples=400, deadline=None)
@given(st.text())
@example("\udcff")  # a lone surrogate
@example("ǅ\u0345ﬀ\u2126")  # case folding and NFKC that change lengths
def test_the_matcher_never_raises_and_never_opts_in_by_accident(text: str) -> None:
    match = MATCHER.classify(text)
    words = normalise(text)
    if match.action is Action.OPT_IN:
        assert words in OPT_IN_WORDS
    if match.action is Action.OPT_IN_IF_ASKED:
        assert words in IF_ASKED


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(OPT_IN_WORDS | IF_ASKED)),
    st.text(alphabet=st.characters(categories=("L", "N")), min_size=1),
    st.booleans(),
)
def test_an_opt_in_word_inside_other_words_is_no_opt_in(
    word: str, other: str, before: bool
) -> None:
    text = f"{other} {word}" if before else f"{word} {other}"
    if normalise(text) in OPT_IN_WORDS | IF_ASKED:
        return  # the other words vanished in normalising (e.g. only combining marks)
    assert MATCHER.classify(text).action not in (Action.OPT_IN, Action.OPT_IN_IF_ASKED)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["STOP", "stop", "Unsubscribe", "STOP ALL", "opt out", "HELP", "START"]),
    st.text(alphabet=" \t.!?,;:¡¿\"'()\U0001f6d1\u2764\ufe0f", max_size=4),
    st.text(alphabet=" \t.!?,;:¡¿\"'()\U0001f6d1\u2764\ufe0f", max_size=4),
)
def test_keywords_survive_any_surrounding_punctuation_spacing_and_emoji(
    keyword: str, lead: str, trail: str
) -> None:
    assert MATCHER.classify(lead + keyword + trail) == MATCHER.classify(keyword)


EXAMPLE = Path(__file__).parent.parent / "config" / "smsgw.example.toml"


def test_the_example_documents_every_inbound_key_and_the_built_in_replies() -> None:
    text = EXAMPLE.read_text()
    mine = ("keywords", "replies", "language", "brand", "program_titles", "help_contact")
    mine += ("reply_segments", "auto_replies_per_hour", "answer_help_opted_out")
    for name in (*mine, *KeywordsConfig.__struct_fields__, *RepliesConfig.__struct_fields__):
        assert re.search(rf"^# (\[consent\.)?{name}( =|\.)", text, re.M), name
    block = text.split("# [consent.replies.en]", 1)[1].split("\n\n", 1)[0]
    lines = [ln.removeprefix("# ") for ln in block.splitlines()[2:]]
    documented = tomllib.loads("\n".join(lines))
    assert documented == {
        k.value if isinstance(k, Reply) else k: v for k, v in DEFAULT_TEXTS["en"].items()
    }
