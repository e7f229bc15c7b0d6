"""Issue 15 points 1 and 8: contacts imported from CSV (streamed in any common
encoding, column mapping, E.164 in the file's region, de-duplication, per-line
errors, idempotent re-import, bounded chunks that let sends through)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gateway.contacts.audience import AudienceSpec
from gateway.contacts.csv_import import Options
from gateway.contacts.importer import IMPORT_CHUNK, ImportReport
from gateway.usecases import Caller
from gateway.usecases.consent_csv import records
from gateway.usecases.csv_reader import MAX_RECORD, Decoder, coded_records
from tests.conftest import CANARY_DIGITS, CANARY_NUMBER, GatewayFactory, accept, state_of

STAFF = Caller.for_panel_user("user:staff", reads_phi=True, acts=True)
VIEWER = Caller("token:r", "r", False, False, False)


async def _chunks(data: bytes, size: int = 7) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def _import(
    gw: Any, data: str | bytes, options: Options | None = None, size: int = 7
) -> ImportReport:
    raw = data.encode() if isinstance(data, str) else data
    report: ImportReport = await gw.contacts.imports.run(
        STAFF, _chunks(raw, size), options or Options()
    )
    return report


async def _coded(data: bytes, size: int = 5) -> list[tuple[int, Any]]:
    return [r async for r in coded_records(_chunks(data, size))]


SAMPLE = (
    "Mobile,Lang,Age group,Site,Interests,Tags,Group\n"
    "(202) 555-0147,es,65+,north,flu;tips,vip,Flu 2026\n"
    "202-555-0148,en,18-34,south,,,Flu 2026\n"
)


async def test_rows_become_contacts_in_the_files_region(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway()
    report = await _import(gw, SAMPLE, Options(region="US"))
    assert (report.rows, report.created, report.failed, report.fatal) == (2, 2, 0, None)
    assert report.encoding == "utf-8"
    page = await gw.contacts.page(STAFF, AudienceSpec())
    assert page.total == 2
    first = next(c for c in page.items if c.language == "es")
    assert (first.age_band, first.clinic, first.preferences, first.tags) == (
        "65-plus",
        "north",
        ("flu", "tips"),
        ("vip",),
    )
    assert first.number_masked == "+1 202 ••• ••47"  # masked for the panel user
    (group,) = await gw.contacts.groups(STAFF)
    assert (group.name, group.members) == ("Flu 2026", 2)
    assert (await gw.contacts.count(STAFF, AudienceSpec(groups=[group.id], languages=["es"]))) == 1
    # The same national number in Spain's region is another (valid) number: not US.
    es = await _import(gw, "number\n612 345 678\n", Options(region="ES"))
    assert es.created == 1


async def test_a_file_imported_twice_changes_nothing_the_second_time(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    text = SAMPLE + "+12025550147,es,,,,,\n"  # the first number again: merged, not a second
    first = await _import(gw, text)
    assert (first.created, first.duplicates, first.unchanged) == (2, 1, 1)
    second = await _import(gw, text)
    assert (second.created, second.updated, second.unchanged, second.failed) == (0, 0, 3, 0)
    # A changed attribute is an update of the same contact.
    third = await _import(gw, "phone,clinic\n+12025550147,south\n")
    assert (third.created, third.updated) == (0, 1)
    assert (await gw.contacts.page(STAFF, AudienceSpec())).total == 2


async def test_line_errors_name_line_code_and_column_never_the_value(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    long_line = "+12025550149," + "x" * (1024 * 1024) + "\n"  # a 1 MB line
    text = (
        "number,language,time_zone,age_band,tags\n"
        f"{CANARY_DIGITS}9,,,,\n"  # not a number
        f"{CANARY_NUMBER},fr,,,\n"  # no replies in French configured
        f"{CANARY_NUMBER},,Mars/Olympus,,\n"
        f"{CANARY_NUMBER},,,=1+2,\n"  # a formula is not an age band
        f"{CANARY_NUMBER},,,,=HYPERLINK(x)\n"
        "\n"  # an empty line: skipped, still counted
        + long_line
        + ",en,,,\n"
        + f'{CANARY_NUMBER},"en,,,\n'  # a stray quote, never closed
        + "+12025550150,en,,,\n"
    )
    report = await _import(gw, text, size=64 * 1024)
    assert [(e.line, e.code, e.field) for e in report.errors] == [
        (2, "invalid_number", "number"),
        (3, "invalid_language", "language"),
        (4, "invalid_time_zone", "time_zone"),
        (5, "invalid_age_band", "age_band"),
        (6, "invalid_tags", "tags"),
        (8, "too_long", None),
        (9, "missing_value", "number"),
        (10, "unclosed_quote", None),
    ]
    assert (report.created, report.failed) == (1, 8)  # the line after them all goes in
    assert CANARY_DIGITS not in repr(report)


@pytest.mark.parametrize(
    ("encoding", "reported"),
    [
        ("utf-8", "utf-8"),
        ("utf-8-sig", "utf-8-sig"),
        ("utf-16", "utf-16"),  # with its byte-order mark
        ("utf-16-le", "utf-16-le"),  # without one
        ("latin-1", "latin-1"),
    ],
)
async def test_encodings_are_found_from_the_bytes(
    open_gateway: GatewayFactory, encoding: str, reported: str
) -> None:
    gw = await open_gateway()
    text = "Teléfono,Clínica\n+12025550147,north\n+12025550148,south\n"
    mapping = Options(columns={"number": "Teléfono", "clinic": "Clínica"})
    report = await _import(gw, text.encode(encoding), mapping)
    assert (report.fatal, report.created, report.failed) == (None, 2, 0)
    assert report.encoding == reported


async def test_a_decoder_falls_back_to_latin1_where_utf8_stops() -> None:
    d = Decoder()
    text = d.decode("número\n".encode()) + d.decode("Peña\n".encode("latin-1"), final=True)
    assert text == "número\nPeña\n"
    assert (d.encoding, d.fell_back) == ("latin-1", True)


async def test_stray_quotes_inside_a_field_are_data() -> None:
    data = b'number,clinic\n+12025550147,O"Brien\n+12025550148,"a ""b"", c"\n'
    assert await _coded(data) == [
        (1, ["number", "clinic"]),
        (2, ["+12025550147", 'O"Brien']),
        (3, ["+12025550148", 'a "b", c']),
    ]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=30))
def test_any_chunking_gives_the_same_records(sizes: list[int]) -> None:
    data = (
        '\ufeffnumber,note\n+1,"a\nb"\n\n+2,O"x\n' + "+3," + "y" * (MAX_RECORD + 10) + "\n+4,z"
    ).encode()

    async def chunked() -> AsyncIterator[bytes]:
        i = 0
        for n in sizes * (len(data) // sum(sizes) + 1):
            if i >= len(data):
                return
            yield data[i : i + n]
            i += n

    async def whole() -> AsyncIterator[bytes]:
        yield data

    async def collect(source: AsyncIterator[bytes]) -> list[tuple[int, Any]]:
        return [r async for r in coded_records(source)]

    expected = asyncio.run(collect(whole()))
    assert expected[-2:] == [(6, "too_long"), (7, ["+4", "z"])]
    assert asyncio.run(collect(chunked())) == expected


async def test_the_consent_reader_refuses_a_long_line_once() -> None:
    # The shared reader: a 1 MB line is one refused record, and the next line is read.
    data = ("number,decision\n+1" + "9" * 1_000_000 + ",stop\n+12025550147,stop\n").encode()
    out = [r async for r in records(_chunks(data, 4096))]
    assert out == [(1, ["number", "decision"]), (2, None), (3, ["+12025550147", "stop"])]


async def test_a_formula_in_a_group_name_stays_text(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway()
    report = await _import(gw, "number,group\n+12025550147,\"=cmd|' /C calc'!A0\"\n")
    assert report.created == 1
    names = {g.name for g in await gw.contacts.groups(STAFF)}
    assert names == {"=cmd", "' /C calc'!A0"}  # `|` separates groups: text, never evaluated


async def test_a_header_without_a_number_column_is_refused(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway()
    assert (await _import(gw, "name,clinic\nAna,north\n")).fatal == "missing_column"
    assert (await _import(gw, "")).fatal == "empty_file"
    mapped = await _import(
        gw, "Cell phone,x\n+12025550147,1\n", Options(columns={"number": "Cell phone"})
    )
    assert (mapped.created, mapped.ignored_columns) == (1, ["x"])


async def test_import_into_a_group_and_refusals(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway()
    group = await gw.contacts.create_group(STAFF, "Screening", None)
    report = await _import(gw, "number\n+12025550147\n+12025550148\n", Options(group=group.id))
    assert report.created == 2
    assert (await gw.contacts.group(STAFF, group.id)).members == 2
    with pytest.raises(Exception, match="region"):
        await _import(gw, "number\n", Options(region="XX"))
    with pytest.raises(Exception, match="may not"):
        await gw.contacts.imports.run(VIEWER, _chunks(b"number\n"), Options())


async def test_a_big_import_commits_in_chunks_and_sends_go_between(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    rows = 4 * IMPORT_CHUNK
    text = "number,clinic\n" + "".join(f"+1202555{i:04d},north\n" for i in range(rows))
    send: asyncio.Task[str] | None = None
    sent_during_import: list[bool] = []

    def progress(report: ImportReport) -> None:
        nonlocal send
        if send is None:
            send = asyncio.ensure_future(accept(gw))
        elif not report.done:
            sent_during_import.append(send.done())

    report = await gw.contacts.imports.run(STAFF, _chunks(text.encode(), 4096), Options(), progress)
    assert report.created == rows
    # The send started after the first chunk was accepted before the import ended.
    assert send is not None and sent_during_import and sent_during_import[-1] is True
    assert await state_of(gw, await send) == "queued"


async def test_the_import_is_audited_with_counts_and_no_numbers(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    await _import(gw, f"number\n{CANARY_NUMBER}\n", Options(name="spring.csv"))
    rows = await gw.store.reader.all("SELECT action, detail FROM audit_log")
    (entry,) = [json.loads(r[1]) for r in rows if r[0] == "contacts_imported"]
    assert (entry["file"], entry["created"], entry["rows"]) == ("spring.csv", 1, 1)
    assert CANARY_DIGITS not in str([tuple(r) for r in rows])


async def test_an_erased_person_leaves_no_tag_or_group_membership(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    await _import(gw, f"number,tags,groups\n{CANARY_NUMBER},vip,Flu\n+12025550148,vip,Flu\n")
    await gw.erasures.erase(CANARY_NUMBER, "user:admin")
    (group,) = await gw.contacts.groups(STAFF)
    assert group.members == 1
    assert await gw.contacts.count(STAFF, AudienceSpec(tags=["vip"])) == 1
    idx = gw.store.blind_index(CANARY_NUMBER)
    for table in ("contact_tags", "contact_group_members"):
        row = await gw.store.reader.one(
            f"SELECT count(*) FROM {table} WHERE contact_idx = ?",  # noqa: S608 - a fixed name
            (idx,),
        )
        assert row is not None and row[0] == 0, table


_CELL = st.text(alphabet=st.sampled_from('ab,"\n\r é'), max_size=8)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(_CELL, min_size=1, max_size=4), min_size=1, max_size=8),
    st.integers(min_value=1, max_value=40),
)
def test_what_the_csv_module_writes_reads_back_record_for_record(
    rows: list[list[str]], size: int
) -> None:
    lines = []
    for r in rows:
        out = io.StringIO()
        csv.writer(out, lineterminator="\r\n").writerow(r)
        lines.append(out.getvalue())
    assume(all(line.count("\n") <= 20 for line in lines))
    text = "".join(lines)
    # A line of blanks only (an unquoted " ") is an empty line: skipped, as meant.
    written = [r for r, line in zip(rows, lines, strict=True) if line.strip()]

    async def collect() -> list[Any]:
        return [fields async for _, fields in coded_records(_chunks(text.encode(), size))]

    assert asyncio.run(collect()) == written
