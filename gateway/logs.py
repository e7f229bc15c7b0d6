"""Logging: structlog, JSON for machines, console for people, and no PHI either way.

`redact_phi` runs last before rendering. It drops every field whose name says it holds
a number or a body, and blanks anything in any other string value that looks like a
phone number, so a careless `log.info(..., detail=str(exc))` cannot leak one.

Exceptions are logged as their traceback's frames and types without their messages
(`exc_info_without_messages`): a message may quote what was sent (aiohttp's parser
errors quote the request's bytes). Everything logged through the standard library
(aiohttp, asyncio, anything else) goes through the same processors and renderer.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
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


def traceback_without_messages(error: BaseException) -> str:
    """Frames (file, line, function) and exception types, causes included; no
    messages, and no source lines (a literal in one could be data)."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    parts: list[str] = []
    for e in reversed(chain):
        parts.append("Traceback (most recent call last):\n")
        parts.extend(
            f'  File "{f.filename}", line {f.lineno}, in {f.name}\n'
            for f in traceback.extract_tb(e.__traceback__)
        )
        parts.append(f"{type(e).__module__}.{type(e).__qualname__} (message withheld)\n")
    return "".join(parts)


def exc_info_without_messages(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    exc_info = event.pop("exc_info", None)
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, tuple):
        exc_info = exc_info[1]
    if isinstance(exc_info, BaseException):
        event["exception"] = traceback_without_messages(exc_info)
    return event


def shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        exc_info_without_messages,
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


class _LossyPrintLogger(structlog.PrintLogger):
    """A line that cannot be written is dropped, never raised: with stderr's reader gone
    (a closed pipe, journald restarted) a log call raised BrokenPipeError in whatever
    code made it, failing sends and, in a driver's close, the shutdown itself."""

    def msg(self, message: str) -> None:
        try:
            super().msg(message)
        except (OSError, ValueError):  # ValueError: the stream is closed
            return

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]  # TextIO stream
    """Ours, so that `configure()` can run again without stacking handlers."""


def first_line_only(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A library's message without what it appended below (asyncio adds the failed
    task's repr, which quotes the exception's message; the exception itself is logged
    by `exc_info_without_messages`)."""
    if isinstance(event.get("event"), str):
        event["event"] = event["event"].split("\n", 1)[0]
    return event


# Each module's logger is built once, at its first call, with the level filter then in
# force (fast). The test suite turns this off: it runs `smsgw` commands in-process, and a
# logger cached under one command's level would hide later tests' events from them.
CACHE_LOGGERS = True


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
        logger_factory=lambda *_: _LossyPrintLogger(stream),
        cache_logger_on_first_use=CACHE_LOGGERS,
    )
    # aiohttp, asyncio and any other library log through the standard library: their
    # records take the same processors (redaction included) and the same renderer.
    handler = _Handler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                first_line_only,
                *shared_processors(),
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
