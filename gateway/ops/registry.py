"""The op contract: `OpContext`, the `@op` registry, and the offline runner.

An op is registered under a dotted name (`keys.rotate`, `backup.create`) by decorating
an `async def handler(ctx, args) -> int`. `args` is a JSON-able dict (the console's
parsed options); the handler writes its answer with `ctx.out(line)` and its progress
with `ctx.progress(done, total, what)`, and returns the exit status. It records every
change in `ctx.audit` with `ctx.actor`. Handlers must not print or read stdin: over the
admin socket there is no terminal.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from drivers.clock import Clock, SystemClock
from gateway.config import Config
from gateway.store import crypto
from gateway.store.audit_log import AuditTrail, audit_key
from gateway.store.store import Store

if TYPE_CHECKING:
    from gateway.app import Gateway

Out = Callable[[str], None]
Progress = Callable[[int, int, str], None]


def _no_progress(done: int, total: int, what: str) -> None:
    del done, total, what


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


@dataclass
class OpContext:
    config: Config
    store: Store
    master_key: bytes
    audit: AuditTrail
    clock: Clock
    actor: str  # who ran it: "console" or "console:<user>" (the socket's peer)
    out: Out
    progress: Progress = _no_progress
    gateway: Gateway | None = None  # set when the op runs inside the daemon
    extras: dict[str, Any] = field(default_factory=dict)
    # Why it failed ("alice exists"): stderr on the console, so `$(smsgw token create)`
    # captures only the answer.
    err: Out = _to_stderr


Handler = Callable[[OpContext, dict[str, Any]], Awaitable[int]]


@dataclass(frozen=True)
class Op:
    name: str
    handler: Handler
    # An op that needs no store (restore into an empty directory) runs only offline.
    needs_store: bool = True
    # An op that must not run beside a live daemon (restore) is refused by the socket.
    offline_only: bool = False


OPS: dict[str, Op] = {}


def op(
    name: str, *, needs_store: bool = True, offline_only: bool = False
) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        if name in OPS:
            raise ValueError(f"op {name} registered twice")
        OPS[name] = Op(name, handler, needs_store, offline_only)
        return handler

    return register


def lookup(name: str) -> Op:
    from gateway.ops import catalog  # noqa: F401  # registers every op once

    try:
        return OPS[name]
    except KeyError:
        raise KeyError(f"no op {name}") from None


async def run_in(
    config: Config,
    store: Store,
    master_key: bytes,
    name: str,
    args: dict[str, Any],
    *,
    actor: str,
    out: Out,
    progress: Progress = _no_progress,
    clock: Clock | None = None,
    gateway: Gateway | None = None,
    err: Out = _to_stderr,
) -> int:
    """Run op `name` against an open store (the daemon's, or one opened offline)."""
    clock = clock or SystemClock()
    if gateway is not None:
        audit = gateway.audit
    else:
        audit = AuditTrail(store, audit_key(master_key), clock)
    ctx = OpContext(config, store, master_key, audit, clock, actor, out, progress, gateway, err=err)
    return await lookup(name).handler(ctx, args)


def run_local(
    config: Config,
    name: str,
    args: dict[str, Any],
    *,
    out: Out = print,
    progress: Progress = _no_progress,
    actor: str = "console",
    err: Out = _to_stderr,
) -> int:
    """Run op `name` in this process against the data directory (no daemon running)."""
    found = lookup(name)

    async def run() -> int:
        key = crypto.read_master_key(config.master_key_path)
        store = Store(config.db_path, key, synchronous=config.store.synchronous)
        await store.open()
        try:
            return await run_in(
                config, store, key, name, args, actor=actor, out=out, progress=progress, err=err
            )
        finally:
            await store.close()

    if not found.needs_store:
        raise ValueError(f"op {name} opens no store: call its handler's own entry")
    return asyncio.run(run())
