"""`smsgw hl7 send --phone --language --shift-days --control-id-suffix`: the edits that
make a 2021 sample with fake numbers book an appointment a demo can text, checked by
parsing the result with python-hl7 and by what a real listener stores."""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path

import hl7
import hl7.mllp
import pytest

from gateway.clinical import patients
from gateway.clinical.profile import InterfaceProfile
from gateway.hl7 import demo_edit
from gateway.hl7.send_cmd import edit
from gateway.hl7.settings import Hl7Interface
from gateway.store.store import Store
from tests import hl7_rig
from tests.conftest import smsgw_process
from tests.hl7_samples import SAMPLES, parse, text

TODAY = date(2026, 12, 6)
NOW = datetime(2026, 12, 6, 12, 0, 30, tzinfo=UTC)


def _args(**kw: object) -> argparse.Namespace:
    base = {"phone": None, "language": None, "shift_days": None, "control_id_suffix": None}
    return argparse.Namespace(**{**base, **kw})


def _field(message: str, segment: str, n: int, rep: int = 0) -> str:
    return str(parse(message).segments(segment)[rep](n))


def test_shift_days_moves_every_timestamp_by_the_same_days_keeping_time_and_offset() -> None:
    m = demo_edit.shift_days(text("SIU-S12-01.hl7"), 2, TODAY)
    assert _field(m, "TQ1", 7) == "20261208093000+0215"  # was 20210924093000+0215
    assert _field(m, "TQ1", 8) == "20261208102000+0215"
    days = (date(2026, 12, 8) - date(2021, 9, 24)).days
    shifted = date(2021, 9, 14).toordinal() + days
    assert _field(m, "MSH", 7) == date.fromordinal(shifted).strftime("%Y%m%d") + "1120+0215"
    for seg, n in (("AIS", 4), ("AIL", 6), ("AIP", 6)):
        assert _field(m, seg, n) == "20261208093000+0215", seg
    sch11 = parse(m).segment("SCH")[11][0]
    assert str(sch11[3]).startswith(
        date.fromordinal(date(2020, 10, 1).toordinal() + days).strftime("%Y%m%d")
    )
    assert str(sch11[3]).endswith("1126+0215")  # minute precision kept
    assert _field(m, "PID", 7) == "198808181126+0215"  # the birth date stays
    assert _field(m, "PID", 13) == _field(text("SIU-S12-01.hl7"), "PID", 13)  # phones stay


def test_shift_days_reads_sch11_when_there_is_no_tq1() -> None:
    m = text("SIU-S12-01.hl7").replace("\rTQ1|||||||20210924093000+0215|20210924102000+0215|A", "")
    assert "TQ1" not in m
    out = demo_edit.shift_days(m, 1, TODAY)
    assert str(parse(out).segment("SCH")[11][0][3]) == "202612071126+0215"


def test_shift_days_refuses_a_message_without_a_start() -> None:
    with pytest.raises(ValueError, match="no appointment or order start"):
        demo_edit.shift_days(text("ADT-A08-01.hl7"), 1, TODAY)


def test_phone_and_language_make_a_textable_spanish_patient() -> None:
    m = demo_edit.set_language(demo_edit.set_phone(text("SIU-S12-01.hl7"), "+12025550147"), "es")
    details = patients.extract(parse(m), InterfaceProfile("ehr"))
    assert [p.e164 for p in details.phones] == ["+12025550147"]
    assert details.phones[0].use == "PRN" and details.phones[0].equipment == "CP"
    assert details.language == "es"
    with pytest.raises(ValueError, match=r"E\.164"):
        demo_edit.set_phone(m, "2025550147")


def test_the_control_id_suffix_makes_a_resend_new_unless_left_out() -> None:
    two = [text("SIU-S15-01.hl7"), text("SIU-S12-01.hl7")]
    fixed = edit(two, _args(control_id_suffix="-b"), NOW)
    assert [demo_edit.control_id(m) for m in fixed] == ["MSG00015-b", "MSG00012-b"]
    once, again = (edit(two, _args(control_id_suffix="auto"), NOW) for _ in range(2))
    assert demo_edit.control_id(once[0]) != demo_edit.control_id(again[0])
    assert demo_edit.control_id(once[0]).startswith("MSG00015-")
    assert edit(two, _args(), NOW) == two


def test_one_offset_for_all_messages_keeps_a_cancel_and_its_rebooking_in_step() -> None:
    s15, s12 = edit([text("SIU-S15-01.hl7"), text("SIU-S12-01.hl7")], _args(shift_days=3), NOW)
    assert _field(s15, "TQ1", 7) == _field(s12, "TQ1", 7) == "20261209093000+0215"
    # MSH-7 is the time of sending, in its own offset and precision (minutes): the
    # samples' S15 is dated after their S12, which would make the rebooking stale
    assert _field(s15, "MSH", 7) == _field(s12, "MSH", 7) == "202612061415+0215"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(tmp_path / "gw.db", bytes(32))
    await s.open()
    yield s
    await s.close()


async def test_send_with_the_demo_options_stores_the_edited_message(
    store: Store, tmp_path: Path
) -> None:
    rig = await hl7_rig.start(store, Hl7Interface(name="ehr", processing_ids=("P", "T")))
    sample = str(SAMPLES / "SIU-S12-01.hl7")
    args = ["hl7", "send", "--port", str(rig.port), sample]
    demo = ["--phone", "+12025550147", "--shift-days", "2", "--control-id-suffix", "auto"]
    for extra in ([], demo, demo):
        proc = await smsgw_process(*args, *extra)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert len(out.decode().splitlines()) == 2, err.decode()  # the header and one ACK
    # the plain send and two demo sends with fresh control ids: three messages, no duplicate
    assert await rig.count("SELECT count(*) FROM hl7_messages") == 3
    assert await rig.count("SELECT sum(duplicates) FROM hl7_messages") == 0
    bad = await smsgw_process(*args, "--phone", "12345")
    _, err = await asyncio.wait_for(bad.communicate(), 30)
    assert bad.returncode == 2 and "E.164" in err.decode()
    assert "12345" not in err.decode()
    await rig.server.aclose()


def test_the_edited_sample_still_parses_with_python_hl7() -> None:
    m = edit(
        [text("SIU-S12-01.hl7")],
        _args(phone="+12025550147", language="spa", shift_days=1, control_id_suffix="-x"),
        NOW,
    )[0]
    msg = hl7.parse(m)
    assert str(msg.segment("MSH")[10]) == "MSG00012-x"
    assert str(msg.segment("PID")[15]) == "spa"


async def test_send_prints_the_error_text_of_a_v24_ack_too(store: Store, tmp_path: Path) -> None:
    """Before v2.5 the ACK's ERR is ERR-1 (location^code&text&table), not ERR-3/ERR-8."""
    rig = await hl7_rig.start(store, Hl7Interface(name="ehr"))
    old = tmp_path / "v24.hl7"
    old.write_text(hl7_rig.message("Z03", "V24").replace("|2.5.1|", "|2.4|"))
    proc = await smsgw_process("hl7", "send", "--port", str(rig.port), str(old))
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    header, row = out.decode().splitlines()
    assert header.split() == ["FILE", "CONTROL-ID", "ACK", "ERROR"]
    error = "no identifier of the configured authority"
    assert re.split(r"  +", row) == [str(old), "V24", "AE", error]
    await rig.server.aclose()


async def test_hl7_listen_prints_what_it_gets_and_answers_aa() -> None:
    """`smsgw hl7 listen`: the console EHR the embedded default writes replies back to."""
    proc = await smsgw_process("hl7", "listen", "--port", "0")
    assert proc.stdout is not None
    try:
        first = await asyncio.wait_for(proc.stdout.readline(), 30)
        match = re.search(rb"127\.0\.0\.1:(\d+)", first)
        assert match, first
        reader, writer = await hl7.mllp.open_hl7_connection(
            "127.0.0.1", int(match.group(1)), encoding="utf-8"
        )
        s14 = "MSH|^~\\&|SMSGW||EHR||20261201090000||SIU^S14^SIU_S12|W1|P|2.5.1\rNTE|1|P|Müller\r"
        writer.writemessage(hl7.parse(s14))
        ack = await asyncio.wait_for(reader.readmessage(), 30)
        assert str(ack.segment("MSA")[1]) == "AA" and str(ack.segment("MSA")[2]) == "W1"
        writer.close()
        lines = [await asyncio.wait_for(proc.stdout.readline(), 30) for _ in range(2)]
        assert [ln.decode().rstrip("\n") for ln in lines] == s14.rstrip("\r").split("\r")
    finally:
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
