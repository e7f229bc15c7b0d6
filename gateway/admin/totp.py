"""TOTP second factor (RFC 6238, 30 s steps, 6 digits) with replay refusal.

A code is accepted for the current step or one step either side (clock drift), and
only for a step later than the last one the user spent: `match_step` returns the step
so the caller stores it atomically (`PanelStore.spend_totp_step`), which refuses a
second use of the same code even by two concurrent requests.
"""

from __future__ import annotations

import hmac

import pyotp
import segno

STEP_SECONDS = 30
DIGITS = 6
DRIFT_STEPS = 1


def new_secret() -> str:
    """160 random bits in base32, the size RFC 4226 recommends."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, username: str, issuer: str) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(
        name=username, issuer_name=issuer
    )


def qr_svg_data_uri(uri: str) -> str:
    """The enrolment QR code as an SVG `data:` URI (allowed by `img-src 'self' data:`)."""
    return str(segno.make(uri, error="m").svg_data_uri(scale=5, border=2, title="TOTP enrolment"))


def code_at(secret: str, step: int) -> str:
    return str(pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).generate_otp(step))


def match_step(secret: str, code: str, now: float, last_step: int) -> int | None:
    """The step `code` belongs to, if valid now and later than `last_step`; else None."""
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not code.isdigit():
        return None
    current = int(now // STEP_SECONDS)
    found = None
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        # Compare every candidate (no early exit) so timing says nothing about which.
        if hmac.compare_digest(code_at(secret, step), code) and step > last_step:
            found = step
    return found
