from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from drivers.base import Receipt, ReceiptState
from drivers.smpp.dlr import (
    ParsedReceipt,
    as_receipt,
    error_code,
    id_variants,
    parse_receipt,
    parse_receipt_text,
    receipt,
    receipt_from_tlvs,
)

BODY = "CANARY potassium 6.9 mmol/L call ward 7B"  # stands in for patient data


def parse(text: str | bytes) -> ParsedReceipt:
    parsed = parse_receipt_text(text)
    assert parsed is not None, text
    return parsed


def at(year: int, month: int, day: int, hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_spec_example() -> None:
    parsed = parse(
        "id:2147483649 sub:001 dlvrd:001 submit date:0610121530 done date:0610121532 "
        "stat:DELIVRD err:000 text:Hello from the ward"
    )
    assert parsed == ParsedReceipt(
        message_id="2147483649",
        state=ReceiptState.DELIVERED,
        raw_state="DELIVRD",
        error="000",
        submitted=at(2006, 10, 12, 15, 30),
        done=at(2006, 10, 12, 15, 32),
        delivered_parts=1,
        submitted_parts=1,
    )
    assert error_code(parsed) is None


# (receipt text, expected id, state, error, submitted, done, delivered, submitted parts)
VARIANTS = [
    pytest.param(  # leading zeros kept as sent (Vonage style, "text:none")
        "id:0000000012345678 sub:001 dlvrd:001 submit date:1601010100 done date:1601010101 "
        "stat:DELIVRD err:000 text:none",
        "0000000012345678", ReceiptState.DELIVERED, "000",
        at(2016, 1, 1, 1, 0), at(2016, 1, 1, 1, 1), 1, 1, id="leading-zeros",
    ),
    pytest.param(  # 12-digit dates with seconds
        "id:64567564356765435676 sub:001 dlvrd:001 submit date:190608165232 "
        "done date:190608165237 stat:DELIVRD err:000 text:Hello World",
        "64567564356765435676", ReceiptState.DELIVERED, "000",
        at(2019, 6, 8, 16, 52, 32), at(2019, 6, 8, 16, 52, 37), 1, 1, id="12-digit-dates",
    ),
    pytest.param(
        "id:6d3a0f1b sub:001 dlvrd:000 submit date:2401311200 done date:2402011200 "
        "stat:undeliv err:001 text:x",
        "6d3a0f1b", ReceiptState.FAILED, "001",
        at(2024, 1, 31, 12, 0), at(2024, 2, 1, 12, 0), 0, 1, id="lowercase-hex-id",
    ),
    pytest.param(
        "ID:5F3A SUB:001 DLVRD:000 SUBMIT DATE:2401011200 DONE DATE:2401021200 "
        "STAT:EXPIRED ERR:000 Text:abc",
        "5F3A", ReceiptState.EXPIRED, "000",
        at(2024, 1, 1, 12, 0), at(2024, 1, 2, 12, 0), 0, 1, id="uppercase-keys",
    ),
    pytest.param(
        "id:1001 sub:002 dlvrd:002 submit_date:2312312359 done_date:2401010000 "
        "stat:DELIVRD err:000",
        "1001", ReceiptState.DELIVERED, "000",
        at(2023, 12, 31, 23, 59), at(2024, 1, 1, 0, 0), 2, 2, id="underscore-dates-no-text",
    ),
    pytest.param(
        "stat:REJECTD err:011 done date:2401011201 id:77 sub:001 submit date:2401011200",
        "77", ReceiptState.FAILED, "011",
        at(2024, 1, 1, 12, 0), at(2024, 1, 1, 12, 1), None, 1, id="any-order",
    ),
    pytest.param(
        "id:12345 stat:DELIVRD", "12345", ReceiptState.DELIVERED, None,
        None, None, None, None, id="missing-fields",
    ),
    pytest.param(
        "id:1 sub:001 dlvrd:001 submit date:2401011200 done date:2401011201 stat:DELIVRD "
        "err:000 text:stat:UNDELIV err:999 id:666 " + BODY,
        "1", ReceiptState.DELIVERED, "000",
        at(2024, 1, 1, 12, 0), at(2024, 1, 1, 12, 1), 1, 1, id="text-has-stat",
    ),
    pytest.param(
        "  id: 42   sub: 001 dlvrd :001  submit date: 2401011200 done  date:2401011205 "
        "stat : DELIVRD   err: 000  text:  ",
        "42", ReceiptState.DELIVERED, "000",
        at(2024, 1, 1, 12, 0), at(2024, 1, 1, 12, 5), 1, 1, id="extra-spaces",
    ),
    pytest.param(  # an empty value must not swallow the key after it
        "id:9 sub:001 dlvrd:0 submit date:2401011200 done date: stat:ACCEPTD err:000",
        "9", ReceiptState.ACCEPTED, "000",
        at(2024, 1, 1, 12, 0), None, 0, 1, id="empty-done-date",
    ),
    pytest.param(  # a receipt wrapped across lines (seen quoted on Stack Overflow)
        "id:40072910491427628 sub:001 dlvrd:001 submit date:1007291049 done\n"
        "date:1007291049 stat:DELIVRD err:000",
        "40072910491427628", ReceiptState.DELIVERED, "000",
        at(2010, 7, 29, 10, 49), at(2010, 7, 29, 10, 49), 1, 1, id="newline-in-key",
    ),
    pytest.param(
        "id:1 sub:001 dlvrd:000 submit date:1313131313 done date:2402301200 stat:UNDELIV err:34",
        "1", ReceiptState.FAILED, "034", None, None, 0, 1, id="bad-dates-2-digit-err",
    ),
    pytest.param(
        "id:a1b2-c3 stat:DELIVERED err:0", "a1b2-c3", ReceiptState.DELIVERED, "000",
        None, None, None, None, id="long-form-stat",
    ),
    pytest.param(
        "id:7,sub:001,dlvrd:001,stat:DELIVRD,err:000", "7", ReceiptState.DELIVERED, "000",
        None, None, 1, 1, id="commas",
    ),
    pytest.param(  # the first occurrence of a key counts
        "id:1 stat:DELIVRD err:000 stat:UNDELIV id:2 err:099", "1", ReceiptState.DELIVERED,
        "000", None, None, None, None, id="first-occurrence",
    ),
    pytest.param(
        b"id:3 sub:001 dlvrd:001 stat:DELIVRD err:000 text:caf\xe9\x00",
        "3", ReceiptState.DELIVERED, "000", None, None, 1, 1, id="bytes-latin1-nul",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message_id", "state", "error", "submitted", "done", "delivered", "parts"), VARIANTS
)
def test_real_world_variants(
    text: str | bytes,
    message_id: str,
    state: ReceiptState,
    error: str | None,
    submitted: datetime | None,
    done: datetime | None,
    delivered: int | None,
    parts: int | None,
) -> None:
    parsed = parse(text)
    assert (parsed.message_id, parsed.state, parsed.error) == (message_id, state, error)
    assert (parsed.submitted, parsed.done) == (submitted, done)
    assert (parsed.delivered_parts, parsed.submitted_parts) == (delivered, parts)
    assert BODY not in repr(parsed)


@pytest.mark.parametrize(
    ("word", "state"),
    [
        ("DELIVRD", ReceiptState.DELIVERED),
        ("DELIVERED", ReceiptState.DELIVERED),
        ("delivrd", ReceiptState.DELIVERED),
        ("UNDELIV", ReceiptState.FAILED),
        ("UNDELIVERABLE", ReceiptState.FAILED),
        ("UNDELIVERED", ReceiptState.FAILED),
        ("REJECTD", ReceiptState.FAILED),
        ("REJECTED", ReceiptState.FAILED),
        ("DELETED", ReceiptState.FAILED),
        ("SKIPPED", ReceiptState.FAILED),
        ("EXPIRED", ReceiptState.EXPIRED),
        ("ENROUTE", ReceiptState.ENROUTE),
        ("EN_ROUTE", ReceiptState.ENROUTE),
        ("BUFFERED", ReceiptState.ENROUTE),
        ("ACCEPTD", ReceiptState.ACCEPTED),
        ("ACCEPTED", ReceiptState.ACCEPTED),
        ("UNKNOWN", ReceiptState.UNKNOWN),
        ("GIBBERISH", ReceiptState.UNKNOWN),
    ],
)
def test_state_words(word: str, state: ReceiptState) -> None:
    parsed = parse(f"id:1 stat:{word} err:000")
    assert parsed.state is state
    assert parsed.raw_state == word.upper()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "Hello, my id is 7",
        "id:5",  # an id and nothing else a receipt has
        "stat:DELIVRD err:000",  # no id to correlate
        "text:id:5 stat:DELIVRD",  # keys after text: do not count
        "id: stat:DELIVRD",  # empty id
        "id:" + "9" * 66 + " stat:DELIVRD",  # longer than any SMPP message_id
        "\u017ftat:DELIVRD id:1",  # U+017F (long s) is not an "s"
        b"\xff\xfe\x00",
    ],
)
def test_not_a_receipt(text: str | bytes) -> None:
    assert parse_receipt_text(text) is None


def test_dates_in_the_zone_given() -> None:
    plus2 = timezone(timedelta(hours=2))
    parsed = parse_receipt_text("id:1 stat:DELIVRD done date:2401011200", tz=plus2)
    assert parsed is not None and parsed.done == datetime(2024, 1, 1, 10, 0, tzinfo=UTC)


def test_tlvs_alone() -> None:
    parsed = receipt_from_tlvs(
        {
            "receipted_message_id": b"1F4\x00",
            "message_state": b"\x05",
            "network_error_code": b"\x03\x00\x22",
        }
    )
    assert parsed == ParsedReceipt(
        message_id="1F4",
        state=ReceiptState.FAILED,
        raw_state="UNDELIV",
        error="034",
        submitted=None,
        done=None,
        delivered_parts=None,
        submitted_parts=None,
        network_type=3,
    )
    assert error_code(parsed) == "smpp-dlr:UNDELIV:034"


TLV_NAMES = ["ENROUTE", "DELIVRD", "EXPIRED", "DELETED", "UNDELIV"]
TLV_NAMES += ["ACCEPTD", "UNKNOWN", "REJECTD", "SKIPPED"]


@pytest.mark.parametrize(
    ("value", "state"),
    list(enumerate(TLV_NAMES, start=1)),
)
def test_tlv_message_states(value: int, state: str) -> None:
    for encoded in (value, bytes([value])):
        parsed = receipt_from_tlvs({"receipted_message_id": b"9", "message_state": encoded})
        assert parsed is not None and parsed.raw_state == state
        assert parsed.state is parse(f"id:9 stat:{state}").state


def test_tlvs_win_over_text() -> None:
    text = (
        "id:500 sub:001 dlvrd:001 submit date:2401011200 done date:2401011201 "
        "stat:DELIVRD err:000 text:hi"
    )
    tlvs: dict[str, bytes | int] = {
        "receipted_message_id": b"1F4\x00",
        "message_state": 3,
        "network_error_code": (3 << 16) | 27,
    }
    parsed = parse_receipt(text, tlvs)
    assert parsed is not None
    assert (parsed.message_id, parsed.state, parsed.raw_state) == (
        "1F4",
        ReceiptState.EXPIRED,
        "EXPIRED",
    )
    assert (parsed.error, parsed.network_type) == ("027", 3)
    # what the TLVs do not carry still comes from the text
    assert parsed.done == at(2024, 1, 1, 12, 1) and parsed.submitted_parts == 1


def test_malformed_tlvs_fall_back_to_text() -> None:
    tlvs: dict[str, bytes | int] = {
        "receipted_message_id": b"",
        "message_state": 77,
        "network_error_code": b"\x03",
    }
    parsed = parse_receipt("id:8 stat:UNDELIV err:001", tlvs)
    assert parsed is not None
    assert (parsed.message_id, parsed.raw_state, parsed.error) == ("8", "UNDELIV", "001")
    assert parsed.network_type is None


def test_text_without_id_takes_the_tlv_id() -> None:
    parsed = parse_receipt(b"stat:DELIVRD err:000", {"receipted_message_id": b"abc\x00"})
    assert parsed is not None and (parsed.message_id, parsed.state) == (
        "abc",
        ReceiptState.DELIVERED,
    )


def test_message_payload_when_short_message_is_empty() -> None:
    tlvs = {"message_payload": b"id:12 stat:EXPIRED err:000 text:" + BODY.encode()}
    parsed = parse_receipt(b"", tlvs)
    assert parsed is not None and (parsed.message_id, parsed.state) == ("12", ReceiptState.EXPIRED)
    assert receipt_from_tlvs(tlvs) == parsed


def test_tlv_id_without_a_state_is_not_a_receipt() -> None:
    assert receipt_from_tlvs({"receipted_message_id": b"12\x00"}) is None
    assert receipt_from_tlvs({}) is None


def shares_variant(a: str, b: str) -> bool:
    return not set(id_variants(a)).isdisjoint(id_variants(b))


@pytest.mark.parametrize(
    ("submitted", "reported"),
    [
        ("0x1F4", "500"),
        ("1F4", "500"),
        ("1f4", "0500"),
        ("0001234", "1234"),
        ("0000029095", "29095"),
        ("ABCDEF12", "abcdef12"),
        ("007-A", "7-a"),
        # hex in submit_sm_resp, decimal in the receipt (reported against Jasmin, #586)
        ("812FC7470000001B", "9308878062554710043"),
    ],
)
def test_id_variants_match(submitted: str, reported: str) -> None:
    assert shares_variant(submitted, reported) and shares_variant(reported, submitted)


@pytest.mark.parametrize(("a", "b"), [("500", "501"), ("1F4", "1F5"), ("abc-1", "abc-2")])
def test_id_variants_keep_different_ids_apart(a: str, b: str) -> None:
    assert not shares_variant(a, b)


def test_id_variants_shape() -> None:
    assert id_variants("500") == ("500", "1F4", "1f4", "1280")
    assert id_variants("0x1F4")[0] == "0x1F4" and "500" in id_variants("0x1F4")
    assert id_variants("0x10") == ("0x10", "0X10", "10", "16")  # 0x means hex: no 10 -> A
    assert id_variants("000") == ("000", "0")
    assert id_variants("0001234")[:2] == ("0001234", "1234")
    assert id_variants("007-A") == ("007-A", "007-a", "7-A", "7-a")
    assert id_variants("a-b") == ("a-b", "A-B")
    assert id_variants("") == ()


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("id:1 stat:DELIVRD err:000", None),
        ("id:1 stat:DELIVRD err:005", None),
        ("id:1 stat:ENROUTE err:000", None),
        ("id:1 stat:ACCEPTD", None),
        ("id:1 stat:ENROUTE err:027", "smpp-dlr:ENROUTE:027"),
        ("id:1 stat:UNDELIVERABLE err:34", "smpp-dlr:UNDELIV:034"),
        ("id:1 stat:EXPIRED", "smpp-dlr:EXPIRED"),
        ("id:1 stat:SKIPPED err:000", "smpp-dlr:SKIPPED:000"),
        ("id:1 stat:Gibberish err:0x0b", "smpp-dlr:OTHER:0X0B"),
        ("id:1 err:001", "smpp-dlr:OTHER:001"),
    ],
)
def test_error_code(text: str, code: str | None) -> None:
    assert error_code(parse(text)) == code


def test_as_receipt() -> None:
    receipt = as_receipt(parse("id:77 stat:REJECTD err:011"))
    assert receipt == Receipt("77", ReceiptState.FAILED, "smpp-dlr:REJECTD:011")


# -- properties --------------------------------------------------------------------

HUGE = "9" * 5000  # past CPython's 4300-digit limit on int(str)
KEYS = ["id:", "sub:", "dlvrd:", "submit date:", "done_date:", "stat:", "err:", "text:", "ID:"]
FRAGMENTS = st.one_of(
    st.sampled_from([*KEYS, " ", "\x00", "DELIVRD", "0x1F4", "2402301200", HUGE]),
    st.text(max_size=12),
)
receipt_like = st.lists(FRAGMENTS, max_size=30).map("".join)
tlv_values = st.one_of(
    st.binary(max_size=8), st.integers(min_value=-(2**70), max_value=2**70), st.text(max_size=8)
)
tlv_maps = st.dictionaries(
    st.sampled_from(
        ["receipted_message_id", "message_state", "network_error_code", "message_payload"]
    ),
    tlv_values,
)


@given(st.one_of(st.text(), st.binary(), receipt_like, receipt_like.map(str.encode)))
@example(f"id:1 sub:{HUGE} dlvrd:{HUGE} err:{HUGE} submit date:{HUGE}")
@example(f"id:{HUGE} stat:DELIVRD")
@example("id:1 stat:DELIVRD done date:9912312460 submit date:0002300000")
def test_text_parser_never_raises(text: str | bytes) -> None:
    parsed = parse_receipt_text(text)
    if parsed is not None:
        assert parsed.message_id and isinstance(parsed.state, ReceiptState)
        error_code(parsed)


@given(st.one_of(st.none(), st.text(), st.binary(), receipt_like), tlv_maps)
def test_tlv_parser_never_raises(text: str | bytes | None, tlvs: dict[str, bytes | int]) -> None:
    parsed = parse_receipt(text, tlvs)
    receipt_from_tlvs(tlvs)
    if parsed is not None:
        as_receipt(parsed)


@given(st.text())
def test_id_variants_never_raise(message_id: str) -> None:
    variants = id_variants(message_id)
    assert len(set(variants)) == len(variants)


STATES = {
    "DELIVRD": ReceiptState.DELIVERED,
    "EXPIRED": ReceiptState.EXPIRED,
    "DELETED": ReceiptState.FAILED,
    "UNDELIV": ReceiptState.FAILED,
    "ACCEPTD": ReceiptState.ACCEPTED,
    "UNKNOWN": ReceiptState.UNKNOWN,
    "REJECTD": ReceiptState.FAILED,
    "ENROUTE": ReceiptState.ENROUTE,
    "SKIPPED": ReceiptState.FAILED,
}
ID_CHARS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-"
stamps = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31, 23, 59))


def key(draw: st.DrawFn, name: str) -> str:
    return draw(st.sampled_from([name, name.upper(), name.title()]))


@st.composite
def receipts(draw: st.DrawFn) -> tuple[str, ParsedReceipt]:
    """A receipt in some carrier's dialect, and what parsing it must give."""
    seconds = draw(st.booleans())
    submitted, done = (draw(stamps).replace(microsecond=0) for _ in range(2))
    if not seconds:
        submitted, done = submitted.replace(second=0), done.replace(second=0)
    raw_state = draw(st.sampled_from(sorted(STATES)))
    expected = ParsedReceipt(
        message_id=draw(st.text(ID_CHARS, min_size=1, max_size=24)),
        state=STATES[raw_state],
        raw_state=raw_state,
        error=f"{draw(st.integers(0, 999)):03d}",
        submitted=submitted.replace(tzinfo=UTC),
        done=done.replace(tzinfo=UTC),
        delivered_parts=draw(st.integers(0, 999)),
        submitted_parts=draw(st.integers(0, 999)),
    )
    date_format = "%y%m%d%H%M%S" if seconds else "%y%m%d%H%M"
    space = draw(st.sampled_from([" ", "_"]))
    fields = [
        f"{key(draw, 'id')}:{expected.message_id}",
        f"{key(draw, 'sub')}:{expected.submitted_parts:03d}",
        f"{key(draw, 'dlvrd')}:{expected.delivered_parts:03d}",
        f"{key(draw, 'submit')}{space}{key(draw, 'date')}:{submitted.strftime(date_format)}",
        f"{key(draw, 'done')}{space}{key(draw, 'date')}:{done.strftime(date_format)}",
        f"{key(draw, 'stat')}:{draw(st.sampled_from([raw_state, raw_state.lower()]))}",
        f"{key(draw, 'err')}:{expected.error}",
    ]
    fields = draw(st.permutations(fields))
    separator = draw(st.sampled_from([" ", "  ", " \n"]))
    text = separator.join(fields) + f" {key(draw, 'text')}:" + draw(st.text(max_size=40))
    return text, expected


@given(receipts())
def test_round_trip(case: tuple[str, ParsedReceipt]) -> None:
    text, expected = case
    assert parse_receipt_text(text) == expected
    assert parse_receipt_text(text.encode()) == expected


# The TLVs a receipt carries, each maybe absent, often well formed (a state of 0-9, an
# id, a three-octet network error), sometimes not.
receipt_tlvs = st.fixed_dictionaries(
    {},
    optional={
        "receipted_message_id": st.one_of(st.text(ID_CHARS, min_size=1, max_size=12), tlv_values),
        "message_state": st.one_of(st.integers(-1, 12), tlv_values),
        "network_error_code": st.one_of(st.binary(min_size=3, max_size=3), tlv_values),
        "message_payload": st.one_of(receipt_like.map(str.encode), tlv_values),
    },
)


@given(st.one_of(st.none(), receipt_like.map(str.encode), receipt_like), receipt_tlvs)
@example(b"id:1 stat:UNDELIV err:034 text:", {"receipted_message_id": "1", "message_state": 2})
@example(b"id:1 stat:DELIVRD err:034", {"receipted_message_id": "1", "message_state": 5})
@example(None, {"receipted_message_id": "0A", "message_state": 5, "network_error_code": b"\3\0\42"})
def test_receipt_is_as_receipt_of_the_parse(
    text: str | bytes | None, tlvs: dict[str, bytes | int]
) -> None:
    """The driver's short way (no text read when the TLVs say it all) gives what the
    whole parse gives."""
    parsed = parse_receipt(text, tlvs)
    expected = None if parsed is None else as_receipt(parsed, alternates=True)
    assert receipt(text, tlvs) == expected
