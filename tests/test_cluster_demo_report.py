"""The carrier's record `smsgw demo-cluster` prints on Ctrl-C (gateway/cluster_demo_report.py):
submits per node, a message sent twice found (by carrier id, or by recipient and text
when the dead node never recorded its submit) and shown with its flag, never a number
or a text in what is printed."""

from __future__ import annotations

from drivers.smpp.pdu import Command
from drivers.smpp.sim_records import SubmitRecord, SubmittedMessage
from gateway.cluster_demo_report import Accepted, carrier_record


def _submit(carrier_id: str, to: str, text: str) -> SubmittedMessage:
    return SubmittedMessage(
        command=Command.SUBMIT_SM, system_id="smsgw", message_id=carrier_id, source="4000",
        destination=to, data_coding=0, esm_class=0, registered_delivery=1,
        short_message=text.encode(), tlvs={}, text=text, concat=None,
    )  # fmt: skip


def test_a_message_the_dead_node_sent_unrecorded_is_a_duplicate_shown_with_its_flag() -> None:
    accepted = [
        Accepted("m1", "delivered", 1, False),
        Accepted("m2", "delivered", 1, True),  # gw2's in-flight, requeued by gw1
        Accepted("m3", "delivered", 1, False),  # the same text to the same number: no dup
        Accepted("m4", "queued", 1, False),
    ]
    submitted = [
        _submit("1", "12025550101", "Reminder 1"),
        _submit("2", "12025550102", "Reminder 2"),  # gw2 died before recording it
        _submit("3", "12025550102", "Reminder 2"),
        _submit("4", "12025550101", "Reminder 1"),
    ]
    log = [
        SubmitRecord(10.0, 0, 1, "gw1"),
        SubmitRecord(10.2, 0, 2, "gw2"),
        SubmitRecord(10.3, 88, 1, "gw1"),  # throttled: not in `submitted`
        SubmitRecord(12.0, 0, 1, "gw1"),
        SubmitRecord(12.5, 0, 1, "gw1"),
    ]
    record = carrier_record(accepted, {"1": "m1", "3": "m2", "4": "m3"}, submitted, log)
    assert record.duplicates == {"m2": ["gw2", "gw1"]}
    assert record.submits_by_node == {"gw1": 3, "gw2": 1}
    assert record.refused_by_node == {"gw1": 1}
    assert record.peak_second == 2 and record.unmatched == 0
    text = "\n".join(record.lines(20))
    assert "m2: sent by gw2, gw1 (flagged possible_duplicate)" in text
    assert "messages accepted: 4 (3 delivered, 1 queued)" in text
    assert "not sent yet when stopped: 1" in text
    assert "1202555" not in text and "Reminder" not in text


def test_a_duplicate_not_flagged_says_so() -> None:
    accepted = [Accepted("m1", "sent", 1, False)]
    submitted = [_submit("1", "12025550101", "x"), _submit("2", "12025550101", "x")]
    log = [SubmitRecord(1.0, 0, 1, "gw1"), SubmitRecord(5.0, 0, 2, "gw2")]
    record = carrier_record(accepted, {"1": "m1", "2": "m1"}, submitted, log)
    assert "m1: sent by gw1, gw2 (NOT FLAGGED)" in "\n".join(record.lines(None))
