"""The MLLP listener end to end over loopback, against a real store: persist-then-ACK,
dedupe (also after a crash between commit and ACK), quarantine and reprocess,
charsets, header refusals, allowlist, framing faults, pipelining, R2 commit blocks.
python-hl7's client is the independent sender."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import hl7.mllp
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from gateway.hl7 import framing
from gateway.hl7.inbound import Hl7Inbound
from gateway.hl7.settings import Hl7Interface
from gateway.store.store import Store
from tests import hl7_rig
from tests.hl7_rig import Peer, err3, message, msa
from tests.hl7_samples import names, text

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:hl7")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(tmp_path / "gw.db", bytes(32))
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def rig(store: Store) -> AsyncIterator[hl7_rig.Rig]:
    r = await hl7_rig.start(store, Hl7Interface(name="ehr"))
    yield r
    await r.server.aclose()


def strict(ack: bytes) -> None:
    parse_message(ack.decode(), validation_level=VALIDATION_LEVEL.STRICT, force_validation=True)


async def test_python_hl7_client_gets_one_valid_ack_for_every_shared_sample(
    rig: hl7_rig.Rig,
) -> None:
    reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", rig.port, encoding="utf-8")
    try:
        for name in names():
            sent = text(name)
            writer.writemessage(hl7.parse(sent))
            await writer.drain()
            ack = await asyncio.wait_for(reader.readmessage(), hl7_rig.TIMEOUT)
            control_id = str(hl7.parse(sent).segment("MSH")[10])
            assert str(ack.segment("MSA")[2]) == control_id, name
            strict(str(ack).encode())
    finally:
        writer.close()
        await writer.wait_closed()
    # no mapper for these types on this branch: refused at the header, stored as such
    assert await rig.count("SELECT COUNT(*) FROM hl7_messages WHERE state = 'rejected'") > 0


async def test_persist_then_ack_and_a_resend_gets_the_stored_ack_with_no_second_effect(
    rig: hl7_rig.Rig,
) -> None:
    peer = await Peer.open(rig.port)
    await peer.send(framing.encode(message().encode()))
    [first] = await peer.frames(1)
    assert msa(first) == ("AA", "C1")
    strict(first)
    assert b"Doe" not in first and b"5550123" not in first and b"MRN42" not in first
    await peer.send(framing.encode(message().encode()))
    [again] = await peer.frames(1)
    assert again == first
    assert await rig.count("SELECT COUNT(*) FROM patients") == 1
    assert await rig.count("SELECT duplicates FROM hl7_messages") == 1
    await peer.aclose()
    stored = b"".join(p.read_bytes() for p in rig.store.path.parent.glob("gw.db*"))
    assert b"Doe^Jane" not in stored and b"5550123" not in stored  # raw encrypted
    assert b"MSA|AA|C1" in stored  # the ACK, plain: MSH ids only


async def test_a_crash_between_commit_and_ack_is_answered_from_the_store(
    rig: hl7_rig.Rig,
) -> None:
    # committed, but the ACK never left (the process died): the sender resends
    answer = await rig.inbound.receive(message(control_id="C9").encode())
    assert answer.state == "mapped"
    peer = await Peer.open(rig.port)
    await peer.send(framing.encode(message(control_id="C9").encode()))
    [ack] = await peer.frames(1)
    assert ack.decode() == answer.acks[0]
    assert await rig.count("SELECT COUNT(*) FROM patients") == 1
    await peer.aclose()


async def test_the_same_message_on_two_connections_at_once_applies_once(
    rig: hl7_rig.Rig,
) -> None:
    peers = [await Peer.open(rig.port) for _ in range(4)]
    wire = framing.encode(message(control_id="RACE").encode())
    await asyncio.gather(*(p.send(wire) for p in peers))
    acks = await asyncio.gather(*(p.frames(1) for p in peers))
    assert len({a[0] for a in acks}) == 1
    assert await rig.count("SELECT COUNT(*) FROM hl7_messages") == 1
    assert await rig.count("SELECT duplicates FROM hl7_messages") == 3
    for p in peers:
        await p.aclose()


@pytest.mark.parametrize(
    ("data", "codec"),
    [
        (message(name="Müller^Anna", msh18="8859/1").encode("latin-1"), "latin-1"),
        (message(name="Müller^Anna", msh18="UNICODE UTF-8").encode("utf-8"), "utf-8"),
        (message(name="Müller^Anna").encode("latin-1"), "latin-1"),  # no MSH-18, not UTF-8
        (b"\xef\xbb\xbf" + message(name="Müller^Anna").encode("utf-8"), "utf-8"),
    ],
)
async def test_muller_is_always_acked_and_read_right(
    rig: hl7_rig.Rig, data: bytes, codec: str
) -> None:
    peer = await Peer.open(rig.port)
    await peer.send(framing.encode(data))
    [ack] = await peer.frames(1)
    assert msa(ack) == ("AA", "C1")
    from gateway.hl7 import messages_sql

    [row_id] = [
        r.id for r in await rig.store.writer.run(lambda c: messages_sql.listed(c, None, None, 5))
    ]
    found = await rig.store.writer.run(
        lambda c: messages_sql.raw_text(c, rig.store.cipher, row_id)  # type: ignore[arg-type]
    )
    assert found is not None and "Müller" in found[1]
    assert await rig.count("SELECT COUNT(*) FROM hl7_messages WHERE charset = ?", codec) == 1
    await peer.aclose()


async def test_a_mapping_error_is_ae_with_err_and_quarantined_then_reprocessed(
    rig: hl7_rig.Rig,
) -> None:
    peer = await Peer.open(rig.port)
    await peer.send(framing.encode(message("Z03").encode()))
    [ack] = await peer.frames(1)
    assert msa(ack) == ("AE", "C1") and err3(ack) == "103"
    strict(ack)
    [row] = await rig.store.writer.run(
        lambda c: __import__("gateway.hl7.messages_sql", fromlist=["x"]).listed(
            c, "quarantined", None, 5
        )
    )
    assert row.error_code == 103 and row.error_location == "PID-3"
    assert await rig.inbound.reprocess(row.id) == "quarantined"  # profile not fixed yet
    fixed = Hl7Inbound(
        Hl7Interface(name="ehr", mrn_authority="HOSP"), rig.store, rig.clock, rig.inbound.hooks
    )
    results = await asyncio.gather(fixed.reprocess(row.id), fixed.reprocess(row.id))
    assert sorted(results, key=str) == [None, "mapped"]  # one reprocess wins
    assert await rig.count("SELECT COUNT(*) FROM patients") == 1
    await peer.aclose()


async def test_accept_quarantine_answers_aa_and_keeps_the_message(store: Store) -> None:
    rig = await hl7_rig.start(store, Hl7Interface(name="lab", on_mapping_error="accept_quarantine"))
    peer = await Peer.open(rig.port)
    await peer.send(framing.encode(message("Z03").encode()))
    [ack] = await peer.frames(1)
    assert msa(ack) == ("AA", "C1") and b"ERR" not in ack
    assert await rig.count("SELECT COUNT(*) FROM hl7_messages WHERE state='quarantined'") == 1
    await peer.aclose()
    await rig.server.aclose()


async def test_apply_errors_roll_the_commands_back(rig: hl7_rig.Rig) -> None:
    peer = await Peer.open(rig.port)
    await peer.send(framing.encode(message("Z04", "Q1").encode()))
    await peer.send(framing.encode(message("Z05", "B1").encode()))
    late, broken = await peer.frames(2)
    assert msa(late) == ("AE", "Q1") and err3(late) == "204"
    assert msa(broken) == ("AR", "B1") and err3(broken) == "207"  # resend later
    assert await rig.count("SELECT COUNT(*) FROM patients") == 0
    assert await rig.count("SELECT COUNT(*) FROM hl7_messages") == 1  # the quarantined one
    await peer.aclose()


async def test_header_refusals(rig: hl7_rig.Rig) -> None:
    peer = await Peer.open(rig.port)
    await peer.send(framing.encode(message("Z99", "E1").encode()))  # known type, no event
    await peer.send(framing.encode(message("Z01", "L1", sep="\n").encode()))  # LF on MLLP
    await peer.send(framing.encode(text("LAB-ORU-1.hl7").encode()))  # MSH-11 = T
    await peer.send(framing.encode(message("Z02", "I1").encode()))
    event, lf, training, ignored = await peer.frames(4)
    assert msa(event) == ("AE", "E1") and err3(event) == "201"
    assert msa(lf)[0] == "AR" and err3(lf) == "100"
    assert msa(training)[0] == "AR" and err3(training) == "202"
    assert msa(ignored) == ("AA", "I1")
    for ack in (event, lf, training, ignored):
        strict(ack)
    assert await rig.count("SELECT COUNT(*) FROM hl7_messages WHERE state='ignored'") == 1
    await peer.aclose()


async def test_lenient_takes_lf_and_a_fixed_resend_of_a_rejected_message_is_new(
    store: Store,
) -> None:
    strict_rig = await hl7_rig.start(store, Hl7Interface(name="ehr"))
    peer = await Peer.open(strict_rig.port)
    await peer.send(framing.encode(message(control_id="F1", sep="\n").encode()))
    await peer.send(framing.encode(message(control_id="F1").encode()))
    rejected, fixed = await peer.frames(2)
    assert msa(rejected)[0] == "AR" and msa(fixed) == ("AA", "F1")
    await peer.aclose()
    await strict_rig.server.aclose()
    lenient = await hl7_rig.start(store, Hl7Interface(name="lenient", lenient=True))
    peer = await Peer.open(lenient.port)
    await peer.send(framing.encode(message(control_id="F2", sep="\n").encode()))
    [ack] = await peer.frames(1)
    assert msa(ack) == ("AA", "F2")
    await peer.aclose()
    await lenient.server.aclose()


async def test_enhanced_mode_commit_and_application_acks(rig: hl7_rig.Rig) -> None:
    peer = await Peer.open(rig.port)
    await peer.send(framing.encode(message(control_id="N1", msh15="AL", msh16="NE").encode()))
    await peer.send(framing.encode(message(control_id="N2", msh15="AL", msh16="AL").encode()))
    await peer.send(framing.encode(message("Z03", "N3", msh15="NE", msh16="ER").encode()))
    got = await peer.frames(4)
    assert [msa(a) for a in got] == [
        ("CA", "N1"),
        ("CA", "N2"),
        ("AA", "N2"),
        ("AE", "N3"),  # no accept ACK (NE); the error is an application ACK (ER)
    ]
    for ack in got:
        strict(ack)
    await peer.aclose()


async def test_pipelined_frames_are_answered_in_order(rig: hl7_rig.Rig) -> None:
    peer = await Peer.open(rig.port)
    ids = [f"P{i}" for i in range(30)]
    await peer.send(b"".join(framing.encode(message("Z02", i).encode()) for i in ids))
    acks = await peer.frames(len(ids))
    assert [msa(a)[1] for a in acks] == ids
    await peer.aclose()


async def test_a_peer_off_the_allowlist_is_cut_off_unanswered(store: Store) -> None:
    rig = await hl7_rig.start(store, Hl7Interface(name="ehr", allowed_peers=("10.1.0.0/16",)))
    peer = await Peer.open(rig.port)
    await peer.send(framing.encode(message().encode()))
    assert await peer.closed() == b""
    await peer.aclose()
    assert await rig.count("SELECT COUNT(*) FROM hl7_messages") == 0
    await rig.server.aclose()


async def test_oversize_and_idle_close_the_connection(store: Store) -> None:
    rig = await hl7_rig.start(
        store, Hl7Interface(name="ehr", max_frame_bytes=2048, idle_timeout=0.2)
    )
    peer = await Peer.open(rig.port)
    await peer.send(framing.encode(message("Z02", "OK").encode()) + b"\x0b" + b"x" * 4096)
    data = await peer.closed()
    assert msa(data[1:-2]) == ("AA", "OK")  # answered what came before, then closed
    await peer.aclose()
    idle = await Peer.open(rig.port)
    assert await idle.closed() == b""
    await idle.aclose()
    await rig.server.aclose()


async def test_r2_commit_blocks(store: Store) -> None:
    rig = await hl7_rig.start(store, Hl7Interface(name="ehr", r2_commit=True))
    peer = await Peer.open(rig.port)
    await peer.send(framing.encode(message().encode()))
    assert await peer.frames(1) == [b"\x06"]
    await peer.aclose()
    await rig.server.aclose()
