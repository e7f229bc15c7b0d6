"""The lint a template must pass to be saved: what must not go in an SMS.

Every template, whatever its purpose, may not carry a result value (a number with a
unit, a decimal, a comparison such as "< 5", words like "positive" or "negativo"), a
diagnosis, a drug name (unless the site allows them: `[templates] allow_drug_names`),
or a `note` variable (free text from an NTE segment, which nobody has vetted). A
template for a clinical purpose (the FCC's exempt healthcare messages, MSG-3) must
also name the provider through a `provider` variable, carry the opt-out line in its
language ("Reply STOP to opt out", "Responda STOP para no recibir mas"), hold no
marketing, billing or collection words, and fit one SMS when every variable is at its
declared maximum length: 160 characters, or 70 when a letter of its own words or of
its variables' defaults lies outside the GSM 7-bit alphabet (á, í, ó, ú make a text
UCS-2, and the 160-character rule exists so that the text is one message). Each A/B
variant is checked on its own.

Word lists are matched on whole words, lower case with accents folded, so "Cáncer"
and "cancer" are one word. A problem carries its rule (a stable code), the variant,
and the character span it found, never the words themselves.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

from drivers.text import UCS2_SINGLE_UNITS, is_gsm7
from gateway.consent.purposes import Kind, Purpose
from gateway.templates import language as lang
from gateway.templates.dates import base_language
from gateway.templates.variables import FORMATS_OF, MAX_LENGTH, Variable, VarType


class Rule:
    SYNTAX = "syntax"
    UNKNOWN_VARIABLE = "unknown_variable"
    BAD_FORMAT = "bad_format"
    RESULT_VALUE = "result_value"
    DIAGNOSIS = "diagnosis"
    DRUG_NAME = "drug_name"
    FREE_TEXT = "free_text"
    PROVIDER_NAME = "provider_name"
    OPT_OUT = "opt_out"
    TOO_LONG = "too_long"
    MARKETING = "marketing"


@dataclass(frozen=True, slots=True)
class Problem:
    rule: str
    message: str
    variant: str | None = None
    start: int | None = None  # the span in the variant's body, when there is one
    end: int | None = None


@dataclass(frozen=True, slots=True)
class Body:
    name: str | None  # the variant's name; None for a template of one text
    text: str


def _words(*groups: str) -> re.Pattern[str]:
    words = sorted({w for g in groups for w in g.split("|") if w}, key=len, reverse=True)
    return re.compile(r"(?<![\w])(?:" + "|".join(re.escape(w) for w in words) + r")(?![\w])")


_RESULT_WORDS = _words(
    "positive|negative|abnormal|elevated|detected|undetected|not detected|reactive"
    "|nonreactive|non-reactive|out of range|reference range|critical value|high result"
    "|low result|your level|your levels",
    "positivo|positiva|negativo|negativa|anormal|elevado|elevada|detectado|detectada"
    "|no detectado|reactivo|reactiva|fuera de rango|rango de referencia|valor critico",
)
_UNIT = (
    r"(?:mg/dl|mmol/l|meq/l|g/dl|g/l|mg|mcg|ug|µg|μg|ng/ml|pg/ml|iu/l|u/l|miu/ml|mmhg"
    r"|cells/ul|cel/ul|copies/ml|copias/ml|x10\^?\d*|bpm|kg|lbs?|ml|%)"
)
_NUMBER_UNIT = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)?\s*" + _UNIT + r"(?![\w/])")
_DECIMAL = re.compile(r"(?<![\w.$€£:])\d+[.,]\d+(?![\w.,:])")
_COMPARISON = re.compile(r"[<>≤≥]\s*=?\s*\d")
_DIAGNOSES = _words(
    "cancer|tumor|tumour|malignant|malignancy|carcinoma|melanoma|leukemia|leukaemia"
    "|lymphoma|metastasis|hiv|aids|diabetes|diabetic|hepatitis|hpv|chlamydia|gonorrhea"
    "|gonorrhoea|syphilis|herpes|tuberculosis|std|sti|pregnant|pregnancy|miscarriage"
    "|abortion|depression|schizophrenia|bipolar|dementia|alzheimer|alzheimers|psychosis"
    "|overdose|addiction|substance use|stroke|epilepsy|covid|covid-19|ebola|mpox",
    "cancer|tumor|maligno|maligna|carcinoma|melanoma|leucemia|linfoma|metastasis|vih"
    "|sida|diabetes|diabetico|diabetica|hepatitis|vph|clamidia|gonorrea|sifilis"
    "|tuberculosis|ets|embarazo|embarazada|aborto|depresion|esquizofrenia|bipolar"
    "|demencia|psicosis|sobredosis|adiccion|epilepsia",
)
_DRUGS = _words(
    "insulin|metformin|warfarin|coumadin|heparin|eliquis|apixaban|xarelto|oxycodone"
    "|hydrocodone|methadone|buprenorphine|suboxone|naloxone|narcan|fentanyl|morphine"
    "|tramadol|codeine|lisinopril|atorvastatin|simvastatin|amoxicillin|azithromycin"
    "|prednisone|sertraline|fluoxetine|zoloft|prozac|adderall|ritalin|xanax|alprazolam"
    "|lorazepam|clonazepam|diazepam|truvada|descovy|antiretroviral|levothyroxine"
    "|gabapentin|lithium|clozapine|olanzapine|quetiapine|chemotherapy|ozempic|semaglutide"
    "|methotrexate|ibuprofen|acetaminophen|paracetamol",
    "insulina|metformina|warfarina|heparina|oxicodona|metadona|buprenorfina|naloxona"
    "|fentanilo|morfina|codeina|amoxicilina|azitromicina|prednisona|sertralina|fluoxetina"
    "|alprazolam|lorazepam|clonazepam|diazepam|antirretroviral|levotiroxina|gabapentina"
    "|litio|quimioterapia|paracetamol",
)
_MARKETING = _words(
    "sale|discount|discounts|offer|offers|promo|promotion|coupon|deal|deals|buy"
    "|free trial|limited time|special price|save now|% off|bill|invoice|balance due"
    "|payment|pay now|past due|overdue|collections|collection agency",
    "oferta|ofertas|descuento|descuentos|promocion|cupon|compre|gratis|factura|saldo"
    "|pago|pague|cobro|cobranza|vencido",
)
_OPT_OUT = {
    "en": (
        re.compile(r"(?<![\w])reply(?![\w])"),
        re.compile(r"(?<![\w])stop\s+to\s+(?:opt[ -]?out|unsubscribe|stop|end)(?![\w])"),
    ),
    "es": (
        re.compile(r"(?<![\w])(?:responda|responde|envie|envia)(?![\w])"),
        re.compile(
            r"(?<![\w])(?:stop|baja)\s+para\s+(?:no\s+recibir|darse\s+de\s+baja"
            r"|dejar\s+de\s+recibir)(?![\w])"
        ),
    ),
}
_OPT_OUT_ANY = (re.compile(r"(?<![\w])stop(?![\w])"),)
_OPT_OUT_LINE = {"en": "Reply STOP to opt out", "es": "Responda STOP para no recibir mas"}


def fold(text: str) -> str:
    """Lower case, accents removed, one character for one: spans stay valid."""
    return "".join(
        (unicodedata.normalize("NFKD", c)[:1] if c.isalpha() else c).lower()[:1] or c for c in text
    )


def exempt(purpose: str) -> bool:
    """A clinical purpose: the FCC's exempt healthcare messages (MSG-3 applies)."""
    try:
        return Purpose(purpose).kind is Kind.CLINICAL
    except ValueError:
        return False


def opt_out_line(language: str) -> str:
    return _OPT_OUT_LINE.get(base_language(language), "STOP")


def lint(
    bodies: list[Body],
    variables: tuple[Variable, ...],
    purpose: str,
    language: str,
    *,
    allow_drug_names: bool = False,
    link_width: int = 0,
) -> list[Problem]:
    """Every problem of every variant; empty when the template may be saved.
    `link_width`: the length of a short URL a `{link:NAME}` becomes (gateway/links/)."""
    problems: list[Problem] = []
    declared = {v.name: v for v in variables}
    for v in variables:
        if v.type is VarType.NOTE:
            problems.append(
                Problem(
                    Rule.FREE_TEXT,
                    f"{v.name}: free text from an NTE segment may not go in an SMS",
                )
            )
        if v.type is VarType.DRUG and not allow_drug_names:
            problems.append(
                Problem(
                    Rule.DRUG_NAME,
                    f"{v.name}: drug names are off at this site (templates.allow_drug_names)",
                )
            )
        if v.default is not None:
            for rule, what, _ in _word_problems(fold(v.default), allow_drug_names):
                problems.append(Problem(rule, f"{v.name}: its default has {what}"))
    for body in bodies:
        problems.extend(_lint_body(body, declared, purpose, language, allow_drug_names, link_width))
    return problems


def _word_problems(words: str, allow_drug_names: bool) -> Iterator[tuple[str, str, re.Match[str]]]:
    for pattern, rule, what in (
        (_NUMBER_UNIT, Rule.RESULT_VALUE, "a number with a unit (a result value)"),
        (_DECIMAL, Rule.RESULT_VALUE, "a decimal number (a result value)"),
        (_COMPARISON, Rule.RESULT_VALUE, "a comparison with a number (a result)"),
        (_RESULT_WORDS, Rule.RESULT_VALUE, "a word that states a result"),
        (_DIAGNOSES, Rule.DIAGNOSIS, "a word that names a diagnosis"),
    ):
        for m in pattern.finditer(words):
            yield rule, what, m
    if not allow_drug_names:
        for m in _DRUGS.finditer(words):
            yield (
                Rule.DRUG_NAME,
                "a drug name; this site does not allow them (templates.allow_drug_names)",
                m,
            )


def _lint_body(
    body: Body,
    declared: dict[str, Variable],
    purpose: str,
    language: str,
    allow_drug_names: bool,
    link_width: int = 0,
) -> Iterator[Problem]:
    def problem(rule: str, message: str, span: tuple[int, int] | None = None) -> Problem:
        where = f"variant {body.name}: " if body.name else ""
        start, end = span if span else (None, None)
        return Problem(rule, where + message, body.name, start, end)

    try:
        pieces = lang.parse(body.text)
    except lang.TemplateSyntaxError as e:
        yield problem(Rule.SYNTAX, str(e), (e.position, e.position + 1))
        return
    used = lang.placeholders(pieces)
    for p in used:
        v = declared.get(p.name)
        if v is None:
            yield problem(Rule.UNKNOWN_VARIABLE, f"{p.name}: not declared", (p.start, p.end))
        elif p.format is not None and p.format not in FORMATS_OF.get(v.type, ()):
            allowed = ", ".join(FORMATS_OF.get(v.type, ())) or "none"
            yield problem(
                Rule.BAD_FORMAT,
                f"{p.name}: a {v.type.value} takes the formats: {allowed}",
                (p.start, p.end),
            )
    masked = list(body.text)
    for p in used:
        masked[p.start : p.end] = " " * (p.end - p.start)
    words = fold("".join(masked))
    for rule, what, m in _word_problems(words, allow_drug_names):
        yield problem(rule, f"{what} (characters {m.start() + 1}-{m.end()})", m.span())
    if not exempt(purpose):
        return
    for m in _MARKETING.finditer(words):
        yield problem(
            Rule.MARKETING,
            f"marketing, billing or collection words (characters {m.start() + 1}-{m.end()})"
            " are not allowed in a clinical text (MSG-3)",
            m.span(),
        )
    valid = [p for p in used if p.name in declared]
    if not any(declared[p.name].type is VarType.PROVIDER for p in valid):
        yield problem(
            Rule.PROVIDER_NAME,
            "a clinical text must name the provider through a provider variable, e.g."
            " {clinic} (MSG-3)",
        )
    checks = _OPT_OUT.get(base_language(language), _OPT_OUT_ANY)
    if not all(c.search(words) for c in checks):
        yield problem(
            Rule.OPT_OUT,
            f'a clinical text must carry the opt-out line, e.g. "{opt_out_line(language)}" (MSG-3)',
        )
    widest = sum(len(p) if isinstance(p, str) else 0 for p in pieces) + sum(
        declared[p.name].widest(p.format, language) for p in valid
    )
    if link_width:  # each `{link:NAME}` goes out as a short URL of this length
        widest += sum(link_width - len(m.group(0)) for m in lang.LINK.finditer(body.text))
    if widest > MAX_LENGTH:
        yield problem(
            Rule.TOO_LONG,
            f"{widest} characters with every variable at its maximum length; a clinical"
            f" text may have {MAX_LENGTH} (MSG-3)",
        )
    elif widest > UCS2_SINGLE_UNITS and not is_gsm7(_fixed_text(pieces, valid, declared)):
        yield problem(
            Rule.TOO_LONG,
            f"{widest} characters with every variable at its maximum length, and a letter"
            " outside the GSM 7-bit alphabet (such as á, í, ó, ú) makes it a UCS-2 text, of"
            f" which one SMS holds {UCS2_SINGLE_UNITS}: write it without such letters or"
            " shorter (MSG-3: one concise message)",
        )


def _fixed_text(
    pieces: tuple[lang.Piece, ...], used: list[lang.Placeholder], declared: dict[str, Variable]
) -> str:
    """What every rendering of the text contains: its own words and the defaults of
    its variables (which decide its encoding whatever the values)."""
    words = "".join(p for p in pieces if isinstance(p, str))
    return words + "".join(declared[p.name].default or "" for p in used)
