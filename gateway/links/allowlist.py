"""Which destinations a link may send people to: an allowlist of hosts and URL prefixes.

An open redirector on the hospital's own domain is a phishing tool, so a destination
is read strictly and refused on anything a browser might read otherwise: a user name
(`https://good.org@evil.org`), a backslash, control characters or spaces, an encoded
slash or dot segment (`/%2e%2e/`), a scheme other than the rule's, a port other than
the rule's, or a host that is not the rule's after IDNA encoding (so a look-alike
name, a Cyrillic letter in place of a Latin one, is another host). A bare host allows https only.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

MAX_URL = 2048
_HOST = re.compile(r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9-]{1,63}$")
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
_DEFAULT_PORT = {"https": 443, "http": 80}


def ascii_host(host: str) -> str | None:
    """The host in lower case, IDNA (punycode) encoded; None if it is not a host name."""
    host = host.rstrip(".").lower()
    try:
        encoded = host.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    return encoded if _HOST.match(encoded) else None


def url_host(url: str) -> str | None:
    """The host of an absolute http(s) URL, or None."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORT or not parts.hostname:
        return None
    return parts.hostname


@dataclass(frozen=True, slots=True)
class Rule:
    scheme: str
    host: str
    subdomains: bool
    port: int
    path: str  # a prefix of the destination's path; "/" for a bare host

    def allows(self, scheme: str, host: str, port: int, path: str) -> bool:
        if scheme != self.scheme or port != self.port:
            return False
        if not (host.endswith("." + self.host) if self.subdomains else host == self.host):
            return False
        return path.startswith(self.path) or path + "/" == self.path


def parse_rule(text: str) -> Rule | str:
    """A rule from its config text, or what is wrong with it."""
    if "://" not in text:
        wild = text.startswith("*.")
        host = ascii_host(text[2:] if wild else text)
        if host is None or "/" in text:
            return 'expected a host ("www.example.org", "*.example.org") or a URL prefix'
        return Rule("https", host, wild, 443, "/")
    found = _parts(text)
    if isinstance(found, str):
        return found
    scheme, host, port, path, parts = found
    if parts.query or parts.fragment:
        return "a URL prefix has no query or fragment"
    return Rule(scheme, host, False, port, path or "/")


def rule_problem(text: str) -> str | None:
    found = parse_rule(text)
    return found if isinstance(found, str) else None


def _parts(url: str) -> tuple[str, str, int, str, urllib.parse.SplitResult] | str:
    """(scheme, IDNA host, port, path, parts) of a strictly read URL, or the problem."""
    if len(url) > MAX_URL:
        return f"longer than {MAX_URL} characters"
    if _BAD_CHARS.search(url):
        return "spaces, control characters and backslashes are not allowed"
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return "not a URL"
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORT or not url.lower().startswith(scheme + "://"):
        return "expected an absolute https:// URL"
    if "@" in parts.netloc or parts.username is not None:
        return "a user name or password in the URL is not allowed"
    host = ascii_host(parts.hostname or "")
    if host is None:
        return "no valid host name (an IP address is not allowed)" if parts.hostname else "no host"
    if host.replace(".", "").isdigit():
        return "no valid host name (an IP address is not allowed)"
    path = parts.path
    lowered = path.lower()
    if "%2f" in lowered or "%5c" in lowered or "//" in path:
        return "an encoded or doubled slash in the path is not allowed"
    segments = urllib.parse.unquote(path).split("/")
    if any(s in (".", "..") for s in segments):
        return "a . or .. segment in the path is not allowed"
    return scheme, host, port or _DEFAULT_PORT[scheme], path, parts


@dataclass(frozen=True, slots=True)
class Allowlist:
    rules: tuple[Rule, ...]

    @classmethod
    def parse(cls, texts: tuple[str, ...]) -> Allowlist:
        return cls(tuple(r for r in map(parse_rule, texts) if isinstance(r, Rule)))

    def problem(self, url: str) -> str | None:
        """Why `url` is not an allowed destination, or None when it is. Never quotes it."""
        found = _parts(url)
        if isinstance(found, str):
            return found
        scheme, host, port, path, _ = found
        if not any(r.allows(scheme, host, port, path or "/") for r in self.rules):
            return "not on the destination allowlist (links.allow)"
        return None

    def normalised(self, url: str) -> str:
        """An allowed URL as it is stored and redirected to: its host IDNA-encoded."""
        found = _parts(url)
        assert not isinstance(found, str), "normalised() takes an allowed URL"
        scheme, host, port, path, parts = found
        netloc = host if port == _DEFAULT_PORT[scheme] else f"{host}:{port}"
        return urllib.parse.urlunsplit((scheme, netloc, path, parts.query, parts.fragment))
