"""Gateways sharing one PostgreSQL in the test's own process (dispatch off unless asked):
the first node's data directory made with a new master key and store, copied for the
others, so every node holds one keyring (docs/ops/cluster.md)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from drivers.clock import Clock
from gateway.app import Gateway
from gateway.config import Config
from gateway.store import crypto
from gateway.store.store import Store


@contextlib.asynccontextmanager
async def in_process_nodes(
    root: Path,
    clock: Clock,
    config_of: Callable[[Path, str], Config],
    names: tuple[str, ...] = ("gw1", "gw2"),
    *,
    dispatch: bool = False,
) -> AsyncIterator[list[Gateway]]:
    """The nodes `names`, each opened from `config_of(its data directory, its name)` and
    started; stopped at the end (those a test has not stopped itself)."""
    opened: list[Gateway] = []
    first = root / names[0]
    try:
        for name in names:
            if name == names[0]:
                config = config_of(first, name)
                crypto.generate_master_key(config.master_key_path)
                store = Store(config.db_path, crypto.read_master_key(config.master_key_path))
                await store.open()
                await store.close()
            else:
                shutil.copytree(first, root / name)
                config = config_of(root / name, name)
            gw = await Gateway.open(config, clock)
            opened.append(gw)
            await gw.start(dispatch=dispatch)
        yield opened
    finally:
        for gw in opened:
            if not gw.stopped:
                await gw.stop()
