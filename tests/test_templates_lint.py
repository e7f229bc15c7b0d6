"""Issue 13 point 1: the lint a template must pass before it is saved, one rule at a
time, each with texts it refuses and texts it lets through (MSG-3 for clinical ones)."""

from __future__ import annotations

import pytest

from gateway.templates import defaults
from gateway.templates.lint import Body, Problem, lint
from gateway.templates.variables import Variable, VarType, declare

CLINIC = Variable("clinic", VarType.PROVIDER, 24)
START = Variable("start", VarType.DATETIME)
VARS = (CLINIC, START)
OK_TAIL = " Reply STOP to opt out"


def rules(
    text: str,
    purpose: str = "informational",
    language: str = "en",
    variables: tuple[Variable, ...] = VARS,
    **kw: bool,
) -> set[str]:
    return {p.rule for p in lint([Body(None, text)], variables, purpose, language, **kw)}


@pytest.mark.parametrize(
    "text",
    [
        "{clinic}: your potassium was 5.8 today",
        "{clinic}: glucose 180 mg/dL, call us",
        "{clinic}: your HbA1c is 7%",
        "{clinic}: result < 5, nothing to worry about",
        "{clinic}: your test came back positive",
        "{clinic}: su prueba salió NEGATIVA",
        "{clinic}: values 3-5 mmol/L",
        "{clinic}: a result out of range",
    ],
)
def test_result_values_are_refused(text: str) -> None:
    assert "result_value" in rules(text)


@pytest.mark.parametrize(
    "text",
    [
        "{clinic}: your appointment is {start}, room 12",
        "{clinic}: results are available in the portal",
        "{clinic}: call 555-0100 between 9 and 5",
        "{clinic}: come at 9:30 to the 2nd floor",
    ],
)
def test_texts_without_values_pass_the_result_rule(text: str) -> None:
    assert "result_value" not in rules(text)


@pytest.mark.parametrize(
    "text",
    [
        "{clinic}: your cancer screening is {start}",
        "{clinic}: HIV clinic visit {start}",
        "{clinic}: diabetes education {start}",
        "{clinic}: control de Cáncer el {start}",
        "{clinic}: prenatal visit for your pregnancy",
    ],
)
def test_diagnoses_are_refused(text: str) -> None:
    assert "diagnosis" in rules(text)


def test_a_diagnosis_inside_a_longer_word_is_not_one() -> None:
    # Whole words only: "Cancerberos Street" and "stdout" are not diagnoses.
    assert "diagnosis" not in rules("{clinic}: meet us at Cancerberos Street, desk stdout")


def test_drug_names_are_refused_unless_the_site_allows_them() -> None:
    text = "{clinic}: your insulin refill is ready"
    assert "drug_name" in rules(text)
    assert "drug_name" not in rules(text, allow_drug_names=True)
    medication = (*VARS, Variable("medication", VarType.DRUG))
    assert "drug_name" in rules("{clinic}: {medication} is ready", variables=medication)
    assert "drug_name" not in rules(
        "{clinic}: {medication} is ready", variables=medication, allow_drug_names=True
    )
    assert "drug_name" not in rules("{clinic}: your prescription is ready")


def test_free_text_from_nte_is_refused_by_its_type() -> None:
    with_note = (*VARS, Variable("comment", VarType.NOTE))
    assert "free_text" in rules("{clinic}: {comment}", variables=with_note)
    # Declared, even unused, a note variable is refused: the type says where it comes from.
    assert "free_text" in rules("{clinic}: see you soon", variables=with_note)
    assert "free_text" not in rules("{clinic}: see you soon")


def test_a_clinical_text_must_name_the_provider() -> None:
    assert "provider_name" in rules("Appointment {start}." + OK_TAIL, "appointment")
    assert "provider_name" not in rules("{clinic}: appointment {start}." + OK_TAIL, "appointment")
    # A non-clinical purpose is not held to MSG-3.
    assert "provider_name" not in rules("Appointment {start}.", "informational")


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("{clinic}: appointment {start}.", "en"),
        ("{clinic}: appointment {start}. Text us to stop.", "en"),
        ("{clinic}: cita el {start}.", "es"),
        ("{clinic}: cita el {start}. Reply STOP to opt out", "es"),  # the wrong language
    ],
)
def test_a_clinical_text_without_the_opt_out_line_is_refused(text: str, language: str) -> None:
    assert "opt_out" in rules(text, "appointment", language)


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("{clinic}: appointment {start}. Reply STOP to opt out", "en"),
        ("{clinic}: appointment {start}. Reply C to confirm, STOP to opt out", "en"),
        ("{clinic}: cita el {start}. Responda STOP para no recibir más", "es"),
        ("{clinic}: cita el {start}. Responda STOP para no recibir mas", "es-MX"),
    ],
)
def test_the_opt_out_line_in_the_language_passes(text: str, language: str) -> None:
    assert "opt_out" not in rules(text, "appointment", language)


def test_a_clinical_text_over_160_characters_at_maximum_lengths_is_refused() -> None:
    body = (
        "{clinic}: your appointment is {start}. Please arrive 15 minutes early and bring"
        " your ID and card." + OK_TAIL
    )
    literal = len(body) - len("{clinic}") - len("{start}")
    # {clinic} may take 24 characters and {start} 22 in English ("Wed Sep 30 at 12:59 PM").
    assert literal + 24 + 22 <= 160
    assert rules(body, "appointment") == set()
    # The same text with a longer clinic name allowed goes over.
    wide = (Variable("clinic", VarType.PROVIDER, 40), START)
    found = lint([Body(None, body)], wide, "appointment", "en")
    assert [p.rule for p in found] == ["too_long"]
    assert f"{literal + 40 + 22} characters" in found[0].message
    # Spanish month and day names are longer: the widest date counts.
    assert START.widest("long", "es") > START.widest("long", "en")


def test_a_clinical_text_in_ucs2_must_fit_the_70_characters_of_one_such_sms() -> None:
    accented = "{clinic}: cita el {start}. Responda STOP para no recibir más"
    plain = "{clinic}: cita el {start}. Responda STOP para no recibir mas"
    # á is outside the GSM 7-bit alphabet: the text is UCS-2, whatever the values.
    assert "too_long" in rules(accented, "appointment", "es")
    assert "too_long" not in rules(plain, "appointment", "es")
    # A declared default with such a letter decides the encoding too.
    place = Variable("location", VarType.TEXT, 24, "la clínica")
    at = plain.replace(". Responda", " en {location}. Responda")
    assert "too_long" in rules(at, "appointment", "es", (*VARS, place))
    # Outside MSG-3 a longer UCS-2 text is allowed (it goes as several parts).
    assert "too_long" not in rules(accented, "informational", "es")


def test_marketing_and_billing_words_are_refused_in_clinical_texts() -> None:
    assert "marketing" in rules(
        "{clinic}: 20% off flu shots this week!" + OK_TAIL, "appointment"
    ) | rules("{clinic}: your bill is overdue." + OK_TAIL, "appointment")
    assert "marketing" in rules(
        "{clinic}: descuento en su próxima cita. Responda STOP para no recibir más",
        "appointment",
        "es",
    )
    assert "marketing" not in rules("{clinic}: see you {start}." + OK_TAIL, "appointment")


def test_syntax_unknown_variables_and_formats_are_refused_with_their_span() -> None:
    found = lint([Body(None, "{clinic}: {start.__class__}")], VARS, "informational", "en")
    assert found[0].rule == "syntax" and found[0].start == 10
    found = lint([Body(None, "{clinic} {room}")], VARS, "informational", "en")
    assert [(p.rule, p.start, p.end) for p in found] == [("unknown_variable", 9, 15)]
    found = lint([Body(None, "{clinic:time}")], VARS, "informational", "en")
    assert [p.rule for p in found] == ["bad_format"]
    assert rules("{clinic}: {{literal braces}} {start:date}") == set()


def test_each_variant_is_linted_on_its_own_and_problems_never_quote_words() -> None:
    bodies = [
        Body("A", "{clinic}: appointment {start}." + OK_TAIL),
        Body("B", "{clinic}: HIV follow-up {start}." + OK_TAIL),
    ]
    found: list[Problem] = lint(bodies, VARS, "appointment", "en")
    assert [(p.rule, p.variant) for p in found] == [("diagnosis", "B")]
    assert "HIV" not in found[0].message and "hiv" not in found[0].message
    assert found[0].message.startswith("variant B:")


def test_variable_declarations_are_checked() -> None:
    assert declare({"start": {}, "ward": {"type": "text", "max_length": 20}})[1].limit == 20
    for bad, what in (
        ({"ward": {}}, "give its type"),
        ({"ward": {"type": "html"}}, "type is one of"),
        ({"start": {"max_length": 10}}, "has no max_length"),
        ({"ward": {"type": "text", "max_length": 500}}, "max_length is 1 to 160"),
        ({"Bad-Name": {"type": "text"}}, "lower case"),
        ({"time_zone": {"type": "text"}}, "lower case"),  # reserved
        ({"start": {"default": "soon"}}, "has no default"),
        ({"ward": {"type": "text", "max_length": 3, "default": "East"}}, "1 to 3 characters"),
    ):
        with pytest.raises(ValueError, match=what):
            declare(bad)  # type: ignore[arg-type]  # the wrong shapes on purpose


def test_a_default_is_linted_like_the_text() -> None:
    ward = declare({"ward": {"type": "text", "default": "Oncology ward"}})
    assert rules("{clinic}: see you {start} at {ward}", variables=(*VARS, *ward)) == set()
    ward = declare({"ward": {"type": "text", "default": "HIV clinic"}})
    found = lint([Body(None, "{clinic}: {ward}")], (*VARS, *ward), "informational", "en")
    assert [p.rule for p in found] == ["diagnosis"]
    assert found[0].message.startswith("ward: its default") and "HIV" not in found[0].message


def test_every_built_in_template_passes_the_lint() -> None:
    drafts = defaults.builtin()
    kinds = {d.kind for d in drafts}
    assert len(kinds) == 6 and {d.language for d in drafts} == {"en", "es"}
    for d in drafts:
        found = lint([Body(None, d.variants[0].body)], d.variables, d.purpose, d.language)
        assert found == [], (d.name, d.language, found)
    results = [d.variants[0].body for d in drafts if d.name == "result_available"]
    assert all("portal" in body for body in results)
