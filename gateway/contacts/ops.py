"""`smsgw import contacts FILE`: the op `contacts.import` and its console command.

The op runs in the service when one answers on the admin socket (so a running gateway
keeps sending: rows are written in bounded chunks), else here against the data
directory (`gateway.ops.client.run`). Its progress is the share of the file's bytes
read (a `ProgressLine` on stderr); its answer is the refused lines (LINE, CODE, FIELD:
never their content) and the counts. Audited like every import, with the file's name.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.config import Config
from gateway.consent.inbound_config import replies_for
from gateway.contacts.csv_import import Options, parse_mapping
from gateway.contacts.usecase import Contacts
from gateway.errors import ApiError
from gateway.ops import client
from gateway.ops.registry import OpContext, op
from gateway.table import table
from gateway.usecases.caller import Caller
from gateway.usecases.csv_reader import file_chunks

WHAT = "contacts import, bytes read"
CLUSTER_REFUSAL = (
    "smsgw import contacts: on a cluster node the contacts are in PostgreSQL, shared by"
    " every node, and this node's service is not running: run the command while it"
    " runs (the import goes to the shared tables), or import through any node's API"
    " (POST /api/v1/contacts/imports)"
)


def _contacts(ctx: OpContext) -> Contacts:
    if ctx.gateway is not None:
        return ctx.gateway.contacts
    return Contacts(
        store=ctx.store,
        clock=ctx.clock,
        audit=ctx.audit,
        region=ctx.config.queue.default_region,
        languages=replies_for(ctx.config.consent).languages,
    )


async def _group(contacts: Contacts, caller: Caller, wanted: str, ctx: OpContext) -> str:
    """A group's id from its id or name; created (audited) when there is none."""
    for g in await contacts.groups(caller):
        if wanted in (g.id, g.name):
            return g.id
    created = await contacts.create_group(caller, wanted, None)
    ctx.out(f"group {created.id} created")
    return created.id


@op("contacts.import")
async def import_contacts(ctx: OpContext, args: dict[str, Any]) -> int:
    if ctx.gateway is None and ctx.config.cluster.enabled:
        # Here, the node's own SQLite tables: not the contacts any node's campaign reads.
        ctx.err(CLUSTER_REFUSAL)
        return 2
    path = Path(str(args.get("file", "")))
    caller = Caller(ctx.actor, None, True, False, False, may_record_consent=True)
    contacts = _contacts(ctx)
    try:
        size = (await asyncio.to_thread(path.stat)).st_size
        columns = parse_mapping(str(args.get("map") or ""))
        group = args.get("group")
        gid = await _group(contacts, caller, str(group), ctx) if group else None
        options = Options(columns, args.get("region"), gid, path.name)
        read = 0

        def counted(n: int) -> None:
            nonlocal read
            read += n
            ctx.progress(read, size, WHAT)

        report = await contacts.imports.run(caller, file_chunks(path, counted), options)
    except OSError as e:
        ctx.err(f"smsgw import contacts: {path} cannot be read ({e.strerror})")
        return 2
    except ValueError as e:
        ctx.err(f"smsgw import contacts: --map: {e}")
        return 2
    except ApiError as e:
        ctx.err(f"smsgw import contacts: {e.message}")
        return 2
    if report.fatal is not None:
        ctx.err(f"smsgw import contacts: not imported: {report.fatal}")
        return 2
    if report.errors:
        for line in table(
            ["LINE", "CODE", "FIELD"], [[str(e.line), e.code, e.field or ""] for e in report.errors]
        ):
            ctx.out(line)
    ctx.out(
        f"{report.rows} rows: {report.created} new, {report.updated} updated,"
        f" {report.unchanged} unchanged, {report.duplicates} repeated in the file,"
        f" {report.failed} refused (read as {report.encoding})"
    )
    return 1 if report.failed else 0


def add_parser(sub: Any, load: Callable[[str | None], Config]) -> None:
    parser = sub.add_parser("import", help="import contacts from a CSV file")
    kinds = parser.add_subparsers(dest="kind", required=True)
    imp = kinds.add_parser("contacts", help="contacts with their attributes, tags and groups")
    imp.add_argument("file", help="the CSV file (a header row names the columns)")
    imp.add_argument(
        "--region", help="ISO code national numbers are read in (default: queue.default_region)"
    )
    imp.add_argument("--group", help="a group (id or name; created if none) every row joins")
    imp.add_argument(
        "--map",
        default="",
        help="FIELD=Header,... for columns the usual names miss (fields: number, language,"
        " time_zone, age_band, clinic, preferences, tags, groups)",
    )
    imp.add_argument("--config", help="TOML file (default: embedded)")
    parser.set_defaults(func=lambda args: run(args, load(args.config)))


def run(args: argparse.Namespace, config: Config) -> int:
    path = Path(args.file)
    if not path.is_file():
        print(f"smsgw import contacts: {args.file} is not a file", file=sys.stderr)
        return 2
    request = {
        "file": str(path.resolve()),
        "region": args.region.upper() if args.region else None,
        "group": args.group,
        "map": args.map,
    }
    return client.run(config, "contacts.import", request)
