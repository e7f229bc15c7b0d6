"""Ports for the servers a test starts as a child process and tells where to listen.

A port the OS handed out with bind(0) and that the test then released can be handed
out again to any socket bound to port 0 meanwhile — the gateway's own embedded SMSC
simulator, a broker — and the child then finds its address in use. So these come from
below the kernel's ephemeral range (which bind(0) draws from), checked free by a bind.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_LOW, _HIGH = 20_000, 32_000  # the kernel's ephemeral range starts above this one


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_port() -> int:
    """A loopback TCP port that nothing listens on, outside the ephemeral range."""
    high = min(_HIGH, _ephemeral_floor())
    for _ in range(200):
        port = random.randrange(_LOW, high)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_LOW}-{high} on 127.0.0.1")
