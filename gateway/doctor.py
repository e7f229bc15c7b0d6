"""`smsgw doctor`: check what a start would need and say what is wrong in plain words.

The report goes to stdout, one line per check; the drivers' own log lines stay out of
it (`smsgw doctor` silences them, or sends them to stderr with `--verbose`). A route is
probed in layers so the cause has a name: the host name resolves (DNS), a TCP connection
is taken (refused, or no answer), TLS is trusted, and then the driver itself starts and
is given time to bind before its health is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import stat
from typing import Any

from drivers.base import DriverError, InboundSms, Receipt, RouteHealth, RouteState
from drivers.clock import SystemClock
from drivers.credentials import SecretError
from drivers.registry import load_driver
from gateway import custody
from gateway.config import Config, RouteConfig
from gateway.startup import DataDirLock, StartupFault, lock_holder
from gateway.store import crypto
from gateway.store.store import Store

SETTLE_SECONDS = 10.0  # how long a route gets to come up before its state is reported
NETWORK_SECONDS = 5.0  # per network step of a probe (resolve, connect, TLS handshake)
# Words in a route's health detail while it is still on its way up, not failed yet.
_ON_THE_WAY = ("connecting", "starting", "resetting")
# SMPP bind refusals worth a plain name (SMPP 3.4 §5.1.3).
_BIND_REFUSALS = {
    0x0E: "wrong password (ESME_RINVPASWD)",
    0x0F: "unknown system_id (ESME_RINVSYSID)",
    0x0D: "bind failed (ESME_RBINDFAIL): the account, its address range or this host's"
    " address is not allowed",
    0x05: "already bound (ESME_RALYBND): another session holds this account",
}
_STATUS = re.compile(r"0x([0-9a-fA-F]{8})")


async def diagnose(config: Config, settle: float = SETTLE_SECONDS) -> list[str]:
    """Every problem found, one line each; an empty list means healthy."""
    problems: list[str] = []
    where = config.source or "embedded default"
    print(f"config: {where} (data in {config.data_dir})")
    key_path = config.master_key_path
    key = None
    try:
        key = custody.load_master_key(config)  # i14-socket: protected keys, key media
        print(f"master key: {key_path} ok")
    except crypto.MasterKeyError as e:
        problems.append(f"master key: {e}")
    if key is not None and key_path.parent.resolve() == config.db_path.parent.resolve():
        print(
            "note: the master key sits next to the database; in production keep it on "
            "separate media or in a systemd credential"
        )
    if not config.db_path.exists():
        problems.append(f"store: {config.db_path} does not exist (run `smsgw init`)")
    elif key is not None:
        problems.extend(await _check_store(config, key))
    if plain := config.http.plain_http_problem():
        problems.append(plain)
    running = lock_holder(config.data_dir)
    if running is not None:
        # Probing now would bind the running gateway's carrier account a second time
        # and open its modems' ports under it.
        print(
            f"gateway: running on this data directory (pid {running or 'unknown'}); listen"
            " and route probes skipped (see its /api/v1/routes)"
        )
        return problems
    problems.extend(_check_listen(config.http.listen))
    # No gateway starts while the routes are probed (and none is made where no store is).
    hold = DataDirLock(config.data_dir) if config.db_path.exists() else contextlib.nullcontext()
    try:
        with hold:
            problems.extend(await _check_routes(config, key, settle))
    except StartupFault as e:
        problems.append(f"routes: not probed: {e}")
    return problems


async def _check_store(config: Config, key: bytes) -> list[str]:
    problems = []
    mode = config.db_path.stat().st_mode
    if mode & stat.S_IROTH:
        problems.append(f"store: {config.db_path} is world-readable; chmod o-r it")
    store = Store(config.db_path, key, synchronous=config.store.synchronous)
    try:
        await store.open()
    except crypto.MasterKeyError as e:
        return [f"store: {e}"]
    except Exception as e:
        return [f"store: cannot open {config.db_path}: {e}"]
    try:
        cur = await store.reader.execute("PRAGMA integrity_check")
        row = await cur.fetchone()
        if row is None or row[0] != "ok":
            problems.append("store: integrity check failed; restore from a backup")
        cur = await store.reader.execute("PRAGMA journal_mode")
        row = await cur.fetchone()
        if row is None or str(row[0]).lower() != "wal":
            problems.append("store: not in WAL mode")
        active = [t for t in await store.api_tokens.all() if t.revoked_at is None]
        print(f"store: {config.db_path} ok ({len(active)} active API tokens)")
        if not active:
            problems.append("store: no active API token; create one with `smsgw token create`")
    finally:
        await store.close()
    return problems


def _check_listen(listen: str) -> list[str]:
    host, _, port = listen.rpartition(":")
    with socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET) as s:
        try:
            s.bind((host.strip("[]"), int(port)))
        except OSError as e:
            return [f"http.listen: cannot listen on {listen} ({e.strerror}); is it in use?"]
    print(f"http.listen: {listen} free")
    return []


async def _check_routes(config: Config, key: bytes | None, settle: float) -> list[str]:
    if not config.routes:
        return ["routes: none configured; nothing can be sent"]
    if key is None or not config.db_path.exists():
        for rc in config.routes:
            print(f"route {rc.name}: {rc.type}, options valid (not probed: no store)")
        return []
    # Side by side, so a slow route costs its own wait once, not one per route.
    results = await asyncio.gather(*(_check_route(rc, settle) for rc in config.routes))
    problems = []
    for rc, (up, problem) in zip(config.routes, results, strict=True):
        if problem is None:
            print(f"route {rc.name}: {rc.type}, up {up}".rstrip())
        else:
            problems.append(f"route {rc.name}: {rc.type}, {problem}")
    return problems


async def _check_route(rc: RouteConfig, settle: float) -> tuple[str, str | None]:
    """Probe one route: (its health detail when up, else "", and the problem or None)."""
    problem = await _check_network(rc.options)
    if problem is not None:
        return "", problem
    health = await _start_and_settle(rc, settle)
    if isinstance(health, str):
        return "", health
    if health.state is RouteState.UP:
        return health.detail, None
    return "", _explain_health(health, settle)


async def _check_network(options: Any) -> str | None:
    """Name why the route's host cannot be reached, for routes with a host and port."""
    host, port = getattr(options, "host", None), getattr(options, "port", None)
    if not isinstance(host, str) or not isinstance(port, int):
        return None
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(NETWORK_SECONDS):
            await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        return f"host {host} does not resolve (DNS: {e.strerror}); check the name"
    except TimeoutError:
        return f"host {host} does not resolve (DNS gave no answer in {NETWORK_SECONDS:g} s)"
    context = None
    if getattr(options, "tls", False):
        context = ssl.create_default_context(cafile=getattr(options, "tls_ca_file", None))
    try:
        async with asyncio.timeout(NETWORK_SECONDS):
            _, writer = await asyncio.open_connection(host, port)
    except ConnectionRefusedError:
        return f"connection to {host}:{port} refused (nothing listens there: wrong port?)"
    except TimeoutError:
        return f"no answer from {host}:{port} in {NETWORK_SECONDS:g} s (firewall, or wrong host)"
    except OSError as e:
        return f"cannot connect to {host}:{port} ({e.strerror or e})"
    try:
        if context is not None:
            async with asyncio.timeout(NETWORK_SECONDS):
                await writer.start_tls(context, server_hostname=host)
    except TimeoutError:
        return f"TLS handshake with {host}:{port} got no answer (is it a TLS port?)"
    except ssl.SSLCertVerificationError as e:
        return f"TLS: the certificate of {host}:{port} is not trusted ({e.verify_message})"
    except (ssl.SSLError, OSError) as e:
        return f"TLS handshake with {host}:{port} failed ({getattr(e, 'reason', None) or e})"
    finally:
        writer.close()
    return None


async def _start_and_settle(rc: RouteConfig, settle: float) -> RouteHealth | str:
    """Start the driver and wait (up to `settle` s) until it is up or has plainly failed."""
    sink = _ProbeSink()
    driver = load_driver(rc.type)(rc.name, rc.options, sink, SystemClock())
    try:
        await driver.start()
        async with asyncio.timeout(settle):
            while not _settled(health := driver.health()):
                sink.changed.clear()
                await sink.changed.wait()
        return health
    except TimeoutError:
        return driver.health()
    except SecretError as e:
        return str(e)
    except DriverError as e:
        return f"cannot start ({e})"
    finally:
        await driver.aclose()


def _settled(health: RouteHealth) -> bool:
    if health.state in (RouteState.UP, RouteState.PARKED):
        return True
    if health.state is RouteState.DOWN:
        return not any(word in health.detail for word in _ON_THE_WAY)
    return False  # starting, or degraded while more of it may still come up


def _explain_health(health: RouteHealth, settle: float) -> str:
    detail = health.detail
    status = _STATUS.search(detail)
    if "bind" in detail and status is not None:
        code = int(status.group(1), 16)
        refusal = _BIND_REFUSALS.get(code, f"status 0x{code:08x}")
        return f"the carrier refused the bind: {refusal}"
    if health.state is RouteState.STARTING or any(w in detail for w in _ON_THE_WAY):
        return f"not up after {settle:g} s ({detail or health.state.value})"
    return f"{health.state.value}: {detail}".rstrip(": ")


class _ProbeSink:
    """Doctor starts drivers only to probe them. It refuses what they report, so a
    carrier redelivers it and a modem keeps it on the SIM for the gateway to take."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()

    async def receipt(self, route: str, receipt: Receipt) -> None:
        raise RuntimeError("smsgw doctor does not store receipts")

    async def inbound(self, route: str, sms: InboundSms) -> None:
        raise RuntimeError("smsgw doctor does not store messages")

    def health_changed(self, route: str, health: RouteHealth) -> None:
        self.changed.set()
