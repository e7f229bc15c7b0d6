"""What the panel shows of personal data: masked by default, whole only on reveal.

A masked number keeps the country code, the first three national digits and the
last two (`+1 555 ••• ••67`): enough to tell two numbers apart on a screen, not
enough to call anyone. Roles without PHI rights (viewer, auditor: see
`routing.PHI_READERS`) get neither.
"""

from __future__ import annotations

import phonenumbers

DOT = "•"


def mask_number(e164: str) -> str:
    """`+15551234567` → `+1 555 ••• ••67`."""
    try:
        parsed = phonenumbers.parse(e164, None)
        country, national = str(parsed.country_code), str(parsed.national_number)
    except phonenumbers.NumberParseException:
        country, national = "", e164.lstrip("+")
    if len(national) < 6:
        return (f"+{country} " if country else "") + DOT * len(national)
    hidden = len(national) - 5
    groups = [national[:3]]
    # Bullets in groups of three; the last one to three go with the two visible digits.
    while hidden > 3:
        groups.append(DOT * 3)
        hidden -= 3
    groups.append(DOT * hidden + national[-2:])
    return (f"+{country} " if country else "") + " ".join(groups)


def mask_body(body: str) -> str:
    """A body's placeholder: its length only."""
    return f"{DOT * 6} ({len(body)} characters)"
