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


# A submit_sm's steps (SMPP 3.4 §4.4.1), as `pdu.py` builds them from its fields: the
# encoder takes `quick_submit_sm` for a spec whose steps are these.
SUBMIT_SM_STEPS: tuple[Step, ...] = (
    (CSTRING, ("service_type",), 6),
    (INTS, ("source_addr_ton", "source_addr_npi"), 1),
    (CSTRING, ("source_addr",), 21),
    (INTS, ("dest_addr_ton", "dest_addr_npi"), 1),
    (CSTRING, ("destination_addr",), 21),
    (INTS, ("esm_class", "protocol_id", "priority_flag"), 1),
    (CSTRING, ("schedule_delivery_time",), 17),
    (CSTRING, ("validity_period",), 17),
    (
        INTS,
        ("registered_delivery", "replace_if_present_flag", "data_coding", "sm_default_msg_id"),
        1,
    ),
    (OCTETS, ("short_message",), 254),
)


def quick_submit_sm(params: Mapping[str, Value]) -> bytes:
    """`quick_body(SUBMIT_SM_STEPS, params)` written out (every message's PDU): the
    same octets and the same refusals, without the walk over steps and their kinds."""
    get = params.get
    service = get("service_type", "").encode("latin-1")  # type: ignore[union-attr]  # a str or it raises
    source = get("source_addr", "").encode("latin-1")  # type: ignore[union-attr]
    dest = get("destination_addr", "").encode("latin-1")  # type: ignore[union-attr]
    schedule = get("schedule_delivery_time", "").encode("latin-1")  # type: ignore[union-attr]
    validity = get("validity_period", "").encode("latin-1")  # type: ignore[union-attr]
    short = get("short_message", b"")
    if (
        len(service) >= 6
        or len(source) >= 21
        or len(dest) >= 21
        or len(schedule) >= 17
        or len(validity) >= 17
        or 0 in service
        or 0 in source
        or 0 in dest
        or 0 in schedule
        or 0 in validity
        or not isinstance(short, bytes)
        or len(short) > 254
    ):
        raise ValueError("does not fit")
    return b"".join(
        (
            service,
            b"\0",
            bytes((get("source_addr_ton", 0), get("source_addr_npi", 0))),  # type: ignore[arg-type]  # ints or it raises
            source,
            b"\0",
            bytes((get("dest_addr_ton", 0), get("dest_addr_npi", 0))),  # type: ignore[arg-type]
            dest,
            b"\0",
            bytes((get("esm_class", 0), get("protocol_id", 0), get("priority_flag", 0))),  # type: ignore[arg-type]
            schedule,
            b"\0",
            validity,
            b"\0",
            bytes(
                (
                    get("registered_delivery", 0),
                    get("replace_if_present_flag", 0),
                    get("data_coding", 0),
                    get("sm_default_msg_id", 0),
                )  # type: ignore[arg-type]
            ),
            bytes((len(short),)),
            short,
        )
    )
