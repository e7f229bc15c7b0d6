"""Kannel's `sendsms` request, read the way Kannel 1.4 reads it, mapped onto smsgw.

Theory of operation. `parse_get` (CGI parameters from the query string or a form body)
and `parse_post` (Kannel's POST: the text is the body, the rest `X-Kannel-*` headers)
give a `KannelRequest` of raw values. `check` then walks the checks in the order
`smsbox_req_sendsms` and `smsbox_req_handle` (gw/smsbox.c) do, answering with Kannel's
exact status and text wherever Kannel would refuse, so a client sees the same answer
for the same mistake. What Kannel would accept but smsgw does not do (a UDH, a message
class, binary data, ...) is refused next, with a text in Kannel's style, never ignored.
What is left becomes a `SendPlan`: the fields of smsgw's own send request plus the
delivery report wish. Authentication is not here (the listener maps credentials to a
token); nothing here does I/O, and no answer quotes a value that was sent.
"""

from __future__ import annotations

import codecs
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

# Kannel's answers (gw/smsbox.c). Status and text are what a client parses.
ACCEPTED = (202, "0: Accepted for delivery")
QUEUED = (202, "3: Queued for later delivery")  # Kannel's answer while no SMSC is up
AUTH_FAILED = (403, "Authorization failed for sendsms")
NOT_ROUTABLE = (403, "Not routable. Do not try again.")
TEMPORARY = (503, "Temporal failure, try again later.")
UNKNOWN_REQUEST = (404, "Unknown request.")
MISSING_TO = (400, "Missing receiver number, rejected")
MISSING_TO_POST = (400, "Missing receiver(s) number(s), rejected")
EMPTY_TO = (400, "Empty receiver number not allowed, rejected")
INVALID_CONTENT_TYPE = (400, "Invalid content-type")
UNSUPPORTED_CONTENT_TYPE = (415, "Unsupported content-type, rejected")
DENIED = (400, "Number(s) has/have been denied by white- and/or black-lists.")

UNDEFINED = -1  # Kannel's SMS_PARAM_UNDEFINED
NUMBER_CHARS = frozenset("0123456789 +-")  # Kannel's default sendsms-chars
ACCOUNT_MAX_LEN = 64
MAX_SMS_OCTETS = 140
CODING_7BIT, CODING_8BIT, CODING_UCS2 = 0, 1, 2
# dlr-mask bits smsgw reports (Kannel's DLR_SUCCESS, DLR_FAIL, DLR_BUFFERED,
# DLR_SMSC_SUCCESS, DLR_SMSC_FAIL); 32 (intermediate) and 64 it has none of.
DLR_DELIVERED, DLR_FAILED, DLR_BUFFERED, DLR_SMSC_SUCCESS, DLR_SMSC_FAIL = 1, 2, 4, 8, 16
DLR_SUPPORTED = 31
# Kannel's priority 0 (lowest) to 3 (highest) onto smsgw's classes.
PRIORITY_CLASSES = ("bulk", "normal", "high", "critical")

_INT_PARAMS = (
    "dlr-mask",
    "mclass",
    "pid",
    "rpi",
    "alt-dcs",
    "mwi",
    "coding",
    "compress",
    "validity",
    "deferred",
    "priority",
)
_HEADER_STRINGS = {
    "x-kannel-from": "from",
    "x-kannel-to": "to",
    "x-kannel-username": "username",
    "x-kannel-password": "password",
    "x-kannel-smsc": "smsc",
    "x-kannel-dlr-url": "dlr-url",
    "x-kannel-account": "account",
    "x-kannel-binfo": "binfo",
    "x-kannel-meta-data": "meta-data",
}
_HEADER_INTS = {f"x-kannel-{name}": name for name in _INT_PARAMS}
# Kannel's POST types: HTML and WML are read as text (Kannel then refuses them with 415
# after the credential and receiver checks), XML as a whole request; smsgw takes the
# first two only and answers the others as Kannel answers HTML.
_POST_TYPES = (
    "text/plain",
    "application/octet-stream",
    "text/html",
    "text/vnd.wap.wml",
    "text/xml",
)
_LEADING_INT = re.compile(rb"\s*([+-]?[0-9]+)")


class Refused(Exception):
    """A request Kannel's way of answering refuses: `status` and `text` are the answer."""

    def __init__(self, answer: tuple[int, str]) -> None:
        super().__init__(answer[1])
        self.status, self.text = answer


def _field(text: str) -> Refused:
    """Kannel's `field_error`: 400 and a text naming the field."""
    return Refused((400, text))


def _unsupported(name: str) -> Refused:
    return _field(f"{name} field not supported by this gateway, rejected")


@dataclass(frozen=True, slots=True)
class KannelRequest:
    """Raw sendsms values: strings as bytes (their charset is decided later), numbers
    read as Kannel's `sscanf("%d")` does (UNDEFINED when absent or not a number)."""

    values: Mapping[str, bytes]
    numbers: Mapping[str, int]
    post: bool = False
    content_type: str = ""
    charset: str | None = None

    def get(self, name: str) -> bytes | None:
        return self.values.get(name)

    def number(self, name: str) -> int:
        return self.numbers.get(name, UNDEFINED)

    @property
    def username(self) -> str | None:
        raw = self.values.get("username", self.values.get("user"))
        return None if raw is None else raw.decode("utf-8", "replace")

    @property
    def password(self) -> str | None:
        raw = self.values.get("password", self.values.get("pass"))
        return None if raw is None else raw.decode("utf-8", "replace")


def scan_int(raw: bytes | None) -> int:
    """`sscanf(value, "%d")`: a leading integer, else UNDEFINED."""
    if raw is None:
        return UNDEFINED
    m = _LEADING_INT.match(raw)
    if m is None:
        return UNDEFINED
    value = int(m.group(1))
    return value if -(2**31) <= value < 2**31 else UNDEFINED


def parse_get(query: str | bytes) -> KannelRequest:
    """CGI parameters (a query string, or a form-encoded POST body); the first of a
    repeated name counts, as in Kannel's `http_cgi_variable`."""
    text = query.decode("latin-1") if isinstance(query, bytes) else query
    values: dict[str, bytes] = {}
    for name, value in urllib.parse.parse_qsl(text, keep_blank_values=True, encoding="latin-1"):
        values.setdefault(name, value.encode("latin-1"))
    for old, new in (("dlrurl", "dlr-url"), ("dlrmask", "dlr-mask")):  # deprecated names
        if new not in values and old in values:
            values[new] = values[old]
    numbers = {n: scan_int(values.get(n)) for n in _INT_PARAMS}
    return KannelRequest(values, numbers)


def parse_post(headers: Iterable[tuple[str, str]], body: bytes) -> KannelRequest:
    """Kannel's POST: `text/plain` or `application/octet-stream` body, X-Kannel headers.

    Raises `Refused` for a content type Kannel would not take (its answers)."""
    values: dict[str, bytes] = {}
    numbers: dict[str, int] = {}
    content_type, charset = "", None
    for name, value in headers:
        key = name.lower()
        if key == "content-type":
            content_type, charset = _content_type(value)
        elif key == "x-kannel-udh":
            values["udh"] = _udh_header(value.strip())
        elif key in _HEADER_STRINGS:
            values[_HEADER_STRINGS[key]] = value.strip().encode("latin-1", "replace")
        elif key in _HEADER_INTS:
            numbers[_HEADER_INTS[key]] = scan_int(value.encode("latin-1", "replace"))
    if content_type not in _POST_TYPES:
        raise Refused(INVALID_CONTENT_TYPE)
    values["text"] = body
    if numbers.get("coding", UNDEFINED) == UNDEFINED:
        binary = content_type == "application/octet-stream"
        numbers["coding"] = CODING_8BIT if binary else CODING_7BIT
    return KannelRequest(values, numbers, True, content_type, charset)


def _udh_header(value: str) -> bytes:
    """X-Kannel-UDH: hex, else URL-encoded (Kannel tries both in that order)."""
    try:
        return bytes.fromhex(value)
    except ValueError:
        return urllib.parse.unquote_to_bytes(value)


def _content_type(value: str) -> tuple[str, str | None]:
    kind, _, params = value.partition(";")
    charset = None
    for param in params.split(";"):
        key, _, val = param.strip().partition("=")
        if key.lower() == "charset" and val:
            charset = val.strip('"')
    return kind.strip().lower(), charset


@dataclass(frozen=True, slots=True)
class SendPlan:
    """What a sendsms request asks of smsgw, in smsgw's terms (one per receiver)."""

    receivers: tuple[str, ...]
    body: str
    route: str | None
    priority: str | None
    category: str | None
    validity_minutes: int | None
    deferred_minutes: int | None
    dlr_mask: int
    dlr_url: str | None
    sender: str

    def send_request(self, to: str, now: float) -> dict[str, object]:
        """The JSON-shaped send request for one receiver (checked by smsgw's decoder)."""
        req: dict[str, object] = {"to": to, "body": self.body}
        if self.route is not None:
            req["route"] = self.route
        if self.priority is not None:
            req["priority"] = self.priority
        if self.category is not None:
            req["category"] = self.category
        if self.deferred_minutes is not None and self.deferred_minutes > 0:
            req["send_at"] = _rfc3339(now + self.deferred_minutes * 60)
        if self.validity_minutes is not None:
            req["expires_at"] = _rfc3339(now + self.validity_minutes * 60)
        return req


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def check(req: KannelRequest, *, sender: str | None, origins: frozenset[str]) -> SendPlan:
    """Kannel's checks in Kannel's order, then smsgw's refusals; raises `Refused`.

    `sender` is the user's configured sender (the only `from` it may name; without
    one the route's own source address is used, as with Kannel's default-sender);
    `origins` the dlr-url origins allowed (`scheme://host[:port]`, lower case)."""
    to = req.get("to")
    if to is None:
        raise Refused(MISSING_TO_POST if req.post else MISSING_TO)
    if not to:
        raise Refused(EMPTY_TO)
    if req.post and req.content_type not in _POST_TYPES[:2]:
        raise Refused(UNSUPPORTED_CONTENT_TYPE)
    udh = req.get("udh") or None
    if udh is not None and len(udh) != udh[0] + 1:
        raise _field("UDH field misformed, rejected")
    if udh is not None and len(udh) > MAX_SMS_OCTETS:
        raise _field("UDH field is too long, rejected")
    receivers = _receivers(to)
    from_ = req.get("from")
    account = req.get("account")
    if account and (len(account) > ACCOUNT_MAX_LEN or any(c in account for c in b"[]\n\r")):
        raise _field("Account field misformed or too long, rejected")
    dlr_url = req.get("dlr-url") or None
    if dlr_url is not None and not dlr_url[:8].lower().startswith((b"http://", b"https://")):
        raise _field("DLR-URL field misformed, rejected")
    n = req.number
    for name, low, high, label in (
        ("dlr-mask", -1, 66, "DLR-Mask"),  # 66 = 0b1000010 in Debian's 1.4.5
        ("mclass", -1, 3, "MClass"),
        ("pid", -1, 255, "PID"),
        ("rpi", -1, 2, "RPI"),
        ("alt-dcs", -1, 1, "Alt-DCS"),
        ("mwi", -1, 7, "MWI"),
        ("coding", -1, 2, "Coding"),
        ("compress", -1, 1, "Compress"),
    ):
        if not low <= n(name) <= high:
            raise _field(f"{label} field misformed, rejected")
    if n("validity") < UNDEFINED:
        raise _field("Validity field misformed, rejected")
    if n("deferred") < UNDEFINED:
        raise _field("Deferred field misformed, rejected")
    priority = n("priority")
    if priority != UNDEFINED and not 0 <= priority <= 3:
        raise _field("Priority field misformed, rejected")
    coding = n("coding")
    if coding == UNDEFINED:
        coding = CODING_8BIT if udh else CODING_7BIT
    body = _decode_text(req, coding)
    # Past Kannel's own checks: what Kannel would take and smsgw does not do.
    if udh is not None:
        raise _unsupported("UDH")
    for name, label in (
        ("mclass", "MClass"),
        ("pid", "PID"),
        ("rpi", "RPI"),
        ("alt-dcs", "Alt-DCS"),
        ("mwi", "MWI"),
    ):
        if n(name) != UNDEFINED:
            raise _unsupported(label)
    if n("compress") == 1:
        raise _unsupported("Compress")
    if coding == CODING_8BIT:
        raise _field("Coding 1 (8-bit binary) not supported by this gateway, rejected")
    for name, label in (("binfo", "BInfo"), ("meta-data", "Meta-Data")):
        if req.get(name):
            raise _unsupported(label)
    if not body:
        raise _field("Text missing, rejected")
    if from_ and (sender is None or from_.decode("latin-1") != sender):
        raise _field("Sender not allowed for this user, rejected")
    mask = max(n("dlr-mask"), 0)
    if mask & ~DLR_SUPPORTED:
        raise _field("DLR-Mask bits 32 and 64 not supported by this gateway, rejected")
    url = None if dlr_url is None else dlr_url.decode("latin-1")
    if (url is None) != (mask == 0):
        raise _field("DLR-URL and DLR-Mask go together, rejected")
    if url is not None and url_origin(url) not in origins:
        raise _field("DLR-URL origin not allowed, rejected")
    smsc = req.get("smsc")
    validity, deferred = n("validity"), n("deferred")
    return SendPlan(
        receivers=receivers,
        body=body,
        route=smsc.decode("latin-1") if smsc else None,
        priority=None if priority == UNDEFINED else PRIORITY_CLASSES[priority],
        category=account.decode("latin-1") if account else None,
        validity_minutes=None if validity == UNDEFINED else validity,
        deferred_minutes=None if deferred == UNDEFINED else deferred,
        dlr_mask=mask,
        dlr_url=url,
        sender=(from_.decode("latin-1") if from_ else sender) or "",
    )


def _receivers(to: bytes) -> tuple[str, ...]:
    """Kannel's multi-cast `to` (space-separated); a receiver with a character outside
    `sendsms-chars` is denied, and if none is left the request is refused."""
    allowed: list[str] = []
    for word in to.split():
        text = word.decode("latin-1")
        if set(text) <= NUMBER_CHARS and text not in allowed:
            allowed.append(text)
    if not allowed:
        raise Refused(DENIED)
    if len(allowed) != len(dict.fromkeys(to.split())):
        # Kannel sends to the rest and lists the denied numbers in its answer; smsgw
        # never writes a number into an answer, so it refuses the request instead.
        raise Refused(DENIED)
    return tuple(allowed)


def _decode_text(req: KannelRequest, coding: int) -> str:
    """The text in its charset (Kannel's default: UTF-8 for 7-bit, UTF-16BE for UCS-2);
    8-bit data is left undecoded (it is refused later)."""
    raw = req.get("text") or b""
    charset = req.get("charset")
    name = charset.decode("latin-1") if charset else req.charset
    if coding == CODING_8BIT and name is None:
        return raw.decode("latin-1")
    if name is None:
        name = "UTF-16BE" if coding == CODING_UCS2 else "UTF-8"
    try:
        codecs.lookup(name)
        return raw.decode(name)
    except (LookupError, UnicodeDecodeError):
        raise _field("Charset or body misformed, rejected") from None


def url_origin(url: str) -> str | None:
    """`scheme://host[:port]` of an http(s) URL, lower case, default ports dropped."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in ("http", "https") or not host or parts.username or parts.password:
        return None
    if ":" in host:
        host = f"[{host}]"
    default = 80 if scheme == "http" else 443
    return f"{scheme}://{host}" if port in (None, default) else f"{scheme}://{host}:{port}"
