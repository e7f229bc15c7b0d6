"""Kannel delivery reports: a sendsms `dlr-url` called back as the message's state moves.

Theory of operation. At accept the listener stores the dlr-url (encrypted: its query may
carry PHI), the dlr-mask, and the receiver and sender as the client wrote them, in the
same transaction as the message (`wish_of`; where: `dlr_wishes.DlrWishes`, the node's
store or the cluster's PostgreSQL, the consumer reading the same). `KannelDlrConsumer` is an outbox
`EventConsumer`: for each `message.status` event of such a message it picks the Kannel
report type the new state stands for (`report_type`); if the mask asks for it, the URL's
`%` escapes are filled in as Kannel's `urltrans_fill_escape_codes` does and the URL is
fetched with GET. The origin must still be in `kannel.dlr_url_origins`; no redirect is
followed; an address that is link-local, a cloud metadata service, unspecified or
multicast is never called. Nothing here logs a URL, a number or a text.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import urllib.parse
from datetime import UTC, datetime

import aiohttp
import structlog
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from gateway.config import KannelConfig
from gateway.integrations import kannel
from gateway.integrations.dlr_wishes import DlrWish, DlrWishes
from gateway.integrations.events import (
    MESSAGE_STATUS,
    DeliveryFailed,
    EventConsumer,
    OutboxEvent,
)
from gateway.models import State

log = structlog.get_logger("smsgw.kannel")

CONSUMER_NAME = "kannel-dlr"
CALL_TIMEOUT = 10.0
# Cloud metadata services outside the link-local ranges (AWS IPv6, Alibaba, Oracle).
_METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)
# What each report type answers in %A (Kannel passes the SMSC's own text here).
_ANSWER = {
    kannel.DLR_DELIVERED: "DELIVRD",
    kannel.DLR_FAILED: "UNDELIV",
    kannel.DLR_BUFFERED: "BUFFERED",
    kannel.DLR_SMSC_SUCCESS: "ACK/",
    kannel.DLR_SMSC_FAIL: "NACK/",
}


def wish_of(plan: kannel.SendPlan, receiver: str, username: str) -> DlrWish:
    """What a sendsms asked to hear back for one receiver (stored with its message)."""
    assert plan.dlr_url is not None
    return DlrWish(plan.dlr_url, plan.dlr_mask, receiver, plan.sender, username)


def report_type(state: str, mask: int) -> int | None:
    """The Kannel report type (one bit) a state stands for, if the mask asks for it.

    smsgw's event does not say whether a failure was the carrier refusing the submit
    (Kannel's 16) or a failed delivery (2): a failure is reported as 2 when the mask
    asks for 2, else as 16."""
    match state:
        case State.DELIVERED:
            wanted = kannel.DLR_DELIVERED
        case State.SENT:
            wanted = kannel.DLR_SMSC_SUCCESS
        case State.QUEUED:  # back in the queue for a retry: Kannel's "buffered"
            wanted = kannel.DLR_BUFFERED
        case State.FAILED | State.EXPIRED | State.BLOCKED | State.CANCELLED:
            wanted = kannel.DLR_FAILED if mask & kannel.DLR_FAILED else kannel.DLR_SMSC_FAIL
        case _:
            return None
    return wanted if mask & wanted else None


def fill_escapes(pattern: str, values: dict[str, str]) -> str:
    """Kannel's `%x` escapes: known ones replaced (URL-encoded), `%%` a percent sign,
    unknown ones kept as written."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c != "%" or i + 1 >= len(pattern):
            out.append(c)
            i += 1
            continue
        key = pattern[i + 1]
        if key == "%":
            out.append("%")
        elif key in values:
            out.append(values[key])
        else:
            out.append("%" + key)
        i += 2
    return "".join(out)


def _quote(text: str) -> str:
    return urllib.parse.quote_plus(text, safe="")


def escape_values(
    event: OutboxEvent, wish: DlrWish, kind: int, carrier_id: str | None = None
) -> dict[str, str]:
    """Values of the escapes a Kannel DLR fills in (gw/urltrans.c); `carrier_id` is
    the id the carrier gave the message (`%F`)."""
    data = event.data
    answer = _ANSWER[kind]
    if kind == kannel.DLR_SMSC_FAIL and data.get("error_code"):
        answer += str(data["error_code"])
    when = datetime.fromtimestamp(event.at, UTC)
    receiver_q = wish.receiver
    if receiver_q.startswith("00"):
        receiver_q = "+" + receiver_q[2:]
    return {
        "d": str(kind),
        "A": _quote(answer),
        "a": "+".join(_quote(w) for w in answer.split()),
        "b": _quote(answer),
        "k": _quote(answer.split()[0]) if answer.split() else "",
        "i": _quote(str(event.route or data.get("route") or "")),
        "I": _quote(event.message_id or ""),
        "F": _quote(carrier_id or str(data.get("carrier_id") or "")),
        "p": _quote(wish.sender),
        "P": _quote(wish.receiver),
        "q": _quote(receiver_q),
        "Q": _quote(wish.sender),
        "n": _quote(wish.username),
        "T": str(int(event.at)),
        "t": when.strftime("%Y-%m-%d+%H:%M:%S"),
        "c": "0",
        "C": "UTF-8",
    }


def forbidden_address(address: str) -> bool:
    """Addresses a callback never goes to, whatever the allowlist says."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_link_local or ip.is_unspecified or ip.is_multicast or ip in _METADATA


class GuardedResolver(AbstractResolver):
    """Resolves as usual but never to a forbidden address, so a name that changes its
    answer between the check and the connection (DNS rebinding) still cannot reach one."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not results or any(forbidden_address(r["host"]) for r in results):
            raise OSError("forbidden address")
        return results

    async def close(self) -> None:
        await self._inner.close()


def build_consumer(wishes: DlrWishes, config: KannelConfig) -> EventConsumer | None:
    """The dlr-url consumer for the outbox, when the listener is on (None otherwise)."""
    if not config.enabled:
        return None
    return KannelDlrConsumer(wishes, frozenset(config.dlr_url_origins))


class KannelDlrConsumer:
    """Calls sendsms dlr-urls for the status events of the messages that asked."""

    def __init__(
        self, wishes: DlrWishes, origins: frozenset[str], *, timeout: float = CALL_TIMEOUT
    ) -> None:
        self._wishes = wishes
        self._origins = origins
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    @property
    def name(self) -> str:
        return CONSUMER_NAME

    @property
    def wants_phi(self) -> bool:
        return False  # the receiver it reports is its own copy, as the client wrote it

    def accepts(self, event_type: str) -> bool:
        return event_type == MESSAGE_STATUS

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def close(self) -> None:
        """The outbox's `Closable`: called when its lanes stop."""
        await self.aclose()

    async def deliver(self, event: OutboxEvent) -> None:
        if event.type != MESSAGE_STATUS or event.message_id is None:
            return
        wish = await self._wishes.wish(event.message_id)
        if wish is None:
            return  # not sent through sendsms with a dlr-url
        kind = report_type(str(event.data.get("state", "")), wish.mask)
        if kind is None:
            return
        # Status events carry ids of smsgw's own: `%F`, the carrier's id of the first
        # part on the event's route, is looked up in the message's `sent` event.
        carrier_id = (
            await self._wishes.carrier_id(event.message_id, event.route)
            if "%F" in wish.url
            else None
        )
        url = fill_escapes(wish.url, escape_values(event, wish, kind, carrier_id))
        if kannel.url_origin(url) not in self._origins:
            # The allowlist changed since accept (or an escape changed the origin).
            log.warning("kannel_dlr_origin_refused", message_id=event.message_id)
            return
        await self._check_address(url)
        await self._call(url, event.message_id, kind)

    async def _check_address(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except OSError:
            raise DeliveryFailed("dns") from None
        if not infos or any(forbidden_address(str(info[4][0])) for info in infos):
            raise DeliveryFailed("forbidden_address")

    async def _call(self, url: str, message_id: str, kind: int) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(resolver=GuardedResolver()),
                trust_env=False,  # no proxy from the environment: the URL is the peer
            )
        try:
            async with self._session.get(url, allow_redirects=False) as response:
                status = response.status
                await response.read()
        except TimeoutError:
            raise DeliveryFailed("timeout") from None
        except aiohttp.ClientSSLError:
            raise DeliveryFailed("tls") from None
        except aiohttp.ClientError:
            raise DeliveryFailed("connect") from None
        if 300 <= status < 400:
            raise DeliveryFailed("redirect")
        if not 200 <= status < 300:
            raise DeliveryFailed(f"http_{status}")
        log.info("kannel_dlr_called", message_id=message_id, report=kind, status=status)
