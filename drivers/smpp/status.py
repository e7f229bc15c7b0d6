"""SMPP 3.4 command_status codes and how the gateway treats each one.

`classify` sorts a status from a `*_resp` into three classes, and the scheduler acts on
the class (reliability reference REL-10 and its table in §3.2):

- "throttle": the carrier is pushing back (ESME_RTHROTTLED, ESME_RMSGQFUL). Retry after a
  delay and lower the route's rate; this never uses up the message's retry budget the way
  an error does.
- "transient": the carrier or the link failed, not the message. Retry with back-off.
- "permanent": the carrier refuses this message (bad address, bad field). Retrying sends
  the same refusal again, so the message goes to `failed`.

Operators may move a code to another class per route (`overrides`), for example
ESME_RSUBMITFAIL, which some carriers use for temporary conditions.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Literal, cast

StatusClass = Literal["transient", "permanent", "throttle"]
STATUS_CLASSES: frozenset[str] = frozenset({"transient", "permanent", "throttle"})


class Status(enum.IntEnum):
    """Every command_status defined by SMPP 3.4 (§5.1.3)."""

    ESME_ROK = 0x00
    ESME_RINVMSGLEN = 0x01
    ESME_RINVCMDLEN = 0x02
    ESME_RINVCMDID = 0x03
    ESME_RINVBNDSTS = 0x04
    ESME_RALYBND = 0x05
    ESME_RINVPRTFLG = 0x06
    ESME_RINVREGDLVFLG = 0x07
    ESME_RSYSERR = 0x08
    ESME_RINVSRCADR = 0x0A
    ESME_RINVDSTADR = 0x0B
    ESME_RINVMSGID = 0x0C
    ESME_RBINDFAIL = 0x0D
    ESME_RINVPASWD = 0x0E
    ESME_RINVSYSID = 0x0F
    ESME_RCANCELFAIL = 0x11
    ESME_RREPLACEFAIL = 0x13
    ESME_RMSGQFUL = 0x14
    ESME_RINVSERTYP = 0x15
    ESME_RINVNUMDESTS = 0x33
    ESME_RINVDLNAME = 0x34
    ESME_RINVDESTFLAG = 0x40
    ESME_RINVSUBREP = 0x42
    ESME_RINVESMCLASS = 0x43
    ESME_RCNTSUBDL = 0x44
    ESME_RSUBMITFAIL = 0x45
    ESME_RINVSRCTON = 0x48
    ESME_RINVSRCNPI = 0x49
    ESME_RINVDSTTON = 0x50
    ESME_RINVDSTNPI = 0x51
    ESME_RINVSYSTYP = 0x53
    ESME_RINVREPFLAG = 0x54
    ESME_RINVNUMMSGS = 0x55
    ESME_RTHROTTLED = 0x58
    ESME_RINVSCHED = 0x61
    ESME_RINVEXPIRY = 0x62
    ESME_RINVDFTMSGID = 0x63
    ESME_RX_T_APPN = 0x64
    ESME_RX_P_APPN = 0x65
    ESME_RX_R_APPN = 0x66
    ESME_RQUERYFAIL = 0x67
    ESME_RINVOPTPARSTREAM = 0xC0
    ESME_ROPTPARNOTALLWD = 0xC1
    ESME_RINVPARLEN = 0xC2
    ESME_RMISSINGOPTPARAM = 0xC3
    ESME_RINVOPTPARAMVAL = 0xC4
    ESME_RDELIVERYFAILURE = 0xFE
    ESME_RUNKNOWNERR = 0xFF


_THROTTLE = (Status.ESME_RTHROTTLED, Status.ESME_RMSGQFUL)

# The message is fine; the carrier, the link or the bind state is not. Bind failures
# (0x0D-0x0F) reach the session as a bind_resp and park the route there; if a carrier
# answers a submit with one, the message itself is still good.
_TRANSIENT = (
    Status.ESME_RINVBNDSTS,
    Status.ESME_RALYBND,
    Status.ESME_RSYSERR,
    Status.ESME_RBINDFAIL,
    Status.ESME_RINVPASWD,
    Status.ESME_RINVSYSID,
    Status.ESME_RINVSCHED,  # REL-10: Jasmin retries it twice after 300 s
    Status.ESME_RX_T_APPN,
    Status.ESME_RQUERYFAIL,
    Status.ESME_RDELIVERYFAILURE,
    Status.ESME_RUNKNOWNERR,
)

_PERMANENT = (
    Status.ESME_RINVMSGLEN,
    Status.ESME_RINVCMDLEN,
    Status.ESME_RINVCMDID,
    Status.ESME_RINVPRTFLG,
    Status.ESME_RINVREGDLVFLG,
    Status.ESME_RINVSRCADR,
    Status.ESME_RINVDSTADR,
    Status.ESME_RINVMSGID,
    Status.ESME_RCANCELFAIL,
    Status.ESME_RREPLACEFAIL,
    Status.ESME_RINVSERTYP,
    Status.ESME_RINVNUMDESTS,
    Status.ESME_RINVDLNAME,
    Status.ESME_RINVDESTFLAG,
    Status.ESME_RINVSUBREP,
    Status.ESME_RINVESMCLASS,
    Status.ESME_RCNTSUBDL,
    Status.ESME_RSUBMITFAIL,  # REL-10: permanent unless a route overrides it
    Status.ESME_RINVSRCTON,
    Status.ESME_RINVSRCNPI,
    Status.ESME_RINVDSTTON,
    Status.ESME_RINVDSTNPI,
    Status.ESME_RINVSYSTYP,
    Status.ESME_RINVREPFLAG,
    Status.ESME_RINVNUMMSGS,
    Status.ESME_RINVEXPIRY,
    Status.ESME_RINVDFTMSGID,
    Status.ESME_RX_P_APPN,
    Status.ESME_RX_R_APPN,
    Status.ESME_RINVOPTPARSTREAM,
    Status.ESME_ROPTPARNOTALLWD,
    Status.ESME_RINVPARLEN,
    Status.ESME_RMISSINGOPTPARAM,
    Status.ESME_RINVOPTPARAMVAL,
)

DEFAULT_CLASSES: Mapping[int, StatusClass] = {
    **dict.fromkeys(_THROTTLE, "throttle"),
    **dict.fromkeys(_TRANSIENT, "transient"),
    **dict.fromkeys(_PERMANENT, "permanent"),
}

# A code outside the table (vendor range 0x400-0x4FF, or a carrier's invention) is
# transient. REL-10 treats an unknown status like a generic_nack: the link is reset and
# the message is retried as in-doubt. Guessing "permanent" would fail a clinical
# message on a code nobody has read; guessing "transient" costs at most a duplicate
# within the retry budget, and an operator can pin the code with an override.
UNKNOWN_STATUS_CLASS: StatusClass = "transient"


def classify(status: int, overrides: Mapping[int, str] | None = None) -> StatusClass:
    """The class of `status`: the route's override if any, else `DEFAULT_CLASSES`.

    ESME_ROK has no class (it is not an error) and raises ValueError, as does an
    override naming a class other than transient, permanent or throttle.
    """
    if status == Status.ESME_ROK:
        raise ValueError("ESME_ROK is not an error status")
    if overrides is not None and status in overrides:
        chosen = overrides[status]
        if chosen not in STATUS_CLASSES:
            raise ValueError(f"override for {status_code(status)}: unknown class {chosen!r}")
        return cast(StatusClass, chosen)
    return DEFAULT_CLASSES.get(status, UNKNOWN_STATUS_CLASS)


def is_known(status: int) -> bool:
    return status in Status._value2member_map_


def status_name(status: int) -> str:
    """`ESME_RTHROTTLED` for a standard code, `0x00000400` for any other."""
    return Status(status).name if is_known(status) else f"0x{status:08x}"


def status_code(status: int) -> str:
    """The stable error code string for `status`, e.g. `smpp:0x00000058`."""
    return f"smpp:0x{status:08x}"
