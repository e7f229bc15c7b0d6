"""Quick paths of the SMPP codec (`pdu.py`) for a PDU's mandatory fields: the same octets
and values as the fields' own `write` and `read` for good input, in fewer steps (a
submit_sm's run of one-octet integers in one `bytes` or slice). On anything that does
not fit they raise or answer None, and `pdu.py` takes the checked way, which names the
field and the error (hypothesis tests in tests/test_smpp_pdu.py hold the two equal)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from drivers.smpp.pdu import Value

# A step: a run of one-octet Integers (their names), a CString, an OctetString or a wider
# Integer; the int is the size or the maximum.
INTS, CSTRING, OCTETS, WIDE = range(4)
Step = tuple[int, tuple[str, ...], int]


def quick_body(steps: tuple[Step, ...], params: Mapping[str, Value]) -> bytes:
    """The mandatory fields' octets, as the fields' `write`s give them for good values,
    in fewer steps (a submit_sm's ten one-octet fields in one `bytes`). A value that does
    not fit makes it raise (whatever the exception), never write something else."""
    get = params.get
    out: list[bytes] = []
    for kind, names, size in steps:
        if kind == INTS:
            out.append(bytes([get(name, 0) for name in names]))  # type: ignore[misc]  # an int or it raises
            continue
        if kind == CSTRING:
            raw = get(names[0], "").encode("latin-1")  # type: ignore[union-attr]  # a str or it raises
            if len(raw) >= size or 0 in raw:
                raise ValueError("does not fit")
            out += (raw, b"\0")
        elif kind == OCTETS:
            raw = get(names[0], b"")
            if not isinstance(raw, bytes) or len(raw) > size:
                raise ValueError("does not fit")
            out += (bytes((len(raw),)), raw)
        else:
            number = get(names[0], 0)
            if not isinstance(number, int) or number < 0:
                raise ValueError("does not fit")
            out.append(number.to_bytes(size, "big"))
    return b"".join(out)


def quick_fields(
    steps: tuple[Step, ...], frame: bytes, start: int
) -> tuple[dict[str, Value], int] | None:
    """The mandatory fields as the fields' `read`s give them and where they end, in fewer
    steps (a run of one-octet Integers in one slice); None where a `read` would raise."""
    params: dict[str, Value] = {}
    pos = start
    end = len(frame)
    for kind, names, size in steps:
        if kind == INTS:
            stop = pos + len(names)
            if stop > end:
                return None
            params.update(zip(names, frame[pos:stop], strict=True))
            pos = stop
        elif kind == CSTRING:
            nul = frame.find(0, pos, pos + size)
            if nul < 0:
                return None
            params[names[0]] = frame[pos:nul].decode("latin-1")
            pos = nul + 1
        elif kind == OCTETS:
            count = frame[pos] if pos < end else -1
            stop = pos + 1 + count
            if not 0 <= count <= size or stop > end:
                return None
            params[names[0]] = frame[pos + 1 : stop]
            pos = stop
        else:
            stop = pos + size
            if stop > end:
                return None
            params[names[0]] = int.from_bytes(frame[pos:stop], "big")
            pos = stop
    return params, pos
