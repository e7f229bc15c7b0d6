"""Who is asking: what a use case may do for them, show them, and write in the audit.

Front ends build one `Caller` per request: the API from its bearer token
(`for_token`), the panel from its signed-in user's role (`for_panel_user`), the
other front ends (MQTT, Kannel `sendsms`) from the token their credentials map to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.store.tokens_sql import TokenRecord
from gateway.usecases.masking import mask_number, mask_number_compact


@dataclass(frozen=True, slots=True)
class Caller:
    """`actor` names the caller in the audit trail (`token:<id>`, `user:<id>`).

    `token_id`: the token acting, which owns the messages it sends (None for a panel
    user). `sees_all`: every token's messages, not only its own. `may_send`: accept,
    cancel, retry. `may_read_phi`: whole numbers and bodies, each read audited.
    `sees_masked`: masked numbers at all (the panel's viewer and auditor see none).
    `mask`: how a masked number looks to this caller's front end.
    `shows_body_length`: a masked body (its length) in records (the panel's lists).
    `may_record_consent`: opt-outs, opt-ins, contacts, reviews, import (`consent` scope).
    """

    actor: str
    token_id: str | None
    sees_all: bool
    may_send: bool
    may_read_phi: bool
    sees_masked: bool = True
    mask: Callable[[str], str] = mask_number_compact
    shows_body_length: bool = False
    may_override_quiet_hours: bool = False  # the `urgent` scope (audited per message)
    may_record_consent: bool = False
    may_edit_templates: bool = False  # the `admin` scope or panel role (gateway.templates)

    @classmethod
    def for_token(cls, token: TokenRecord) -> Caller:
        """An API token: `admin` sees every token's messages; `phi` (never implied by
        `admin`) reads numbers and bodies."""
        scopes = token.scopes
        return cls(
            actor=f"token:{token.id}",
            token_id=token.id,
            sees_all="admin" in scopes,
            may_send=bool({"send", "admin"} & scopes),
            may_read_phi="phi" in scopes,
            may_override_quiet_hours="urgent" in scopes,
            may_record_consent=bool({"consent", "admin"} & scopes),
            may_edit_templates="admin" in scopes,
        )

    @classmethod
    def for_panel_user(cls, actor: str, *, reads_phi: bool, acts: bool) -> Caller:
        """A panel user: sees every message; masked PHI and reveal only if `reads_phi`."""
        return cls(
            actor=actor,
            token_id=None,
            sees_all=True,
            may_send=acts,
            may_read_phi=reads_phi,
            sees_masked=reads_phi,
            mask=mask_number,
            shows_body_length=reads_phi,
            may_record_consent=acts,
        )

    @property
    def owner(self) -> str | None:
        """The token whose messages this caller may see and act on; None for all."""
        return None if self.sees_all else self.token_id
