"""The `keys.*` ops: rotate, status, replace-master (docs/ops/keys.md).

A rotation makes field key generation N+1 current at once, in this process and (through
its keyring poll, or at once over the admin socket) in a running daemon; re-encryption
of older rows is the daemon's background job. With no daemon running, the console runs
that job to the end itself, with progress, unless told to leave it for the daemon.
"""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.keys import master, rekey
from gateway.keys.catalog import CATALOG
from gateway.ops.registry import OpContext, op
from gateway.startup import lock_holder
from gateway.store import crypto, keyring_sql

OFFLINE_RATE = 1_000_000.0  # nothing else writes: as fast as the disk goes


def _daemon_elsewhere(ctx: OpContext) -> int | None:
    """The pid of a daemon on this data directory when this op runs outside it."""
    return None if ctx.gateway is not None else lock_holder(ctx.config.data_dir)


@op("keys.rotate")
async def rotate(ctx: OpContext, args: dict[str, Any]) -> int:
    store = ctx.store
    now = ctx.clock.time()

    def make(conn: sqlite3.Connection) -> int:
        generation = store.new_field_generation(conn, now)
        rekey.start(conn, generation)
        return generation

    generation = await store.writer.run(make)
    await store.reload_keys()
    await ctx.audit.record(
        ctx.actor, "key_rotation_started", "key", f"field:{generation}", generation=generation
    )
    ctx.out(f"field key generation {generation} is current for new writes")
    if ctx.gateway is not None:
        ctx.gateway.rekey.wake()
        ctx.out("re-encryption of older rows runs in the background: `smsgw keys status`")
        return 0
    running = _daemon_elsewhere(ctx)
    if running is not None:
        ctx.out(
            f"the running gateway (pid {running or 'unknown'}) takes it up within"
            f" {rekey.POLL_SECONDS:.0f} s and re-encrypts in the background: `smsgw keys status`"
        )
        return 0
    if args.get("background"):
        ctx.out("re-encryption starts with the gateway (`smsgw run`): `smsgw keys status`")
        return 0
    return await _run_to_end(ctx)


async def _run_to_end(ctx: OpContext) -> int:
    store = ctx.store
    total = 0
    for s in CATALOG:
        row = await store.reader.one(f"SELECT count(*) FROM {s.table}")  # noqa: S608  # catalog
        total += int(row[0]) if row is not None else 0
    scanned = 0

    def report(step: rekey.Step) -> None:
        nonlocal scanned
        scanned += step.scanned
        ctx.progress(min(scanned, total), total, "re-encrypting rows")

    job = rekey.RekeyJob(store, ctx.clock, OFFLINE_RATE, ctx.audit, ctx.actor)
    await job.run_to_end(report)
    if total:
        ctx.progress(total, total, "re-encrypting rows")
    cipher = store.cipher
    assert cipher is not None, "store is not open"
    counts = await rekey.generation_counts(store)
    left = {g: n for g, n in counts.items() if g < cipher.generation}
    if left:
        ctx.out(f"not re-encrypted (unreadable): {_per_generation(left)}; see `smsgw keys status`")
        return 1
    ctx.out("every row is under the current key; older generations retired")
    return 0


def _per_generation(counts: dict[int, int]) -> str:
    return ", ".join(f"generation {g}: {n}" for g, n in sorted(counts.items()))


@op("keys.status")
async def status(ctx: OpContext, args: dict[str, Any]) -> int:
    del args
    store = ctx.store
    gens = await store.writer.run(keyring_sql.field_generations)
    counts = await rekey.generation_counts(store)
    current = max(g for g, _ in gens)
    ctx.out(f"{'GENERATION':<11} {'CREATED (UTC)':<20} {'STATE':<8} CIPHERTEXTS")
    for generation, created in gens:
        stamp = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%d %H:%M:%S")
        state = "current" if generation == current else "older"
        ctx.out(f"{generation:<11} {stamp:<20} {state:<8} {counts.get(generation, 0)}")
    p = await store.writer.run(rekey.progress)
    if p.target is None:
        ctx.out("re-encryption: none running")
    else:
        where = f", now in {p.current_table}" if p.current_table else ", retiring"
        ctx.out(
            f"re-encryption to generation {p.target}: {p.tables_done}/{p.tables} tables"
            f" through, {p.rewritten} rows re-encrypted{where}"
        )
    ctx.out("blind index key: generation 1 (not rotated: see docs/ops/keys.md)")
    return 0


@op("keys.replace-master")
async def replace_master(ctx: OpContext, args: dict[str, Any]) -> int:
    running = _daemon_elsewhere(ctx)
    if running is not None:
        ctx.out(
            f"refused: a gateway runs on this data directory (pid {running or 'unknown'});"
            " stop it first (it holds the old master key in memory)"
        )
        return 2
    key_path = ctx.config.master_key_path
    source = args.get("new_key_file")
    new_key = crypto.read_key_file(Path(source)) if source else os.urandom(crypto.KEY_BYTES)
    try:
        count = await master.replace(ctx.store, key_path, new_key)
    except master.ReplaceRefused as e:
        ctx.out(f"refused: {e}")
        return 2
    await ctx.audit.record(ctx.actor, "master_key_replaced", "key", "master", keys_rewrapped=count)
    ctx.out(f"{count} keys re-wrapped; the new master key is in {key_path}")
    ctx.out(
        "back up the new key now, apart from the data; keep the old one only with the"
        " backups taken before now (they open with it alone), then destroy it"
    )
    return 0
