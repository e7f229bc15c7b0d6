"""Logging: structlog, JSON for machines, console for people, and no PHI either way.

`redact_phi` runs last before rendering. It drops every field whose name says it holds
a number or a body, and blanks anything in any other string value that looks like a
phone number, so a careless `log.info(..., detail=str(exc))` cannot leak one.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

PHI_KEYS = frozenset(
    {
        "to",
        "body",
        "text",
        "phone",
        "number",
        "msisdn",
        "recipient",
        "sender",
        "from",
        "from_",
        "destination",
        "source_addr",
        "destination_addr",
        "message",
        "short_message",
        "reference",
        "callback_url",
        "content",
        "name",
        "patient",
    }
)
# A "+" and 7+ digits with separators, or a bare run of 8-15 digits: numbers, not the
# dates, times, addresses and counters that logs are full of.
_NUMBER_LIKE = re.compile(r"\+\d[\d ().-]{5,}\d|(?<![\w.:-])\d{8,15}(?![\w.:-])")
REDACTED = "[redacted]"


def redact_phi(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event):
        if key == "event":
            continue
        if key.lower() in PHI_KEYS:
            event[key] = REDACTED
        elif isinstance(event[key], str):
            event[key] = _NUMBER_LIKE.sub(REDACTED, event[key])
    if isinstance(event.get("event"), str):
        event["event"] = _NUMBER_LIKE.sub(REDACTED, event["event"])
    return event


def shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.format_exc_info,
        redact_phi,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def exception_summary(error: BaseException) -> str:
    """Type and place of an exception, never its message (which may quote PHI)."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f" at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else ""
    return f"{type(error).__name__}{where}"


def configure(format: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    use_json = format == "json" or (format == "auto" and not stream.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
    )
    structlog.configure(
        processors=[*shared_processors(), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    # aiohttp and asyncio log through stdlib logging: keep their warnings, in one place.
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
