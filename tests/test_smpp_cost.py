"""What the SMPP driver's hot paths cost, counted, not timed (issue 16 point 2: CPU per
message on the SMPP path). Bytecodes run are a count the machine's load does not move;
bench/profile_dispatch.py measures the same paths' CPU time."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

from drivers.base import OutboundSms, Receipt, ReceiptState
from drivers.smpp.encoding import LinkEncoding, submit_parts
from drivers.smpp.inbound import Inbound
from drivers.smpp.pdu import Command, Pdu, Tag


class Opcodes:
    """Counts the bytecodes this thread runs while it is the trace function."""

    def __init__(self) -> None:
        self.count = 0

    def trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            self.count += 1
        return self.trace


def counted(fn: Callable[[], Any]) -> tuple[Any, int]:
    """`fn()` and the bytecodes it ran (a tracer already there, coverage's, is put back)."""
    opcodes = Opcodes()
    before = sys.gettrace()
    sys.settrace(opcodes.trace)
    try:
        result = fn()
    finally:
        sys.settrace(before)
    return result, opcodes.count


# What bench/smpp_sink.js (npm `smpp`) sends for each message in the clinical scenario:
# the Appendix B text and the receipted_message_id and message_state TLVs.
SINK_RECEIPT = Pdu(
    Command.DELIVER_SM,
    7,
    params={
        "esm_class": 0x04,
        "data_coding": 0,
        "short_message": b"id:0000012345 sub:001 dlvrd:001 submit date:2612061705"
        b" done date:2612061705 stat:DELIVRD err:000 text:",
    },
    tlvs={Tag.RECEIPTED_MESSAGE_ID: "0000012345", Tag.MESSAGE_STATE: 2},
)


def test_a_receipt_whose_tlvs_say_it_all_is_not_read_as_text() -> None:
    inbound = Inbound("carrier", object(), {})  # type: ignore[arg-type]  # no sink is called
    inbound._receipt(SINK_RECEIPT)  # caches warm, as on a link that has seen a few
    receipt, cost = counted(lambda: inbound._receipt(SINK_RECEIPT))
    assert receipt == Receipt(
        "0000012345", ReceiptState.DELIVERED, None, ("12345", "3039", "74565")
    )
    # 1,386 bytecodes when the text was parsed whole (keys, dates, counts) as well; 535 now.
    assert cost < 700


def test_a_one_part_gsm7_body_is_counted_and_encoded_in_one_pass() -> None:
    """A submit's text fields (`submit_parts`), for the common message: one part in the
    default alphabet. Its septets are counted from their encoding, not by a second
    alphabet check and a regex count first (197 bytecodes before, 134 after)."""
    sms = OutboundSms("m1", "+12025550147", ("x" * 150,), "gsm7")
    link = LinkEncoding()
    submit_parts(sms, link)  # the part limits' cache warm
    parts, cost = counted(lambda: submit_parts(sms, link))
    assert len(parts) == 1 and parts[0].short_message == b"x" * 150
    assert cost <= 150
