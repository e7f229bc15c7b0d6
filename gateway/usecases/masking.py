"""How personal data looks masked: enough to tell two apart, not enough to call anyone.

Two styles, both kept as their front ends have always shown them: the panel's
(`+1 555 ••• ••67`: the country code, the first three national digits and the last
two) and the API's compact one (`+155•••••67`). A body masked is its length only.
"""

from __future__ import annotations

import phonenumbers

DOT = "•"


def mask_number(e164: str) -> str:
    """The panel's style: `+15551234567` → `+1 555 ••• ••67`."""
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


def mask_number_compact(e164: str) -> str:
    """The API's style: `+15551234567` → `+155•••••67`."""
    if len(e164) <= 6:
        return DOT * len(e164)
    return e164[:4] + DOT * (len(e164) - 6) + e164[-2:]
