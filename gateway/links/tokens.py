"""Short-link tokens: random base62 text from `secrets`, kept only as a hash.

Ten base62 characters are ~59.5 bits (Twilio's length); the default sixteen are ~95
bits, beyond scanning by brute force (5-6 character tokens have been). The store keeps
SHA-256 of a token, so a copy of the database cannot be turned into working links.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string

ALPHABET = string.ascii_letters + string.digits
MIN_LENGTH = 10
MAX_LENGTH = 32
TOKEN = re.compile(rf"^[A-Za-z0-9]{{{MIN_LENGTH},{MAX_LENGTH}}}$")


def mint(length: int) -> str:
    if not MIN_LENGTH <= length <= MAX_LENGTH:
        raise ValueError(f"a token has {MIN_LENGTH} to {MAX_LENGTH} characters")
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii")).digest()
