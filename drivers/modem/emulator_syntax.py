"""Words of the emulated modems' AT dialect: error results in the three AT+CMEE forms
(TS 27.007 9.2, TS 27.005 3.2.5) and the syntax of a command line."""

from __future__ import annotations

import re
from typing import Literal

CME_TEXT = {
    3: "operation not allowed",
    4: "operation not supported",
    10: "SIM not inserted",
    11: "SIM PIN required",
    12: "SIM PUK required",
    13: "SIM failure",
    14: "SIM busy",
    16: "incorrect password",
    30: "no network service",
    100: "unknown",
}
CMS_TEXT = {
    300: "ME failure",
    302: "operation not allowed",
    303: "operation not supported",
    304: "invalid PDU mode parameter",
    310: "SIM not inserted",
    311: "SIM PIN required",
    316: "SIM PUK required",
    321: "invalid memory index",
    322: "SIM memory full",
    330: "SMSC address unknown",
    331: "no network service",
    332: "network timeout",
    500: "unknown error",
}
ERROR_LINE = re.compile(r"\+(CME|CMS) ERROR: (\d+)")


class CommandError(Exception):
    """Ends a command with an error result: `kind` None is a plain ERROR."""

    def __init__(self, kind: Literal["CME", "CMS"] | None = None, code: int = 0) -> None:
        super().__init__(f"{kind} {code}")
        self.kind = kind
        self.code = code


def format_error(kind: Literal["CME", "CMS"] | None, code: int, cmee: int) -> str:
    if kind is None or cmee == 0:
        return "ERROR"
    if cmee == 2:
        text = (CME_TEXT if kind == "CME" else CMS_TEXT).get(code)
        if text is not None:
            return f"+{kind} ERROR: {text}"
    return f"+{kind} ERROR: {code}"


def format_reply(reply: str, cmee: int) -> str:
    """A fault's reply as this modem would word it under its AT+CMEE setting."""
    match = ERROR_LINE.fullmatch(reply)
    if match is None:
        return reply
    kind: Literal["CME", "CMS"] = "CME" if match.group(1) == "CME" else "CMS"
    return format_error(kind, int(match.group(2)), cmee)


def split_commands(body: str) -> list[str]:
    """Split `+A=1;+B?` at semicolons outside quotes."""
    commands: list[str] = []
    current: list[str] = []
    quoted = False
    for char in body:
        if char == '"':
            quoted = not quoted
        if char == ";" and not quoted:
            commands.append("".join(current))
            current = []
        else:
            current.append(char)
    commands.append("".join(current))
    return [c.strip() for c in commands if c.strip()] or [""]


def kind_and_args(rest_upper: str, rest: str) -> tuple[str, str]:
    if rest_upper == "?":
        return "read", ""
    if rest_upper == "=?":
        return "test", ""
    if rest_upper.startswith("="):
        return "set", rest[1:].strip()
    return "exec", rest.strip()


def quoted_values(args: str) -> list[str]:
    return [part.strip().strip('"').upper() for part in args.split(",") if part.strip()]


def ints(args: str) -> list[int]:
    parts = [p.strip() for p in args.split(",")]
    if not all(p.isdigit() for p in parts):
        raise CommandError("CMS", 303)
    return [int(p) for p in parts]
