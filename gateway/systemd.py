"""sd_notify without libsystemd: readiness, stopping, and the watchdog heartbeat."""

from __future__ import annotations

import os
import socket

import structlog

from drivers.clock import Clock

log = structlog.get_logger("smsgw.systemd")


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1") to systemd; False outside a Type=notify unit."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(address)
            s.sendall(state.encode())
    except OSError as e:  # systemd's problem to report; the gateway itself is fine
        log.warning("systemd_notify_failed", error=type(e).__name__, state=state.split("=")[0])
        return False
    return True


def watchdog_interval() -> float | None:
    """Half of WatchdogSec= in seconds, if systemd asked for heartbeats."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2_000_000


async def heartbeat(clock: Clock, interval: float) -> None:
    """Ping the watchdog while the event loop is alive; a hung loop stops the pings."""
    while True:
        notify("WATCHDOG=1")
        await clock.sleep(interval)
