"""The built-in templates: one per notice kind, in English and Spanish.

Each names the provider (`{clinic}`), carries the opt-out line and fits one SMS
with every variable at its maximum (MSG-3): 160 characters, all in the GSM 7-bit
alphabet (the Spanish ones without á, í, ó, ú, which would make a text UCS-2, 70
characters an SMS, as the consent replies are written); a results notice says only
that results are in the portal, never what they are. They are saved as version 1 at
the first start (`store.seed`) and edited like any other template.
"""

from __future__ import annotations

from gateway.clinical.notices import NoticeKind
from gateway.consent.purposes import Purpose
from gateway.templates.store import Draft, Variant
from gateway.templates.variables import Variable, VarType

CLINIC = Variable("clinic", VarType.PROVIDER, 24)
START = Variable("start", VarType.DATETIME)
SHORT_CODE = Variable("short_code", VarType.SHORT_CODE, 4)
# A notice without a location label still reads well (and is sent).
LOCATION = {
    "en": Variable("location", VarType.TEXT, 24, "the clinic"),
    "es": Variable("location", VarType.TEXT, 24, "la clinica"),
}
PHARMACY = {
    "en": Variable("location", VarType.TEXT, 24, "the pharmacy"),
    "es": Variable("location", VarType.TEXT, 24, "la farmacia"),
}

_TEXTS: dict[NoticeKind, tuple[Purpose, tuple[Variable | str, ...], str, str]] = {
    NoticeKind.REMINDER: (
        Purpose.APPOINTMENT,
        (CLINIC, START, "location", SHORT_CODE),
        "{clinic}: appointment {start} at {location}. Reply C {short_code} to confirm,"
        " R to reschedule, STOP to opt out",
        "{clinic}: cita el {start} en {location}. Responda C {short_code} para confirmar,"
        " R para cambiar, STOP para no recibir mas",
    ),
    NoticeKind.APPOINTMENT_MOVED: (
        Purpose.APPOINTMENT,
        (CLINIC, START, "location", SHORT_CODE),
        "{clinic}: your appointment moved to {start} at {location}. Reply C {short_code}"
        " to confirm, STOP to opt out",
        "{clinic}: su cita paso al {start} en {location}. Responda C {short_code} para"
        " confirmar, STOP para no recibir mas",
    ),
    NoticeKind.APPOINTMENT_CANCELLED: (
        Purpose.APPOINTMENT,
        (CLINIC, START),
        "{clinic}: your appointment on {start} is cancelled. Call us to book again."
        " Reply STOP to opt out",
        "{clinic}: su cita del {start} esta cancelada. Llamenos para pedir otra."
        " Responda STOP para no recibir mas",
    ),
    NoticeKind.RESULT_AVAILABLE: (
        Purpose.RESULTS,
        (CLINIC,),
        "{clinic}: you have new results available in the patient portal. Reply STOP to opt out",
        "{clinic}: tiene resultados nuevos disponibles en el portal del paciente."
        " Responda STOP para no recibir mas",
    ),
    NoticeKind.MEDICATION_READY: (
        Purpose.MEDICATION,
        (CLINIC, "pharmacy"),
        "{clinic}: your prescription is ready for pick-up at {location}. Reply STOP to opt out",
        "{clinic}: su receta esta lista para recoger en {location}."
        " Responda STOP para no recibir mas",
    ),
    NoticeKind.MEDICATION_DOSE: (
        Purpose.MEDICATION,
        (CLINIC,),
        "{clinic}: a reminder to take your medicine as prescribed. Reply STOP to opt out",
        "{clinic}: le recordamos tomar su medicamento segun lo indicado."
        " Responda STOP para no recibir mas",
    ),
}


def builtin() -> list[Draft]:
    """Every built-in template: its name is the notice kind."""
    out = []
    for kind, (purpose, variables, en, es) in _TEXTS.items():
        for language, body in (("en", en), ("es", es)):
            labels = {"location": LOCATION[language], "pharmacy": PHARMACY[language]}
            out.append(
                Draft(
                    kind.value,
                    language,
                    purpose.value,
                    tuple(labels[v] if isinstance(v, str) else v for v in variables),
                    (Variant(None, body),),
                    kind.value,
                )
            )
    return out
