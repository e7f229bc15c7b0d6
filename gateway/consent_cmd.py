"""`smsgw consent import FILE` and `smsgw consent export FILE`: the ledger as CSV.

Import reads the file in chunks (never whole) and commits IMPORT_CHUNK rows per
transaction, so a running gateway on the same store keeps sending meanwhile; a
progress line (`gateway/progress.py`, on stderr) shows how much of the file is in, and
the refused lines are listed by number and code (a LINE, CODE, FIELD table), never
their content. Export writes every ledger row, numbers decrypted, to a new owner-only
file. Both are audited (actor `console`). A cluster node's config is refused with the
API's import and export named instead (`POST /api/v1/consents/import`, any node).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drivers.clock import SystemClock
from gateway.config import Config
from gateway.console import CONSOLE, audit_trail, with_store
from gateway.progress import ProgressLine
from gateway.table import table
from gateway.usecases import Caller, Consent
from gateway.usecases.consent import ImportReport
from gateway.usecases.consent_csv import (
    EXPORT_HEADER,
    Options,
    csv_line,
    export_line,
    file_chunks,
    parse_mapping,
)

CONSOLE_CALLER = Caller(
    actor=CONSOLE,
    token_id=None,
    sees_all=True,
    may_send=False,
    may_read_phi=True,
    may_record_consent=True,
)


def add_parser(sub: Any, load: Callable[[str | None], Config]) -> None:
    parser = sub.add_parser("consent", help="import or export the consent ledger as CSV")
    actions = parser.add_subparsers(dest="action", required=True)
    imp = actions.add_parser("import", help="append a CSV list of opt-outs and consents")
    imp.add_argument("file", help="the CSV file (a header row names the columns)")
    imp.add_argument(
        "--map",
        default="",
        help="FIELD=Header,... for columns the usual names miss (fields: number, decision,"
        " scope, purpose, program, date, source, disclosure, note)",
    )
    imp.add_argument(
        "--decision", choices=("opt_out", "opt_in"), help="for a list with no decision column"
    )
    imp.add_argument("--program", help="for rows naming no program (default *: every program)")
    exp = actions.add_parser("export", help="write the ledger to a new 0600 CSV file")
    exp.add_argument("file", help="a new file to write (never overwritten)")
    for action in actions.choices.values():
        action.add_argument("--config", help="TOML file (default: embedded)")
    parser.set_defaults(func=lambda args: run(args, load(args.config)))


CLUSTER_REFUSAL = (
    "smsgw consent: on a cluster node the ledger is in PostgreSQL, shared by every node;"
    " import a list through any node's API: POST /api/v1/consents/import with"
    " Content-Type: text/csv (a token with the consent scope; the same report, refused"
    " lines by number), and export it with GET /api/v1/consents/export"
)


def run(args: argparse.Namespace, config: Config) -> int:
    if config.cluster.enabled:
        # This node's SQLite ledger is not the list, and a console process is no member
        # of the cluster: the withdrawal an opt-out makes on the shared queue is fenced
        # by a running node's incarnation. Any node's API does both, with the same report.
        print(CLUSTER_REFUSAL, file=sys.stderr)
        return 2
    if args.action == "import" and not Path(args.file).is_file():
        print(f"smsgw consent import: {args.file} is not a file", file=sys.stderr)
        return 2
    return asyncio.run(_run(args, config))


async def _run(args: argparse.Namespace, config: Config) -> int:
    store = await with_store(config)
    try:
        consent = Consent(
            config=config, store=store, clock=SystemClock(), audit=audit_trail(store, config)
        )
        if args.action == "import":
            return await _import(consent, args)
        return await _export(consent, args.file)
    finally:
        await store.close()


PROGRESS_WHAT = "consent import, bytes read"


def _refused(report: ImportReport) -> list[tuple[int, str, str]]:
    return [(e.line, e.code, e.field or "") for e in report.errors]


async def _import(consent: Consent, args: argparse.Namespace) -> int:
    try:
        options = Options(parse_mapping(args.map), args.decision, args.program)
    except ValueError as e:
        print(f"smsgw consent import: --map: {e}", file=sys.stderr)
        return 2
    path = Path(args.file)
    total = path.stat().st_size  # noqa: ASYNC240 - one stat before the import
    read = 0
    line = ProgressLine()

    def on_read(size: int) -> None:
        nonlocal read
        read += size

    def show(report: ImportReport) -> None:  # after each chunk's rows are committed
        line(total if report.done else min(read, total - 1), total, PROGRESS_WHAT)

    chunks = file_chunks(path, on_read)
    try:
        report = await consent.import_csv(CONSOLE_CALLER, chunks, options, show)
    finally:
        line.close()
    if report.fatal is not None:
        print(f"smsgw consent import: {report.fatal}: no usable header row", file=sys.stderr)
        return 1
    if report.errors:
        print("\n".join(table(("LINE", "CODE", "FIELD"), _refused(report))))
    if report.failed > len(report.errors):
        print(f"... and {report.failed - len(report.errors)} more refused lines")
    if report.ignored_columns:
        print("columns not read: " + ", ".join(report.ignored_columns))
    print(
        f"{report.rows} rows: {report.appended} appended, {report.unchanged} already there,"
        f" {report.superseded} superseded, {report.failed} refused"
    )
    return 0 if report.failed == 0 else 1


async def _export(consent: Consent, file: str) -> int:
    try:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"smsgw consent export: {file} exists; not overwritten", file=sys.stderr)
        return 1
    count = 0
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
        out.write(csv_line(EXPORT_HEADER))
        async for row in await consent.export(CONSOLE_CALLER):
            out.write(export_line(row))
            count += 1
    print(f"{count} ledger row(s) written to {file}")
    return 0
