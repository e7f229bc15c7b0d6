"""The sans-I/O MLLP framer: every shared sample in every split, pipelined, with the
research's framing faults (§I)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.hl7 import framing
from gateway.hl7.framing import Commit, Fault, Frame, MllpDecoder, Skipped
from tests.hl7_samples import names, text

SAMPLES = [text(n).encode("utf-8") for n in names()]


def feed(decoder: MllpDecoder, chunks: list[bytes]) -> list[framing.Event]:
    out: list[framing.Event] = []
    for chunk in chunks:
        decoder.receive_data(chunk)
        out += decoder.events()
    return out


def frames(events: list[framing.Event]) -> list[bytes]:
    return [e.payload for e in events if isinstance(e, Frame)]


@pytest.mark.parametrize("payload", SAMPLES, ids=names())
def test_every_sample_split_at_every_offset_and_byte_by_byte(payload: bytes) -> None:
    wire = framing.encode(payload)
    for cut in range(len(wire) + 1):
        assert frames(feed(MllpDecoder(), [wire[:cut], wire[cut:]])) == [payload]
    assert frames(feed(MllpDecoder(), [wire[i : i + 1] for i in range(len(wire))])) == [payload]


def test_pipelined_pairs_of_samples_in_every_split() -> None:
    for a, b in zip(SAMPLES, SAMPLES[1:] + SAMPLES[:1], strict=True):
        wire = framing.encode(a) + framing.encode(b)
        for cut in range(0, len(wire) + 1, 7):
            assert frames(feed(MllpDecoder(), [wire[:cut], wire[cut:]])) == [a, b]


@given(
    payloads=st.lists(
        st.binary(max_size=300).map(lambda b: b.replace(b"\x1c", b"").replace(b"\x0b", b"")),
        max_size=5,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=10),
)
def test_round_trip_in_any_chunking(payloads: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(framing.encode(p) for p in payloads)
    points = sorted({min(c, len(wire)) for c in cuts})
    chunks = [wire[a:b] for a, b in zip([0, *points], [*points, len(wire)], strict=True)]
    events = feed(MllpDecoder(), chunks)
    assert frames(events) == payloads
    assert not [e for e in events if not isinstance(e, Frame)]


def test_garbage_before_and_between_frames_is_skipped() -> None:
    wire = b"junk" + framing.encode(b"MSH|1") + b"\r\n\x00" + framing.encode(b"MSH|2")
    events = feed(MllpDecoder(), [wire])
    assert frames(events) == [b"MSH|1", b"MSH|2"]
    assert [e.count for e in events if isinstance(e, Skipped)] == [4, 3]


def test_an_oversize_frame_is_a_fault_and_nothing_after_it_counts() -> None:
    d = MllpDecoder(max_size=1024)
    events = feed(d, [b"\x0b" + b"x" * 600, b"x" * 600, framing.encode(b"MSH|late")])
    assert events == [Fault("oversize")] and d.failed
    # a frame that fits, then one that ends past the cap in the same write
    d = MllpDecoder(max_size=1024)
    events = feed(d, [framing.encode(b"ok") + framing.encode(b"y" * 2000)])
    assert events == [Frame(b"ok"), Fault("oversize")]


def test_eb_without_cr_is_a_fault_unless_lenient() -> None:
    wire = b"\x0bMSH|1\x1c\x0bMSH|2\x1c"
    assert feed(MllpDecoder(), [wire]) == [Fault("eb_without_cr")]
    lenient = MllpDecoder(lenient=True)
    assert frames(feed(lenient, [wire])) == [b"MSH|1", b"MSH|2"]
    # the CR that does follow a lone EB later is not garbage
    assert feed(lenient, [b"\r" + framing.encode(b"MSH|3")]) == [Frame(b"MSH|3")]


def test_eof_mid_frame_is_reported() -> None:
    d = MllpDecoder()
    assert feed(d, [b"\x0bMSH|half"]) == []
    assert d.end_of_stream() == Fault("eof_mid_frame")
    clean = MllpDecoder()
    feed(clean, [framing.encode(b"MSH|1")])
    assert clean.end_of_stream() is None


def test_r2_commit_blocks_only_when_the_interface_speaks_r2() -> None:
    wire = framing.commit_block(True) + framing.commit_block(False)
    assert feed(MllpDecoder(r2=True), [wire]) == [Commit(True), Commit(False)]
    assert frames(feed(MllpDecoder(), [wire])) == [b"\x06", b"\x15"]
