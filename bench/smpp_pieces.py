"""Thread CPU of the SMPP send path's per-message pieces, one tree against another.

    PYTHONPATH=/tmp/wt-base .venv/bin/python bench/smpp_pieces.py   # another checkout
    .venv/bin/python bench/smpp_pieces.py                           # this one

Times, by `time.thread_time` (best of 7 runs of 20,000 calls; the machine's other load
is not charged), what the dispatch loop does per raw message between the claimed row
and the bytes for the wire: a one-part GSM-7 body's text fields (`submit_parts`), its
submit_sm built and encoded, and the claimed row's number and body opened. Prints one
JSON line, with the tree the code came from; alternate trees to compare.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import drivers
from drivers.base import OutboundSms
from drivers.smpp.encoding import LinkEncoding, submit_parts
from drivers.smpp.pdu import Command, Pdu, Status, encode
from gateway.store.crypto import FieldCipher

BODY = "x" * 150  # bench/profile_dispatch.py's body
MESSAGE_ID = "01JABCDEFGHJKMNPQRSTVWXYZ0"
CALLS, RUNS = 20_000, 7


def per_call_us(fn: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(RUNS):
        started = time.thread_time()
        for _ in range(CALLS):
            fn()
        best = min(best, (time.thread_time() - started) / CALLS * 1e6)
    return round(best, 2)


def main() -> None:
    sms = OutboundSms(MESSAGE_ID, "+12025551234", (BODY,), "gsm7", want_receipt=False)
    link = LinkEncoding()
    part = submit_parts(sms, link)[0]
    params = {
        "source_addr_ton": 1,
        "source_addr_npi": 1,
        "source_addr": "SMSGW",
        "dest_addr_ton": 1,
        "dest_addr_npi": 1,
        "destination_addr": "12025551234",
        "registered_delivery": 0,
        **part.params(),
    }
    cipher = FieldCipher({1: b"f" * 32}, b"k" * 32)
    to_ct, body_ct = cipher.encrypt_to_and_body(MESSAGE_ID, sms.to, BODY)
    figures = {
        "tree": drivers.__file__.rsplit("/drivers/", 1)[0],
        "submit_parts_us": per_call_us(lambda: submit_parts(sms, link)),
        "submit_sm_encode_us": per_call_us(
            lambda: encode(Pdu(Command.SUBMIT_SM, 7, Status.ESME_ROK, params, {}))
        ),
        "claim_decrypt_us": per_call_us(
            lambda: (
                cipher.decrypt(to_ct, MESSAGE_ID, "to"),
                cipher.decrypt(body_ct, MESSAGE_ID, "body"),
            )
        ),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
