"""SMPP codec: our `drivers.smpp.pdu` against smpplib's, in one process.

    .venv/bin/python bench/smpp_codec.py [--seconds 0.5]

Measures encode and decode of the same submit_sm (140-octet body) and deliver_sm
(a delivery receipt with receipted_message_id, message_state and network_error_code
TLVs), checks that both codecs agree on those bytes, runs smpplib through the
correctness probes the evaluation asked for, and feeds both decoders the same
mutated frames. Prints one JSON line. Needs `pip install smpplib`; bounded to about
ten times `--seconds`.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import random
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable
from importlib import metadata
from typing import Any

from drivers.smpp.pdu import Command, Pdu, SmppDecodeError, Tag, decode, encode

try:
    from smpplib import smpp
except ImportError:
    sys.exit("bench/smpp_codec.py needs smpplib: .venv/bin/pip install smpplib")

SUBMIT_PARAMS: dict[str, Any] = {
    "service_type": "",
    "source_addr_ton": 5,
    "source_addr_npi": 0,
    "source_addr": "HOSPITAL",
    "dest_addr_ton": 1,
    "dest_addr_npi": 1,
    "destination_addr": "12025550100",
    "esm_class": 0,
    "protocol_id": 0,
    "priority_flag": 0,
    "schedule_delivery_time": "",
    "validity_period": "",
    "registered_delivery": 1,
    "replace_if_present_flag": 0,
    "data_coding": 0,
    "sm_default_msg_id": 0,
    "short_message": b"Your appointment is on Tuesday at 10:30. " * 3 + b"Reply STOP to opt out...",
}
RECEIPT_TEXT = (
    b"id:0123456789 sub:001 dlvrd:001 submit date:2401011030 "
    b"done date:2401011031 stat:DELIVRD err:000 text:Your appointment"
)
DELIVER_PARAMS: dict[str, Any] = {
    **SUBMIT_PARAMS,
    "source_addr": "12025550100",
    "destination_addr": "HOSPITAL",
    "esm_class": 0x04,
    "registered_delivery": 0,
    "short_message": RECEIPT_TEXT,
}
# In the order smpplib writes them, so that both codecs produce the same octets.
DELIVER_TLVS: dict[int, Any] = {
    Tag.NETWORK_ERROR_CODE: b"\x03\x00\x00",
    Tag.MESSAGE_STATE: 2,
    Tag.RECEIPTED_MESSAGE_ID: "0123456789",
}
SMPPLIB_TLV_NAMES = {
    Tag.RECEIPTED_MESSAGE_ID: "receipted_message_id",
    Tag.MESSAGE_STATE: "message_state",
    Tag.NETWORK_ERROR_CODE: "network_error_code",
}


class SequenceSource:
    """The client object smpplib's PDUs ask for sequence numbers."""

    sequence = 0

    def next_sequence(self) -> int:
        self.sequence += 1
        return self.sequence


def rate(operation: Callable[[], object], seconds: float) -> float:
    """Calls per second of `operation`, over batches until `seconds` have passed."""
    batch, calls, started = 200, 0, time.perf_counter()
    while True:
        for _ in range(batch):
            operation()
        calls += batch
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return round(calls / elapsed)


def smpplib_pdu(command: str, sequence: int, **fields: Any) -> Any:
    pdu = smpp.make_pdu(command, client=SequenceSource(), **fields)
    pdu.sequence = sequence  # the `sequence=` argument is ignored, see probe below
    return pdu


def outcome(call: Callable[[], object]) -> str:
    try:
        result = call()
    except Exception as error:  # the probes record whatever smpplib raises
        return f"raises {type(error).__name__}"
    return f"returns {result!r}"


def frame(command_id: int, body: bytes, status: int = 0, sequence: int = 9) -> bytes:
    return struct.pack(">IIII", 16 + len(body), command_id, status, sequence) + body


def smpplib_probes(deliver: bytes) -> dict[str, str]:
    """What smpplib does with the inputs an ESME must handle; values are observations."""

    def parse(data: bytes, **kwargs: Any) -> Any:
        return smpp.parse_pdu(data, client=SequenceSource(), **kwargs)

    unknown_tlv = struct.pack(">HH", 0x1400, 3) + b"xyz"
    with_unknown = frame(5, deliver[16:] + unknown_tlv)
    truncated = frame(5, deliver[16:40])
    enquire_link = frame(0x15, b"", sequence=1)
    return {
        "parse_without_client": outcome(lambda: smpp.parse_pdu(enquire_link).sequence),
        "make_pdu_sequence_7": outcome(
            lambda: struct.unpack(
                ">I", smpp.make_pdu("enquire_link", sequence=7).generate()[12:16]
            )[0]
        ),
        "unknown_tlv": outcome(lambda: parse(with_unknown).short_message[:0]),
        "unknown_tlv_allowed": outcome(
            lambda: sorted(
                k
                for k, v in vars(parse(with_unknown, allow_unknown_opt_params=True)).items()
                if v == b"xyz"
            )
        ),
        "reencode_decoded": outcome(lambda: parse(deliver).generate() == deliver),
        "truncated_body": outcome(lambda: parse(truncated).destination_addr),
        "tlv_header_cut": outcome(lambda: parse(frame(5, deliver[16:] + b"\x00\x1e\x00"))),
        "cstring_without_nul": outcome(lambda: parse(frame(0x80000004, b"abc")).message_id),
        "outbind": outcome(lambda: parse(frame(0x0B, b"smsc\0pw\0")).system_id),
        "source_addr_30_chars": outcome(
            lambda: len(smpplib_pdu("submit_sm", 1, source_addr="1" * 30).generate())
        ),
        "data_sm_resp_delivery_failure_reason": outcome(
            lambda: smpplib_pdu("data_sm_resp", 1, delivery_failure_reason=1).generate()
        ),
    }


def mutated_frames(seed_frames: list[bytes], count: int) -> list[bytes]:
    """Flipped octets, truncations, extensions and wrong command_length values."""
    generator = random.Random(3400)
    frames = []
    for index in range(count):
        data = bytearray(generator.choice(seed_frames))
        match index % 4:
            case 0:
                for _ in range(generator.randint(1, 4)):
                    data[generator.randrange(len(data))] = generator.randrange(256)
            case 1:
                del data[generator.randrange(16, len(data)) :]
                data[0:4] = len(data).to_bytes(4, "big")
            case 2:
                data += generator.randbytes(generator.randint(1, 8))
                data[0:4] = len(data).to_bytes(4, "big")
            case _:
                data[0:4] = generator.randrange(len(data) + 8).to_bytes(4, "big")
        frames.append(bytes(data))
    return frames


def fuzz_outcomes(frames: list[bytes]) -> dict[str, dict[str, int]]:
    ours: Counter[str] = Counter()
    theirs: Counter[str] = Counter()
    for data in frames:
        try:
            decode(data)
            ours["accepted"] += 1
        except SmppDecodeError:
            ours["SmppDecodeError"] += 1
        try:
            smpp.parse_pdu(data, client=SequenceSource(), allow_unknown_opt_params=True)
            theirs["accepted"] += 1
        except Exception as error:  # counting what smpplib raises is the point
            theirs[type(error).__name__] += 1
    return {"ours": dict(ours), "smpplib": dict(theirs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="per measurement")
    parser.add_argument("--fuzz-frames", type=int, default=4000)
    args = parser.parse_args()
    logging.getLogger("smpplib").setLevel(logging.CRITICAL)

    ours_submit = Pdu(Command.SUBMIT_SM, 7, params=SUBMIT_PARAMS)
    ours_deliver = Pdu(Command.DELIVER_SM, 8, params=DELIVER_PARAMS, tlvs=DELIVER_TLVS)
    lib_submit = smpplib_pdu("submit_sm", 7, **SUBMIT_PARAMS)
    lib_deliver = smpplib_pdu(
        "deliver_sm",
        8,
        **DELIVER_PARAMS,
        **{SMPPLIB_TLV_NAMES[tag]: value for tag, value in DELIVER_TLVS.items()},
    )
    submit_frame, deliver_frame = encode(ours_submit), encode(ours_deliver)
    client = SequenceSource()
    parsed_deliver = smpp.parse_pdu(deliver_frame, client=client)
    same_bytes = {
        "submit_sm": lib_submit.generate() == submit_frame,
        "deliver_sm": lib_deliver.generate() == deliver_frame,
        "deliver_sm_decoded_receipt_id": parsed_deliver.receipted_message_id == b"0123456789",
    }
    seconds = args.seconds
    result: dict[str, Any] = {
        "bench": "smpp_codec",
        "ours_submit_encode_per_s": rate(lambda: encode(ours_submit), seconds),
        "smpplib_submit_encode_per_s": rate(lib_submit.generate, seconds),
        "ours_submit_decode_per_s": rate(lambda: decode(submit_frame), seconds),
        "smpplib_submit_decode_per_s": rate(
            lambda: smpp.parse_pdu(submit_frame, client=client), seconds
        ),
        "ours_deliver_encode_per_s": rate(lambda: encode(ours_deliver), seconds),
        "smpplib_deliver_encode_per_s": rate(lib_deliver.generate, seconds),
        "ours_deliver_decode_per_s": rate(lambda: decode(deliver_frame), seconds),
        "smpplib_deliver_decode_per_s": rate(
            lambda: smpp.parse_pdu(deliver_frame, client=client), seconds
        ),
    }
    result["deliver_decode_speedup"] = round(
        result["ours_deliver_decode_per_s"] / result["smpplib_deliver_decode_per_s"], 2
    )
    result["submit_encode_speedup"] = round(
        result["ours_submit_encode_per_s"] / result["smpplib_submit_encode_per_s"], 2
    )
    result["same_bytes"] = same_bytes
    result["smpplib_probes"] = smpplib_probes(deliver_frame)
    result["fuzz"] = fuzz_outcomes(mutated_frames([submit_frame, deliver_frame], args.fuzz_frames))
    result["smpplib_version"] = metadata.version("smpplib")
    result["python"] = platform.python_version()
    result["seconds_per_measurement"] = seconds
    print(json.dumps(result))


if __name__ == "__main__":
    main()
