"""The directory over LDAP, synchronous (ldap3): `service.py` runs each call in a thread.

Theory of operation. Every call opens its own connection over TLS (LDAPS, or StartTLS
that must succeed), the certificate checked against `ca_file` and its name against the
URL's host by Python's own TLS (`CheckedTls`: ldap3's hostname check is turned off in
favour of `ssl`'s). The URLs are tried in order for the *connection* only: once one
answers, its answer stands, so a wrong password is bound once, on one server, and never
retried. Referrals are never followed (`auto_referrals=False`); a referral among the
search results is not a user.

A sign-in: the service account binds and finds the user by `login_attribute` (the typed
name escaped with `escape_filter_chars`) within `user_filter`; an account the
directory marks disabled or locked is refused without a bind; otherwise one bind as the
user checks the password; then the service account reads the user's groups. A recheck
finds the user by the stable id and reads the groups again, with no password.

Errors that mean "the directory cannot answer" (no connection, a timeout, a TLS or
certificate failure, a refused service bind) raise `DirectoryUnavailable` with a
reason that names no secret; everything else is an answer.
"""

from __future__ import annotations

import contextlib
import math
import ssl
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import ldap3
from ldap3.core import exceptions as ldap_errors
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from gateway.directory.settings import DirectoryConfig

# AD's "LDAP_MATCHING_RULE_IN_CHAIN": member-of, through any depth of nesting.
IN_CHAIN = "1.2.840.113556.1.4.1941"
AD_ACCOUNTDISABLE = 0x2  # userAccountControl bit
# AD's invalidCredentials carries a sub-code: 775 locked out, 533 disabled, 701/532 expired.
AD_LOCKED, AD_DISABLED = "data 775", "data 533"
STATE_ATTRIBUTES = ("userAccountControl", "lockoutTime", "pwdAccountLockedTime")


class DirectoryUnavailable(Exception):
    """The directory did not answer; `reason` is safe to log and show (no secret)."""

    def __init__(self, reason: str, *, tls: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tls = tls


@dataclass(frozen=True, slots=True)
class Entry:
    dn: str
    stable_id: str
    name: str
    blocked: Literal["disabled", "locked"] | None


def normal_dn(dn: str) -> str:
    """A DN compared case- and space-insensitively (`CN=A, DC=x` == `cn=a,dc=x`)."""
    return ",".join(f"{a.casefold()}={v.casefold()}" for a, v, _ in parse_dn(dn, strip=True))


def user_search_filter(config: DirectoryConfig, username: str) -> str:
    return f"(&{config.user_filter}({config.login_attribute}={escape_filter_chars(username)}))"


def id_filter(config: DirectoryConfig, stable_id: str) -> str:
    if config.id_attribute.casefold() == "objectguid":
        raw = uuid.UUID(stable_id).bytes_le  # AD stores the GUID little-endian
        escaped = "".join(f"\\{b:02x}" for b in raw)
        return f"(objectGUID={escaped})"
    return f"({config.id_attribute}={escape_filter_chars(stable_id)})"


def ad_groups_filter(user_dn: str) -> str:
    return f"(member:{IN_CHAIN}:={escape_filter_chars(user_dn)})"


def member_filter(attribute: str, dns: Iterable[str]) -> str:
    terms = "".join(f"({attribute}={escape_filter_chars(dn)})" for dn in dns)
    return f"(|{terms})"


def blocked_state(attributes: dict[str, list[bytes]]) -> Literal["disabled", "locked"] | None:
    """Disabled or locked as the directory marks it: AD userAccountControl bit 2 or a
    lockoutTime, OpenLDAP ppolicy's pwdAccountLockedTime."""
    lower = {k.casefold(): v for k, v in attributes.items()}
    uac = lower.get("useraccountcontrol")
    if uac and uac[0].strip().isdigit() and int(uac[0]) & AD_ACCOUNTDISABLE:
        return "disabled"
    lockout = lower.get("lockouttime")
    if lockout and lockout[0].strip() not in (b"", b"0"):
        return "locked"
    if lower.get("pwdaccountlockedtime"):
        return "locked"
    return None


def stable_id_of(config: DirectoryConfig, raw: list[bytes]) -> str | None:
    if not raw:
        return None
    if config.id_attribute.casefold() == "objectguid":
        return str(uuid.UUID(bytes_le=raw[0])) if len(raw[0]) == 16 else None
    try:
        return raw[0].decode() or None
    except UnicodeDecodeError:
        return raw[0].hex()


class CheckedTls(ldap3.Tls):  # type: ignore[misc]  # ldap3 is untyped
    """TLS with Python's own certificate and hostname check (ldap3 turns it off and
    checks names with the deprecated `ssl.match_hostname`)."""

    def __init__(self, ca_file: str) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED, ca_certs_file=ca_file)
        self._context = ssl.create_default_context(cafile=ca_file)
        self._context.minimum_version = ssl.TLSVersion.TLSv1_2

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        connection.socket = self._context.wrap_socket(
            connection.socket,
            server_side=False,
            do_handshake_on_connect=True,
            server_hostname=connection.server.host,
        )


def close(conn: ldap3.Connection) -> None:
    """Unbind, or at least close the socket: after a failure unbind itself may fail."""
    try:
        conn.unbind()
    except (ldap_errors.LDAPException, OSError):
        with contextlib.suppress(ldap_errors.LDAPException, OSError):
            conn.strategy.close()
    # A connect that was refused leaves its socket open in ldap3, unbound and unclosed.
    sock = getattr(conn, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


def _tls_problem(e: BaseException) -> bool:
    text = str(e)
    return isinstance(e, ssl.SSLError) or "CERTIFICATE" in text or "certificate" in text


def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split())[:300]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class LdapClient:
    def __init__(self, config: DirectoryConfig, service_password: str) -> None:
        self.config = config
        self._service_password = service_password
        self._tls = CheckedTls(config.ca_file or "")
        self._mapped = {normal_dn(dn) for dn in config.roles}

    # -- connections ----------------------------------------------------------------------

    def _open(self, user: str, password: str) -> ldap3.Connection:
        """A TLS connection to the first URL that answers, not yet bound."""
        problems: list[str] = []
        tls_failed = False
        for url in self.config.urls:
            parts = urlsplit(url)
            secure = parts.scheme.lower() == "ldaps"
            server = ldap3.Server(
                parts.hostname or "",
                port=parts.port or (636 if secure else 389),
                use_ssl=secure,
                tls=self._tls,
                get_info=ldap3.NONE,
                connect_timeout=self.config.connect_timeout,
            )
            conn = ldap3.Connection(
                server,
                user=user,
                password=password,
                auto_bind=ldap3.AUTO_BIND_NONE,
                auto_referrals=False,
                raise_exceptions=False,
                read_only=True,
                receive_timeout=math.ceil(self.config.timeout),  # ldap3 packs it as an int
                client_strategy=ldap3.SYNC,
            )
            try:
                conn.open()
                if not secure and not conn.start_tls():
                    raise DirectoryUnavailable(f"{url}: StartTLS refused", tls=True)
                return conn
            except DirectoryUnavailable as e:
                close(conn)
                problems.append(e.reason)
                tls_failed = True
            except (ldap_errors.LDAPException, OSError) as e:
                close(conn)
                tls_failed = tls_failed or _tls_problem(e)
                problems.append(f"{url}: {_reason(e)}")
        raise DirectoryUnavailable("; ".join(problems), tls=tls_failed)

    def _service(self) -> ldap3.Connection:
        conn = self._open(self.config.bind_dn, self._service_password)
        try:
            bound = conn.bind()
        except ldap_errors.LDAPException as e:
            close(conn)
            raise DirectoryUnavailable(f"service bind: {_reason(e)}") from None
        if not bound:
            close(conn)
            raise DirectoryUnavailable(
                f"the service account's bind was refused ({conn.result.get('description')})"
            )
        return conn

    def _search(
        self, conn: ldap3.Connection, base: str, query: str, attributes: Iterable[str]
    ) -> list[dict[str, Any]]:
        """Entries only: referrals and continuation references are dropped."""
        try:
            conn.search(
                base,
                query,
                search_scope=ldap3.SUBTREE,
                attributes=list(attributes),
                size_limit=1000,
                time_limit=max(1, int(self.config.timeout)),
            )
        except ldap_errors.LDAPException as e:
            raise DirectoryUnavailable(f"search: {_reason(e)}") from None
        code = conn.result.get("result")
        if code in (51, 52, 80):  # busy, unavailable, other
            raise DirectoryUnavailable(f"search: {conn.result.get('description')}")
        return [r for r in conn.response or () if r.get("type") == "searchResEntry"]

    # -- what the service asks ------------------------------------------------------------

    def probe(self) -> None:
        """Bind as the service account and leave: raises `DirectoryUnavailable`."""
        close(self._service())

    def find(self, username: str) -> Entry | None:
        conn = self._service()
        try:
            return self._one(conn, user_search_filter(self.config, username))
        finally:
            close(conn)

    def find_by_id(self, stable_id: str) -> Entry | None:
        conn = self._service()
        try:
            return self._one(conn, id_filter(self.config, stable_id))
        finally:
            close(conn)

    def _one(self, conn: ldap3.Connection, query: str) -> Entry | None:
        c = self.config
        wanted = (c.login_attribute, c.id_attribute, *STATE_ATTRIBUTES)
        found = self._search(conn, c.user_base, query, wanted)
        if len(found) != 1:  # none, or a name that is not unique: nobody
            return None
        raw: dict[str, list[bytes]] = found[0].get("raw_attributes") or {}
        by_name = {k.casefold(): v for k, v in raw.items()}
        stable = stable_id_of(c, by_name.get(c.id_attribute.casefold(), []))
        names = by_name.get(c.login_attribute.casefold(), [])
        if stable is None or not names:
            return None
        return Entry(found[0]["dn"], stable, names[0].decode(errors="replace"), blocked_state(raw))

    def check_password(self, dn: str, password: str) -> Literal["ok", "wrong", "locked"]:
        """One simple bind as the user; never called with an empty password."""
        if not password:
            raise ValueError("an empty password is never sent to the directory")
        conn = self._open(dn, password)
        try:
            if conn.bind():
                return "ok"
            message = str(conn.result.get("message") or "")
            return "locked" if AD_LOCKED in message or AD_DISABLED in message else "wrong"
        except ldap_errors.LDAPException as e:
            raise DirectoryUnavailable(f"user bind: {_reason(e)}") from None
        finally:
            close(conn)

    def mapped_groups(self, user_dn: str) -> set[str]:
        """The mapped groups (normal DNs) the user is in, directly or through nesting."""
        conn = self._service()
        try:
            if self.config.group_mode == "ad_nested":
                found = self._search(
                    conn, self.config.groups_under, ad_groups_filter(user_dn), ["cn"]
                )
                return {normal_dn(r["dn"]) for r in found} & self._mapped
            return self._walk(conn, user_dn) & self._mapped
        finally:
            close(conn)

    def _walk(self, conn: ldap3.Connection, user_dn: str) -> set[str]:
        """Breadth first up the `member` links, `max_group_depth` levels at most."""
        seen: set[str] = set()
        frontier = [user_dn]
        for _ in range(self.config.max_group_depth):
            query = member_filter(self.config.member_attribute, frontier)
            found = self._search(conn, self.config.groups_under, query, ["cn"])
            frontier = [r["dn"] for r in found if normal_dn(r["dn"]) not in seen]
            seen.update(normal_dn(dn) for dn in frontier)
            if not frontier:
                break
        return seen
