"""The JSON error body, for answers written below the application (no handler ran)."""

from __future__ import annotations

import msgspec

from gateway.errors import ApiError


def error_body(status: int, code: str, message: str) -> bytes:
    return msgspec.json.encode(ApiError(status, code, message).body())
