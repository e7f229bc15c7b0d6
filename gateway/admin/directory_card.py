"""The dashboard's sign-in card: whether the directory answers, and how often
a local (break-glass) account was used in the last day. Shown only with `[directory]`."""

from __future__ import annotations

import datetime
from typing import Any

from gateway.app import Gateway

BREAK_GLASS_WINDOW = 24 * 3600.0


def _directory_text(state: str, error: str | None) -> str:
    if state == "up":
        return "Directory answering"
    if state == "down":
        return f"Directory not answering: {error}" if error else "Directory not answering"
    return "Directory not checked yet"


async def sign_in_card(gw: Gateway) -> dict[str, Any] | None:
    if gw.directory is None:
        return None
    now = gw.clock.time()
    count, last = await gw.admin_repo.audit_uses("break_glass_login", now - BREAK_GLASS_WINDOW)
    status = gw.directory.status
    last_text = None
    if last is not None:
        last_text = datetime.datetime.fromtimestamp(last, datetime.UTC).strftime(
            "%Y-%m-%d %H:%M UTC"
        )
    return {
        "directory_up": status.state == "up",
        "directory_text": _directory_text(status.state, status.error),
        "tls_error": status.tls_error,
        "break_glass_24h": count,
        "break_glass_last": last_text,
    }
