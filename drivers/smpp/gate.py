"""Credentials of an SMPP route, and the gate that holds binds while they are refused.

Carriers lock an account after a few refused binds, so a bind refused for its
credentials (ESME_RINVPASWD, ESME_RINVSYSID, ESME_RBINDFAIL) is never retried on a
timer. The gate is shut (`refuse`) until `reopen` (an operator's resume, or the
configured secret changed: link 0 re-reads it every `CREDENTIAL_CHECK` seconds on the
clock, which costs the carrier nothing). Links after the first also wait until the
credentials were accepted once since start or reopening (`accept`), so a wrong
password costs one refused bind, not one per link.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Callable

from drivers.base import DriverNotReady
from drivers.clock import Clock, wait_event
from drivers.credentials import SecretError, read_secret
from drivers.smpp.options import SmppOptions
from drivers.smpp.status import Status

# bind refusals that mean the credentials are wrong: park, never rebind on a timer
AUTH_REFUSALS = frozenset({Status.ESME_RBINDFAIL, Status.ESME_RINVPASWD, Status.ESME_RINVSYSID})
CREDENTIAL_CHECK = 30.0  # seconds between re-reads of the secret while refused


class CredentialGate:
    def __init__(self, route: str, options: SmppOptions, clock: Clock) -> None:
        self._route = route
        self._opts = options
        self._clock = clock
        self.password = ""
        self.refused: str | None = None  # the status code that shut the gate
        self.accepted = False  # since start or reopening: every link may bind
        self._changed = asyncio.Event()  # set (and replaced) on every change above

    def load(self) -> None:
        """Read the password (at start and on reopening); DriverNotReady if none."""
        secret = self._read()
        if secret is None:
            raise DriverNotReady(
                f"route {self._route}: no password configured", code="smpp:no_password"
            )
        self.password = secret

    def refuse(self, code: str) -> None:
        self.refused = code
        self._notify()

    def accept(self) -> None:
        if not self.accepted:
            self.accepted = True
            self._notify()

    def reopen(self) -> None:
        """Read the credentials again and let links bind; raises if they cannot be read."""
        self.load()
        self.refused, self.accepted = None, False
        self._notify()

    def release(self) -> None:
        """Wake every waiting link (the driver is closing)."""
        self._notify()

    def detail(self) -> str:
        return (
            f"the carrier refused the credentials ({self.refused}): parked, no rebinds"
            " until an operator resumes the route or the secret changes"
        )

    def mac(self, key: bytes) -> bytes:
        """HMAC of where and as whom the route binds, and the secret configured now."""
        opts = self._opts
        who = "\0".join((opts.host, str(opts.port), opts.system_id, self._read() or ""))
        return hmac.new(key, who.encode(), hashlib.sha256).digest()

    async def wait_turn(
        self, first: bool, closing: Callable[[], bool], secret_changed: Callable[[], None]
    ) -> bool:
        """Hold a link's next connection while refused (the `first` link checks the
        secret every `CREDENTIAL_CHECK` seconds and calls `secret_changed` when it did)
        and, for the others, until the credentials were accepted. False once closing."""
        while not closing():
            refused = self.refused is not None
            if not refused and (first or self.accepted):
                return True
            limit = CREDENTIAL_CHECK if refused and first else None
            if not await wait_event(self._clock, self._changed, limit) and self._differs():
                secret_changed()
        return False

    def _differs(self) -> bool:
        try:
            secret = self._read()
        except SecretError:
            return False
        return secret is not None and secret != self.password

    def _read(self) -> str | None:
        opts = self._opts
        return read_secret(
            file=opts.password_file, credential=opts.password_credential, value=opts.password
        )

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
