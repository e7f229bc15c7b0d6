"""Issue 12 point 7: consent lists imported from CSV (streamed, per-line errors,
idempotent, in chunks that let sends through) and the ledger exported."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway import consent_cmd
from gateway.cli import main
from gateway.config import from_mapping
from gateway.consent import ledger
from gateway.consent.purposes import DEFAULT_POLICIES, Purpose
from gateway.usecases import Caller
from gateway.usecases.consent import IMPORT_CHUNK, DecisionRequest, ImportReport
from gateway.usecases.consent_csv import Options, records
from tests.conftest import (
    CANARY_DIGITS,
    CANARY_NUMBER,
    LOOPBACK_TEST,
    GatewayFactory,
    accept,
    state_of,
)
from tests.test_cli import _init

STAFF = Caller("user:staff", None, True, True, True, may_record_consent=True)
APPOINTMENT = DEFAULT_POLICIES[Purpose.APPOINTMENT]


async def _chunks(data: bytes, size: int = 7) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def _import(gw: Any, text: str, options: Options | None = None) -> ImportReport:
    return await gw.usecases.consent.import_csv(STAFF, _chunks(text.encode()), options or Options())


async def _ledger_rows(gw: Any) -> int:
    row = await gw.store.reader.one("SELECT count(*) FROM consent_ledger")
    return int(row[0])


async def _refusal(gw: Any, number: str, program: str = "default") -> str | None:
    idx = gw.store.blind_index(number)
    return await gw.store.writer.run(  # type: ignore[no-any-return]
        lambda conn: ledger.standing(conn, idx, program, APPOINTMENT).refusal(APPOINTMENT)
    )


async def test_records_come_as_the_bytes_arrive_with_quoted_newlines() -> None:
    pulled = 0
    text = (
        '\ufeffnumber,disclosure\n+12025550147,"Reply YES,\nthen ""STOP"" to end"\n+12025550148,x\n'
    )

    async def source() -> AsyncIterator[bytes]:
        nonlocal pulled
        for byte in text.encode():
            pulled += 1
            yield bytes([byte])

    seen: list[tuple[int, list[str] | None, int]] = []
    async for line, fields in records(source()):
        seen.append((line, fields, pulled))
    assert [(line, fields) for line, fields, _ in seen] == [
        (1, ["number", "disclosure"]),
        (2, ["+12025550147", 'Reply YES,\nthen "STOP" to end']),
        (4, ["+12025550148", "x"]),
    ]
    # The header was parsed when little more than its own bytes had been read.
    assert seen[0][2] < len("number,disclosure\n") + 8


async def test_line_errors_name_line_code_and_column_never_the_value(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    text = (
        "Phone,Decision,Scope,Date,Source,Disclosure,Program\n"
        f"{CANARY_NUMBER},opt_out,all,2024-01-02,phone,,\n"
        f"{CANARY_DIGITS}9,opt_out,,,,,\n"  # not a number
        f"{CANARY_NUMBER},maybe,,,,,\n"
        f"{CANARY_NUMBER},opt_out,purpose:compliance,,,,\n"
        f"{CANARY_NUMBER},opt_out,,yesterday,,,\n"
        f"{CANARY_NUMBER},opt_out,,2999-01-01,,,\n"
        f"{CANARY_NUMBER},opt_out,,,fax,,\n"
        f"{CANARY_NUMBER},opt_in,kind:marketing,,,,\n"  # MSG-2: no disclosure
        f"{CANARY_NUMBER},opt_out,,,,,lab\n"  # no such program
        f",opt_out,,,,,\n"
        '"+12025550147,opt_out\n'  # a quote never closed
    )
    report = await _import(gw, text)
    assert (report.rows, report.appended, report.failed) == (11, 1, 10)
    assert [(e.line, e.code, e.field) for e in report.errors] == [
        (3, "invalid_number", "number"),
        (4, "invalid_decision", "decision"),
        (5, "invalid_scope", "scope"),
        (6, "invalid_date", "date"),
        (7, "future_date", "date"),
        (8, "invalid_source", "source"),
        (9, "disclosure_required", "disclosure"),
        (10, "unknown_program", "program"),
        (11, "missing_value", "number"),
        (12, "unreadable_line", None),
    ]
    assert CANARY_DIGITS not in repr(report)


async def test_a_list_imported_twice_is_appended_once(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway()
    text = (
        "number,decision,purpose,date,disclosure\n"
        f"{CANARY_NUMBER},opt_in,marketing,2024-03-01T09:00:00Z,Texts about our clinics\n"
        "+12025550148,stop,,,\n"  # undated: matched at any time
        "+12025550148,stop,,,\n"  # the same row twice in one file
    )
    first = await _import(gw, text)
    assert (first.appended, first.unchanged) == (2, 1)
    second = await _import(gw, text)
    assert (second.appended, second.unchanged, second.failed) == (0, 3, 0)
    assert await _ledger_rows(gw) == 2


async def test_an_old_list_does_not_undo_a_newer_stop(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway()
    await gw.usecases.consent.record(STAFF, DecisionRequest(CANARY_NUMBER, "opt_out", "phone"))
    report = await _import(gw, f"number,decision,date\n{CANARY_NUMBER},opt_in,2020-01-01\n")
    assert (report.appended, report.superseded) == (0, 1)
    assert await _ledger_rows(gw) == 2  # kept as evidence
    assert await _refusal(gw, CANARY_NUMBER) == "opted_out"
    # A newer one does change the standing.
    later = gw.clock.time() + 60
    gw.clock.advance(120)
    text = f"number,decision,date\n{CANARY_NUMBER},opt_in,{later}\n"
    assert (await _import(gw, text)).appended == 1
    assert await _refusal(gw, CANARY_NUMBER) is None


async def test_a_long_list_commits_in_chunks_and_sends_go_between(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    rows = 4 * IMPORT_CHUNK
    lines = [f"+1202555{i:04d},opt_out" for i in range(rows)]
    text = "number,decision\n" + "\n".join(lines) + "\n"
    send: asyncio.Task[str] | None = None
    sent_during_import: list[bool] = []

    def progress(report: ImportReport) -> None:
        nonlocal send
        if send is None:
            send = asyncio.ensure_future(accept(gw))
        elif not report.done:
            sent_during_import.append(send.done())

    report = await gw.usecases.consent.import_csv(
        STAFF, _chunks(text.encode(), 4096), Options(), progress
    )
    assert report.appended == rows
    assert send is not None and sent_during_import[-1] is True
    assert await state_of(gw, await send) == "queued"


def test_cli_import_with_progress_then_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf, _ = _init(tmp_path, capsys)
    config = ["--config", str(conf)]
    listing = tmp_path / "optouts.csv"
    listing.write_text(
        "Mobile,Opted Out On\n"
        + "".join(f"+1202555{i:04d},2024-02-0{1 + i % 9}\n" for i in range(1200))
        + "12,2024-02-01\n"
    )
    args = ["consent", "import", str(listing), "--decision", "opt_out", *config]
    assert main([*args, "--map", "date=Opted Out On"]) == 1  # one refused line
    out = capsys.readouterr()
    size = listing.stat().st_size
    progress = out.err.splitlines()  # plain lines: stderr is not a terminal here
    assert progress[-1] == f"consent import, bytes read: {size:,}/{size:,} (100%)"
    assert len(progress) >= 2  # one after the first chunk too
    table = [line.split() for line in out.out.splitlines()[:2]]
    assert table == [["LINE", "CODE", "FIELD"], ["1202", "invalid_number", "number"]]
    assert "1201 rows: 1200 appended" in out.out
    assert main([*args, "--map", "date=Opted Out On"]) == 1
    assert "1200 already there" in capsys.readouterr().out

    export = tmp_path / "ledger.csv"
    assert main(["consent", "export", str(export), *config]) == 0
    assert stat.S_IMODE(export.stat().st_mode) == 0o600
    rows = list(csv.DictReader(io.StringIO(export.read_text())))
    assert len(rows) == 1200
    assert (rows[0]["number"], rows[0]["decision"], rows[0]["actor"]) == (
        "+12025550000",
        "opt_out",
        "console",
    )
    # The export reads back in as it is: nothing new.
    assert main(["consent", "import", str(export), *config]) == 0
    assert "0 appended, 1200 already there" in capsys.readouterr().out
    assert main(["consent", "export", str(export), *config]) == 1  # never overwritten


async def test_the_export_keeps_an_erased_contact_by_its_key(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway()
    await gw.usecases.consent.record(STAFF, DecisionRequest(CANARY_NUMBER, "opt_out", "phone"))
    await gw.store.writer.run(lambda conn: conn.execute("DELETE FROM contacts"))  # erased
    (row,) = [r async for r in await gw.usecases.consent.export(STAFF)]
    assert row.number is None
    assert row.contact == gw.store.blind_index(CANARY_NUMBER).hex()
    assert await _refusal(gw, CANARY_NUMBER) == "opted_out"  # MSG-11: still suppressed


async def test_the_same_list_imported_twice_at_once_is_appended_once(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    rows = 3 * IMPORT_CHUNK
    text = "number,decision\n" + "".join(f"+1202555{i:04d},opt_out\n" for i in range(rows))
    first, second = await asyncio.gather(_import(gw, text), _import(gw, text))
    assert first.appended + second.appended == rows
    assert first.unchanged + second.unchanged == rows
    assert await _ledger_rows(gw) == rows


def test_cli_on_a_cluster_config_names_the_api_import(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listing = tmp_path / "optouts.csv"
    listing.write_text(f"number,decision\n{CANARY_NUMBER},opt_out\n")
    config = from_mapping(
        {
            "data_dir": str(tmp_path),
            "source": str(tmp_path / "smsgw.toml"),
            "routes": [{"name": "main", "type": "loopback", **LOOPBACK_TEST}],
            "cluster": {"enabled": True, "node_id": "gw1", "conninfo": "host=db1 dbname=s"},
        }
    )
    args = argparse.Namespace(action="import", file=str(listing))
    assert consent_cmd.run(args, config) == 2
    err = capsys.readouterr().err
    assert "POST /api/v1/consents/import" in err and CANARY_DIGITS not in err
