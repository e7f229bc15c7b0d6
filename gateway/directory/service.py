"""The directory as the panel asks it: sign a user in, re-read a user's role, and say
whether the directory is up (health, dashboard, metrics).

ldap3 blocks, so each question runs in a thread (`asyncio.to_thread`), bounded by
`asyncio.wait_for` on top of ldap3's own connect and receive timeouts: a slow or dead
directory costs a sign-in at most about those timeouts, never the event loop.

Outcomes, each a clear refusal or a user: `ok` (with the role from the mapped groups),
`credentials` (no such user, a wrong password, an empty password: one answer, so a
name cannot be probed), `no_role` (in no mapped group), `blocked` (disabled or locked
in the directory: refused before any bind, so smsgw never adds to a lockout count),
`unavailable` (the directory did not answer; the reason is logged and shown in health).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from drivers.clock import Clock
from gateway.directory.client import DirectoryUnavailable, Entry, LdapClient, normal_dn
from gateway.directory.settings import ROLE_RANK, DirectoryConfig
from gateway.panel_users import Role

log = structlog.get_logger("smsgw.directory")
T = TypeVar("T")
Kind = Literal["ok", "credentials", "no_role", "blocked", "unavailable"]
PROBE_INTERVAL = 60.0  # how often the watch binds as the service account
# After an outage is seen, rechecks of signed-in users wait this long before asking
# again, so each panel request of a signed-in user does not wait out a timeout.
QUIET_AFTER_FAILURE = 30.0


@dataclass(frozen=True, slots=True)
class Identity:
    stable_id: str
    name: str
    role: Role | None


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: Kind
    identity: Identity | None = None
    detail: str | None = None  # why, for the audit trail and the log: never a secret


@dataclass(frozen=True, slots=True)
class DirectoryStatus:
    state: Literal["unknown", "up", "down"]
    error: str | None = None
    tls_error: bool = False
    since: float | None = None  # when it went into this state

    def describe(self, *, public: bool = False) -> dict[str, object]:
        """`public` (health): no error text, which names the directory's hosts."""
        body: dict[str, object] = {"state": self.state}
        if self.error is not None:
            body["tls_error"] = self.tls_error
            if not public:
                body["error"] = self.error
        if self.since is not None:
            body["since"] = self.since
        return body


class DirectoryMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.up = Gauge(
            "smsgw_directory_up",
            "1 while the sign-in directory answers, 0 while it does not (LDAP)",
            registry=registry,
        )
        self.signins = Counter(
            "smsgw_directory_signins",
            "Directory sign-in attempts by outcome",
            ["outcome"],
            registry=registry,
        )


def role_for(groups: set[str], mapping: dict[str, Role]) -> Role | None:
    """The highest role among the mapped groups the user is in (`ROLE_RANK`)."""
    roles = {role for dn, role in mapping.items() if normal_dn(dn) in groups}
    return next((r for r in ROLE_RANK if r in roles), None)


class Directory:
    def __init__(
        self,
        config: DirectoryConfig,
        client: LdapClient,
        clock: Clock,
        metrics: DirectoryMetrics | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.clock = clock
        self.metrics = metrics
        self.status = DirectoryStatus("unknown")
        self._failed_at: float | None = None
        # Most operations of one sign-in: two connects and six round trips at most.
        c = config
        self._limit = len(c.urls) * c.connect_timeout * 2 + c.timeout * 6

    async def _ask(self, work: Callable[[], T]) -> T:
        try:
            result = await asyncio.wait_for(asyncio.to_thread(work), self._limit)
        except TimeoutError:
            self._down(DirectoryUnavailable("no answer within the directory timeouts"))
            raise DirectoryUnavailable("no answer within the directory timeouts") from None
        except DirectoryUnavailable as e:
            self._down(e)
            raise
        self._up()
        return result

    def _up(self) -> None:
        if self.status.state != "up":
            log.info("directory_up")
            self.status = DirectoryStatus("up", since=self.clock.time())
        if self.metrics is not None:
            self.metrics.up.set(1)

    def _down(self, e: DirectoryUnavailable) -> None:
        if self.status.state != "down" or self.status.error != e.reason:
            log.error("directory_unavailable", reason=e.reason, tls=e.tls)
        since = self.status.since if self.status.state == "down" else self.clock.time()
        self.status = DirectoryStatus("down", e.reason, e.tls, since)
        self._failed_at = self.clock.time()
        if self.metrics is not None:
            self.metrics.up.set(0)

    def _count(self, outcome: Outcome) -> Outcome:
        if self.metrics is not None:
            self.metrics.signins.labels(outcome.kind).inc()
        return outcome

    async def sign_in(self, username: str, password: str) -> Outcome:
        """One sign-in: at most one bind as the user, none for an empty password or an
        account the directory has disabled or locked."""
        if not password or not username:
            return self._count(Outcome("credentials", detail="empty"))
        try:
            entry = await self._ask(lambda: self.client.find(username))
            if entry is None:
                return self._count(Outcome("credentials", detail="unknown"))
            if entry.blocked is not None:
                return self._count(Outcome("blocked", self._identity(entry), entry.blocked))
            checked = await self._ask(lambda: self.client.check_password(entry.dn, password))
            if checked != "ok":
                kind: Kind = "blocked" if checked == "locked" else "credentials"
                return self._count(Outcome(kind, self._identity(entry), checked))
            return self._count(await self._with_role(entry))
        except DirectoryUnavailable as e:
            return self._count(Outcome("unavailable", detail=e.reason))

    async def recheck(self, stable_id: str) -> Outcome:
        """The user's standing now, by the stable id (no password)."""
        failed_at = self._failed_at
        if (
            self.status.state == "down"
            and failed_at is not None
            and self.clock.time() - failed_at < QUIET_AFTER_FAILURE
        ):
            return Outcome("unavailable", detail=self.status.error)
        try:
            entry = await self._ask(lambda: self.client.find_by_id(stable_id))
            if entry is None:
                return Outcome("credentials", detail="gone")
            if entry.blocked is not None:
                return Outcome("blocked", self._identity(entry), entry.blocked)
            return await self._with_role(entry)
        except DirectoryUnavailable as e:
            return Outcome("unavailable", detail=e.reason)

    async def _with_role(self, entry: Entry) -> Outcome:
        groups = await self._ask(lambda: self.client.mapped_groups(entry.dn))
        role = role_for(groups, self.config.roles)
        identity = Identity(entry.stable_id, entry.name, role)
        return Outcome("ok" if role is not None else "no_role", identity)

    def _identity(self, entry: Entry) -> Identity:
        return Identity(entry.stable_id, entry.name, None)

    async def probe(self) -> DirectoryStatus:
        """Bind as the service account: health and the dashboard see an outage even
        when nobody signs in."""
        with contextlib.suppress(DirectoryUnavailable):
            await self._ask(self.client.probe)
        return self.status

    async def watch(self) -> None:
        while True:
            await self.probe()
            await self.clock.sleep(PROBE_INTERVAL)
