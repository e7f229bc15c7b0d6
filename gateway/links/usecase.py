"""Tracked links as the front ends see them: create, list, read with click counts, and
follow a short URL (the redirect listener).

The API (`/api/v1/links`) and the panel's Links page call these with a `Caller`.
Creating needs `may_edit_templates` (the `admin` scope or role: links are message
content, like templates) and is audited: in the transaction that stores the link on
one node, on a cluster in the node's own chain once the shared row is committed;
reading needs only a signed-in caller. Creating while `[links]` is off is refused
(`409 links_off`): such a link could never be used.

`follow` decides what a request to a short URL gets: the stored destination (never
anything from the request: no open redirect), or, for an unknown, expired or no
longer allowed token, the fallback (the same answer for all three, so a scanner
learns nothing of which tokens exist). Every request that reached a live token is
recorded as a click with its class; only a person's counts as human.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from drivers.clock import Clock
from gateway.errors import ApiError
from gateway.links import store as sql
from gateway.links import tokens
from gateway.links.classify import CLASSES, classify
from gateway.links.link_store import LinkStore
from gateway.links.placeholders import NAME, LinkBook, NamedLink
from gateway.links.settings import LinksConfig
from gateway.logs import exception_summary
from gateway.metrics import Metrics
from gateway.usecases.caller import Caller

log = structlog.get_logger("smsgw.links")
LINK_ID = re.compile(r"^lnk_[0-9a-f]{16}$")


@dataclass(frozen=True, slots=True)
class LinkRecord:
    link: NamedLink
    counts: sql.Counts
    expired: bool
    placeholder: str  # what a body or template writes to use it: `{link:NAME}`
    by_class: Mapping[str, int] | None = None  # one link's clicks per agent class


@dataclass(frozen=True, slots=True)
class Followed:
    """The answer to a short URL: `location` to redirect to, or None for the
    "link expired" page; `agent_class` of what was counted (None: nothing was)."""

    location: str | None
    agent_class: str | None


class Links:
    def __init__(
        self,
        *,
        config: LinksConfig,
        book: LinkBook,
        store: LinkStore,
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self.config = config
        self._requests = metrics.link_requests
        self.book = book
        self._allowlist = config.allowlist
        self._store = store
        self.clock = clock
        # A body naming a link the book lacks (made on another node since) reads the
        # store again before it is refused (`LinkBook.ensure`).
        book.reload = store.all_links

    async def load(self) -> None:
        """Fill the accept path's book from the store (at start)."""
        self.book.load(await self._store.all_links())

    # -- managing ----------------------------------------------------------------------

    async def create(
        self, caller: Caller, name: str, destination: str, expires_at: float | None
    ) -> LinkRecord:
        """A new named link; `ApiError` naming the field, never quoting what was sent."""
        if not caller.may_edit_templates:
            raise ApiError(403, "forbidden", "creating links needs the 'admin' scope or role")
        if not self.config.enabled:
            raise ApiError(409, "links_off", "tracked links are off at this site ([links])")
        if not NAME.match(name):
            raise ApiError(
                422,
                "invalid_name",
                "name: 1 to 48 lower case letters, digits and -, starting with a letter or digit",
                field="name",
            )
        if problem := self._allowlist.problem(destination):
            raise ApiError(422, "link_not_allowed", f"destination: {problem}", field="destination")
        now = self.clock.time()
        if expires_at is not None and expires_at <= now:
            raise ApiError(
                422, "invalid_field", "expires_at: must be in the future", field="expires_at"
            )
        stored = self._allowlist.normalised(destination)
        link = await self._store.create(name, stored, expires_at, now, caller.actor)
        if link is None:
            raise ApiError(409, "name_taken", "name: a link with this name exists", field="name")
        self.book.put(link)
        return self._record(link, sql.Counts())

    # -- reading -----------------------------------------------------------------------

    async def list(self, caller: Caller) -> list[LinkRecord]:
        """Every named link with its clicks, people apart from bots."""
        links = await self._store.all_links()
        counts = await self._store.counts()
        return [self._record(link, counts.get(link.id, sql.Counts())) for link in links]

    async def get(self, caller: Caller, link_id: str) -> LinkRecord:
        """One link with its clicks per agent class."""
        link = await self._store.link(link_id) if LINK_ID.match(link_id) else None
        if link is None:
            raise ApiError(404, "not_found", "no link with this id")
        counts = await self._store.counts(link.id)
        classes = dict.fromkeys(CLASSES, 0) | await self._store.classes(link.id)
        return self._record(link, counts.get(link.id, sql.Counts()), classes)

    def _record(
        self, link: NamedLink, counts: sql.Counts, by_class: Mapping[str, int] | None = None
    ) -> LinkRecord:
        expired = link.expired(self.clock.time())
        return LinkRecord(link, counts, expired, "{link:" + link.name + "}", by_class)

    # -- following a short URL ---------------------------------------------------------

    async def follow(self, token: str, method: str, headers: Mapping[str, str]) -> Followed:
        """Where `token` leads, with the request counted as a click of its class."""
        now = self.clock.time()
        target = None
        if tokens.TOKEN.match(token):
            target = await self._store.target(tokens.token_hash(token))
        if (
            target is None
            or now >= target.expires_at
            or self._allowlist.problem(target.destination) is not None
        ):
            self._requests.labels("gone").inc()
            return Followed(self.config.fallback_url, None)
        click = classify(method, headers)
        self._requests.labels(click.agent_class).inc()
        try:
            await self._store.record_click(target, now, click.human, click.agent_class)
        except Exception as e:  # the store is failing: the patient still gets the page
            log.error("link_click_not_recorded", error=exception_summary(e))
        return Followed(self._allowlist.normalised(target.destination), click.agent_class)

    def limited(self) -> None:
        """A request the redirect listener refused for its source's rate (metrics)."""
        self._requests.labels("limited").inc()

    async def prune(self) -> int:
        """Delete expired tokens (housekeeping); an expired token and an unknown one get
        the same answer, so nothing a phone sees changes. How many went."""
        return await self._store.prune(self.clock.time())
