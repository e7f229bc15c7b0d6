"""A tracked link for the demo (`smsgw run` with the simulated peers): a newcomer sends
`{link:flu-clinic}` without making one first. Seeded once, into a store with no link,
through the use case (the audit trail shows `system:demo` made it)."""

from __future__ import annotations

from gateway.links.usecase import Links
from gateway.usecases.caller import Caller

DEMO_LINK = ("flu-clinic", "https://www.example-hospital.org/flu-clinic")
_DEMO = Caller(
    actor="system:demo",
    token_id=None,
    sees_all=True,
    may_send=False,
    may_read_phi=False,
    may_edit_templates=True,
)


async def seed(links: Links) -> bool:
    """Create `DEMO_LINK` if links are on, the allowlist takes it and none exists."""
    if not links.config.enabled or links.config.allowlist.problem(DEMO_LINK[1]) is not None:
        return False
    if await links.list(_DEMO):
        return False
    await links.create(_DEMO, *DEMO_LINK, None)
    return True
