"""Ports for the servers a test starts as a child process and tells where to listen.

A port the OS handed out with bind(0) and that the test then released can be handed
out again to any socket bound to port 0 meanwhile — the gateway's own embedded SMSC
simulator, a broker — and the child then finds its address in use. So these come from
below the kernel's ephemeral range (which bind(0) draws from), checked free by a bind,
each xdist worker from its own share of that range.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

_LOW, _HIGH = 20_000, 32_000  # the kernel's ephemeral range starts above this one


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _worker_range(low: int, high: int) -> tuple[int, int]:
    """This xdist worker's share of [low, high): a port one worker checked free and
    handed to its child is never another worker's pick before that child binds it."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if not worker.startswith("gw") or count <= 1:
        return low, high
    index = int(worker[2:]) % count
    width = (high - low) // count
    return low + index * width, low + (index + 1) * width


_given: set[int] = set()  # handed out by this process: not again while others are left


def free_port() -> int:
    """A loopback TCP port that nothing listens on, outside the ephemeral range, from
    this worker's share of it, and not one this process handed out before."""
    low, high = _worker_range(_LOW, min(_HIGH, _ephemeral_floor()))
    if len(_given) > (high - low) // 2:
        _given.clear()
    for _ in range(200):
        port = random.randrange(low, high)
        if port in _given:
            continue
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _given.add(port)
            return port
    raise RuntimeError(f"no free port in {low}-{high} on 127.0.0.1")
