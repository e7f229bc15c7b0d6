"""A survey for the demo (`smsgw run` with the simulated peers): "How was your visit?",
seeded once into a store with no survey, through the use case (so the audit trail
shows `system:demo` made it); send it to a demo handset from the panel or the API and
answer with `POST /api/v1/demo/inbound`."""

from __future__ import annotations

import msgspec

from gateway.surveys.spec import SurveySpec
from gateway.surveys.usecase import Surveys
from gateway.usecases.caller import Caller

DEMO_SURVEY = {
    "name": "How was your visit?",
    "intro": {"en": "GH Clinic: two quick questions about your visit.",
              "es": "Clinica GH: dos preguntas sobre su visita."},
    "questions": [
        {"kind": "choice", "text": {"en": "How was your visit?", "es": "Como fue su visita?"},
         "options": [{"key": "1", "label": {"en": "Good", "es": "Buena"}},
                     {"key": "2", "label": {"en": "OK", "es": "Regular"}},
                     {"key": "3", "label": {"en": "Poor", "es": "Mala"}}]},
        {"kind": "scale", "text": {"en": "How likely are you to recommend us? 0-10",
                                   "es": "Nos recomendaria? 0-10"}, "min": 0, "max": 10},
    ],
    "thanks": {"en": "Thank you! Reply STOP to opt out.",
               "es": "Gracias! Responda ALTO para no recibir mas."},
}  # fmt: skip
_DEMO = Caller(
    actor="system:demo", token_id=None, sees_all=True, may_send=True, may_read_phi=False,
    may_edit_templates=True,
)  # fmt: skip


async def seed(surveys: Surveys) -> int:
    """Create the demo survey if there is no survey yet; how many were made."""
    if await surveys.list_surveys(_DEMO):
        return 0
    await surveys.create(_DEMO, msgspec.convert(DEMO_SURVEY, SurveySpec))
    return 1
