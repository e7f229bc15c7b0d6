"""Reading HL7 v2 fields as plain strings, whatever python-hl7 nested them into.

python-hl7 gives a field as a `Field` of `Repetition`s of components, or as a plain
string, depending on which separators it held. Mappers want repetitions of
unescaped components; these helpers give exactly that, from the field's raw text and
the message's own encoding characters (MSH-1/MSH-2), so a site that uses other
separators than `|^~\\&` is read correctly.
"""

from __future__ import annotations

from collections.abc import Sequence

import hl7


def segments(message: hl7.Message, name: str) -> list[hl7.Segment]:
    """Every segment called `name`, in order (none if it is absent)."""
    return list(_index(message)[0].get(name, ()))


def first(message: hl7.Message, name: str) -> hl7.Segment | None:
    found = segments(message, name)
    return found[0] if found else None


def raw_field(segment: hl7.Segment | None, n: int) -> str:
    """Field `n` of `segment` (MSH counted as the standard counts: MSH-9 is 9), raw."""
    if segment is None or n >= len(segment):
        return ""
    return str(segment[n])


def repetitions(message: hl7.Message, segment: hl7.Segment | None, n: int) -> list[list[str]]:
    """Field `n` as its repetitions, each a list of unescaped components (sub-components
    left joined by the sub-component separator: split them with `subcomponents`)."""
    text = raw_field(segment, n)
    if not text:
        return []
    enc = _encoding(message)
    comp_sep, rep_sep, escape = enc[0], enc[1], enc[2]
    return [
        [message.unescape(c) if escape in c else c for c in rep.split(comp_sep)]
        for rep in text.split(rep_sep)
    ]


def component(reps: Sequence[Sequence[str]], rep: int, comp: int) -> str:
    """Component `comp` (1-based, as the standard numbers them) of repetition `rep`
    (0-based); empty if absent."""
    if rep >= len(reps) or comp - 1 >= len(reps[rep]):
        return ""
    return reps[rep][comp - 1]


def value(message: hl7.Message, segment: hl7.Segment | None, n: int, comp: int = 1) -> str:
    """Component `comp` of the first repetition of field `n`, unescaped; empty if absent."""
    return component(repetitions(message, segment, n), 0, comp)


def subcomponents(message: hl7.Message, text: str) -> list[str]:
    return text.split(_encoding(message)[3])


def _encoding(message: hl7.Message) -> str:
    """MSH-2's encoding characters: component, repetition, escape, sub-component."""
    return _index(message)[1]


def _index(message: hl7.Message) -> tuple[dict[str, list[hl7.Segment]], str]:
    """The message's segments by name and its encoding characters, worked out once per
    message (mappers ask for them field by field) and kept on it."""
    found: tuple[dict[str, list[hl7.Segment]], str] | None = getattr(message, _KEY, None)
    if found is None or sum(map(len, found[0].values())) != len(message):
        by_name: dict[str, list[hl7.Segment]] = {}
        for s in message:
            by_name.setdefault(str(s[0]), []).append(s)
        msh = by_name.get("MSH", [None])[0]
        enc = str(msh[2]) if msh is not None and len(msh) > 2 else ""
        found = (by_name, enc if len(enc) >= 4 else "^~\\&")
        setattr(message, _KEY, found)
    return found


_KEY = "_smsgw_fields_index"
