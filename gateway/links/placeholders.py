"""`{link:NAME}` in a message body becomes a per-message short URL at accept.

`LinkBook` holds the named links in memory (loaded at start, updated by every
create), so the accept path expands a body without a read: each placeholder becomes
`<links.base_url>/<token>`, one fresh token per link per message, bound to that
message's id, and the token rows commit with the message. The encoding and segment
count are those of the expanded body. A placeholder that names no link, an expired
link, or one whose destination the allowlist no longer takes refuses the message
(`422 unknown_link`, `link_expired`, `link_not_allowed`), and so does any placeholder
while links are off (`links_off`): nothing goes out with a raw `{link:...}` in it.
Error messages give the placeholder's position, never the body's text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from gateway.errors import ApiError
from gateway.links import tokens
from gateway.links.settings import LinksConfig

NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,47}$")
PLACEHOLDER = re.compile(r"\{link:([^{}]{0,64})\}")


@dataclass(frozen=True, slots=True)
class NamedLink:
    id: str
    name: str
    destination: str
    expires_at: float | None
    created_at: float
    created_by: str

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


@dataclass(frozen=True, slots=True)
class Minted:
    """One short link of one message, as stored (the token itself is not)."""

    token_hash: bytes
    link_id: str
    message_id: str
    created_at: float
    expires_at: float


def has_placeholder(body: str) -> bool:
    return "{link:" in body


class LinkBook:
    def __init__(self, config: LinksConfig) -> None:
        self._config = config
        self._allowlist = config.allowlist
        self._by_name: dict[str, NamedLink] = {}
        # Reads every named link from the store (set by the use case). Named links are
        # only ever added, so a book can lack a link (made on another node of a
        # cluster after this one loaded) but never holds a stale one.
        self.reload: Callable[[], Awaitable[list[NamedLink]]] | None = None

    @property
    def enabled(self) -> bool:
        return self._config.enabled

    def load(self, links: list[NamedLink]) -> None:
        self._by_name = {link.name: link for link in links}

    async def ensure(self, bodies: Iterable[str]) -> None:
        """Read the store again if a placeholder in `bodies` names a link the book
        lacks, so `expand` (which does no I/O) finds one made elsewhere."""
        if self.reload is None or not self._config.enabled:
            return
        for body in bodies:
            if not has_placeholder(body):
                continue
            if any(m.group(1) not in self._by_name for m in PLACEHOLDER.finditer(body)):
                self.load(await self.reload())
                return

    def put(self, link: NamedLink) -> None:
        self._by_name[link.name] = link

    def get(self, name: str) -> NamedLink | None:
        return self._by_name.get(name)

    def expand(
        self, body: str, message_id: str, now: float, field: str = "body"
    ) -> tuple[str, tuple[Minted, ...]]:
        """The body with each placeholder replaced by a new short URL, and the rows
        that bind those URLs to `message_id`. Raises `ApiError` naming `field`."""
        if not has_placeholder(body):
            return body, ()
        minted: dict[str, tuple[str, Minted]] = {}

        def url(match: re.Match[str]) -> str:
            link = self._usable(match, now, field)
            if link.name not in minted:
                token = tokens.mint(self._config.token_length)
                row = Minted(
                    tokens.token_hash(token), link.id, message_id, now, self._expiry(link, now)
                )
                minted[link.name] = (token, row)
            return self.short_url(minted[link.name][0])

        expanded = PLACEHOLDER.sub(url, body)
        return expanded, tuple(row for _, row in minted.values())

    def preview(self, body: str, now: float, field: str = "body") -> str:
        """The body as it will be sent, with a token of the real length in each URL
        (for a preview's encoding and segment count: nothing is minted or stored)."""

        def url(match: re.Match[str]) -> str:
            self._usable(match, now, field)
            return self.sample_url()

        return PLACEHOLDER.sub(url, body)

    def sample_url(self) -> str:
        """A short URL as long as every real one (for previews and the template lint)."""
        return self.short_url("x" * self._config.token_length)

    def short_url(self, token: str) -> str:
        return f"{self._config.base_url.rstrip('/')}/{token}"

    def _usable(self, match: re.Match[str], now: float, field: str) -> NamedLink:
        at = f"the link placeholder at character {match.start() + 1}"
        if not self._config.enabled:
            raise ApiError(
                422, "links_off", f"{field}: {at}: tracked links are off ([links])", field=field
            )
        link = self._by_name.get(match.group(1)) if NAME.match(match.group(1)) else None
        if link is None:
            raise ApiError(422, "unknown_link", f"{field}: {at} names no link", field=field)
        if link.expired(now):
            raise ApiError(422, "link_expired", f"{field}: {at} names an expired link", field=field)
        if self._allowlist.problem(link.destination) is not None:
            raise ApiError(
                422,
                "link_not_allowed",
                f"{field}: {at} names a link whose destination links.allow no longer takes",
                field=field,
            )
        return link

    def _expiry(self, link: NamedLink, now: float) -> float:
        ends = now + self._config.expiry_days * 86400.0
        return min(ends, link.expires_at if link.expires_at is not None else math.inf)
