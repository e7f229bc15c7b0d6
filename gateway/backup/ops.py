"""The backup ops: `backup.create`, `backup.verify`, `backup.restore`.

`backup.create` runs against an open store, in the daemon or offline (`run_local`).
`backup.verify` and `backup.restore` open no store (a restore has none yet), so the
console calls their entries here directly; `backup.restore` is offline only, and the
admin socket refuses it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from gateway.backup import restore, snapshot, verify
from gateway.ops.registry import OpContext, Out, Progress, op
from gateway.store import crypto


def _threadsafe(progress: Progress) -> Progress:
    """`progress` called on the event loop from the thread that does the copying."""
    loop = asyncio.get_running_loop()

    def report(done: int, total: int, what: str) -> None:
        loop.call_soon_threadsafe(progress, done, total, what)

    return report


def _threadsafe_out(out: Out) -> Out:
    loop = asyncio.get_running_loop()

    def write(line: str) -> None:
        loop.call_soon_threadsafe(out, line)

    return write


@op("backup.create")
async def create(ctx: OpContext, args: dict[str, Any]) -> int:
    """Args: `out` (a directory; default `<data_dir>/backups`), `step_pages` (optional)."""
    out = Path(args["out"]) if args.get("out") else Path(ctx.config.data_dir) / "backups"
    step_pages = args.get("step_pages", snapshot.DEFAULT_STEP_PAGES)
    if not isinstance(step_pages, int) or isinstance(step_pages, bool) or step_pages < 1:
        ctx.out("backup: step_pages: expected a positive whole number of pages")
        return 2
    try:
        path, manifest = await asyncio.to_thread(
            snapshot.take,
            ctx.store.path,
            out,
            ctx.master_key,
            step_pages=step_pages,
            progress=_threadsafe(ctx.progress),
        )
    except OSError as e:  # no room, no permission: nothing is left behind (snapshot.take)
        where = f" ({e.filename})" if e.filename else ""
        ctx.out(f"backup: failed: {e.strerror or e}{where}; no backup was written")
        return 1
    except (sqlite3.Error, crypto.MasterKeyError) as e:
        ctx.out(f"backup: failed: {e}; no backup was written")
        return 1
    await ctx.audit.record(
        ctx.actor,
        "backup_created",
        "backup",
        path.name,
        schema_version=manifest.schema_version,
        pages=manifest.page_count,
    )
    ctx.out(f"backup: {path}")
    ctx.out(f"manifest: {path.name}.manifest.json (sha256 {manifest.sha256})")
    ctx.out(
        f"master key fingerprint {manifest.key_fingerprint}: the key is NOT in the backup;"
        " keep a copy of it apart (docs/ops/backup.md)"
    )
    return 0


def verify_file(backup: Path, master_key: bytes | None, out: Out, progress: Progress) -> int:
    verdict = verify.verify(backup, master_key, progress=progress)
    for line in verdict.lines:
        out(line)
    out("backup verified" if verdict.code == verify.OK else "backup: NOT verified")
    return verdict.code


@op("backup.verify", needs_store=False)
async def verify_op(ctx: OpContext, args: dict[str, Any]) -> int:
    """Args: `file`. Checked with the daemon's master key."""
    return await asyncio.to_thread(
        verify_file,
        Path(args["file"]),
        ctx.master_key,
        _threadsafe_out(ctx.out),
        _threadsafe(ctx.progress),
    )


@op("backup.restore", needs_store=False, offline_only=True)
async def restore_op(ctx: OpContext, args: dict[str, Any]) -> int:
    """Args: `file`, `data_dir`, `db_path`, `key_path`. Offline only (see module doc)."""
    return await asyncio.to_thread(
        restore.restore,
        Path(args["file"]),
        Path(args["data_dir"]),
        Path(args["db_path"]),
        Path(args["key_path"]),
        out=_threadsafe_out(ctx.out),
        progress=_threadsafe(ctx.progress),
        actor=ctx.actor,
    )
