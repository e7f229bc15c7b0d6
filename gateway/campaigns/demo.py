"""A campaign template for the demo (`smsgw run` with the simulated peers): the panel's
new-campaign form and Compose offer a two-variant flu-clinic text at once, so a newcomer
can run an A/B campaign to a group without writing a template first.

Seeded once per language, only where the name was never saved, through the templates'
use case (the lint checks it; the audit trail shows `system:demo`)."""

from __future__ import annotations

from gateway.templates.usecase import DraftRequest, Templates
from gateway.usecases.caller import Caller

NAME = "flu_clinic"
TEXTS = {
    "en": (
        ("A", "Flu shots are free at {clinic} this week, no appointment needed."),
        ("B", "Protect yourself this winter: walk in for a free flu shot at {clinic}."),
    ),
    "es": (
        ("A", "Vacuna contra la gripe gratis en {clinic} esta semana, sin cita."),
        ("B", "Protejase este invierno: vacuna gratis contra la gripe en {clinic}."),
    ),
}
_DEMO = Caller(
    actor="system:demo",
    token_id=None,
    sees_all=True,
    may_send=False,
    may_read_phi=False,
    may_edit_templates=True,
)


async def seed(templates: Templates) -> int:
    """Save `flu_clinic` in each language it was never saved in; how many were saved."""
    known = {v.draft.language for v in await templates.heads(_DEMO) if v.draft.name == NAME}
    saved = 0
    for language, variants in TEXTS.items():
        if language in known:
            continue
        await templates.save(
            _DEMO,
            DraftRequest(
                language=language,
                purpose="informational",
                variables={"clinic": {}},
                variants=tuple((name, body, 1) for name, body in variants),
                name=NAME,
            ),
        )
        saved += 1
    return saved
