"""The template language: literal text and `{name}` or `{name:format}` placeholders.

That is all it can do: a placeholder names one declared variable and, for date and
time types, one of a fixed set of formats. There is no attribute access, indexing,
expression or call (`str.format` would let `{clinic.__class__}` reach into objects),
so a template cannot read anything it was not handed. `{{` and `}}` are literal
braces; `{link:NAME}` is kept as written, for the accept path to make a short URL of;
any other brace is a syntax error, reported with its position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# `{link:NAME}` is not a variable: it stays in the text as written, and the accept path
# turns it into the message's own short URL (gateway/links/placeholders.py).
LINK = re.compile(r"\{link:[^{}\s]{1,64}\}")
_TOKEN = re.compile(
    rf"\{{\{{|\}}\}}|{LINK.pattern}|\{{([a-z][a-z0-9_]{{0,31}})(?::([a-z_]{{1,16}}))?\}}|[{{}}]"
)


class TemplateSyntaxError(ValueError):
    def __init__(self, position: int, what: str) -> None:
        super().__init__(f"{what} at character {position + 1}")
        self.position = position


@dataclass(frozen=True, slots=True)
class Placeholder:
    name: str
    format: str | None
    start: int
    end: int


Piece = str | Placeholder


def parse(body: str) -> tuple[Piece, ...]:
    """Split `body` into literal strings and placeholders."""
    pieces: list[Piece] = []
    literal: list[str] = []
    at = 0
    for m in _TOKEN.finditer(body):
        literal.append(body[at : m.start()])
        at = m.end()
        token = m.group(0)
        if token in ("{{", "}}"):
            literal.append(token[0])
        elif token.startswith("{link:") and LINK.fullmatch(token):
            literal.append(token)
        elif m.group(1) is None:
            raise TemplateSyntaxError(
                m.start(),
                "a lone brace (write {{ or }} for a brace, {name} for a variable;"
                " names are lower case letters, digits and _)",
            )
        else:
            if literal:
                pieces.append("".join(literal))
                literal = []
            pieces.append(Placeholder(m.group(1), m.group(2), m.start(), m.end()))
    literal.append(body[at:])
    if "".join(literal):
        pieces.append("".join(literal))
    return tuple(p for p in pieces if p != "")


def placeholders(pieces: tuple[Piece, ...]) -> list[Placeholder]:
    return [p for p in pieces if isinstance(p, Placeholder)]


def literal_text(pieces: tuple[Piece, ...], gap: str = " ") -> str:
    """The template's own words, each placeholder replaced by `gap` (for the lint)."""
    return "".join(p if isinstance(p, str) else gap for p in pieces)


def fill(pieces: tuple[Piece, ...], values: dict[tuple[str, str | None], str]) -> str:
    """The text with each placeholder replaced by its formatted value (no re-parsing:
    a value containing braces stays as it is)."""
    return "".join(p if isinstance(p, str) else values[(p.name, p.format)] for p in pieces)
