"""Shared fixtures: a real store in a temp dir, a fake clock, real loopback routes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, settings

from drivers.clock import FakeClock
from drivers.loopback import LoopbackDriver
from gateway import logs
from gateway.app import Gateway
from gateway.config import Config, from_mapping
from gateway.intake import SendRequest
from gateway.store import crypto
from tests import store_template
from tests.store_rows import message_row

logs.CACHE_LOGGERS = False  # see gateway/logs.py: in-process commands must not pin a level
store_template.install()  # a new store is a copy of the first one migrated (see there)

# Temp dirs (tmp_path, tempfile, and the children the tests start) on RAM when the machine
# has a roomy tmpfs and TMPDIR is not set: a test's stores commit with synchronous = FULL,
# and on a busy disk those fsyncs were most of the suite's waiting. What the tests check
# (kill -9 loses nothing acknowledged) is about the page cache, which a tmpfs keeps too;
# the disk-full tests mount small filesystems of their own. `TMPDIR=/tmp pytest` opts out.
RAM_TMP = Path("/dev/shm")
RAM_TMP_FREE = 2 << 30


def _ram_temp_dirs() -> None:
    if "TMPDIR" in os.environ or not os.access(RAM_TMP, os.W_OK | os.X_OK):
        return
    stat = os.statvfs(RAM_TMP)
    if stat.f_bavail * stat.f_frsize >= RAM_TMP_FREE:
        os.environ["TMPDIR"] = str(RAM_TMP)
        tempfile.tempdir = str(RAM_TMP)


_ram_temp_dirs()


def pytest_configure(config: pytest.Config) -> None:
    """Byte-compile the sources once, before the workers start: with
    PYTHONDONTWRITEBYTECODE set (as on the build machines) no import writes them, and each
    `smsgw` child would compile the gateway again (0.3 s of its 1.1 s CPU start-up).
    The test modules' rewritten asserts too, once for every worker (tests/rewrite_cache.py).

    And take SIGINT back (in every worker): a suite started in the background of a
    non-interactive shell (`make test &`) inherits SIGINT ignored, every `smsgw` child the
    tests start inherits it in turn, and a child's Ctrl-C (what the CLI tests send to stop
    it) then does nothing: the test waits for an exit that never comes."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if hasattr(config, "workerinput"):
        return
    import compileall

    from tests import rewrite_cache

    root = Path(__file__).resolve().parent.parent
    for package in ("gateway", "drivers", "tests"):
        compileall.compile_dir(root / package, quiet=1)
    if config.getoption("numprocesses", None):  # xdist: a process would rewrite them each
        rewrite_cache.write(config, root / "tests")


# Hypothesis fails an example slower than its deadline (200 ms unless a test says). Under
# `make test` two workers share the cores, and a pause of a few hundred milliseconds is the
# machine, not the code: the deadline stays, ten times wider, to still catch a blow-up.
# The "input generation is slow" health check times the same way (a 14 s draw seen under
# a load average of 12): off, for the same reason; the deadline still bounds each example.
settings.register_profile("smsgw", deadline=2000, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("smsgw")

# `make test` runs the suite with pytest-xdist (`--dist loadfile`): a test file runs whole on
# one worker, so a module's daemon or browser starts once; the browser tests and the
# PostgreSQL tests are one unit each, and the units go longest first (tests/scheduling.py).


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "loadfile":
        return None
    from tests.scheduling import LongestFirst

    return LongestFirst(config, log)


@pytest.fixture(autouse=True)
def _log_settings_restored() -> Any:
    """A test that runs a command in-process (`main(["doctor", ...])`) configures
    logging for it: the next test starts from the settings before it."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


# Canaries: if any of these turns up in a log, an error body or the database files,
# PHI has leaked. The number is valid (phonenumbers accepts it), the body distinctive.
CANARY_NUMBER = "+12025550147"
CANARY_DIGITS = "2025550147"
CANARY_BODY = "CANARY potassium 6.9 mmol/L call ward 7B"

LOOPBACK_TEST = {"latency": 0.0, "receipt_delay": 5.0}
# argon2id at OWASP's floor (19 MiB, 2 passes): ~10x faster than the default, still real.
FAST_PASSWORD_HASH = {
    "password_hash_memory_kib": 19456,
    "password_hash_iterations": 2,
    "password_hash_lanes": 1,
}


SMSGW = [sys.executable, "-m", "gateway.cli"]

# The suite's default purpose: most tests send without naming one, at any hour of the
# day the suite runs, many to one number. `informational` here has no sending window,
# no caps and allows every class, so those tests see the gateway as before the send
# policy; the policy's own tests (test_consent_policy*, test_quiet_hours*, test_caps*)
# build their configs explicitly.
TEST_CONSENT: dict[str, Any] = {
    "default_purpose": "informational",
    "purposes": {"informational": {"window": "", "caps": [], "highest": "critical"}},
}
TEST_CONSENT_TOML = """
[consent]
default_purpose = "informational"

[consent.purposes.informational]
window = ""
caps = []
highest = "critical"
"""


async def smsgw_process(*args: str, **env: str) -> asyncio.subprocess.Process:
    """`smsgw ARGS` as a child with stdout and stderr piped and its output unbuffered;
    `env` is laid over this process's environment."""
    return await asyncio.create_subprocess_exec(
        *SMSGW,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
    )


TEST_LAZY_COMMIT_MS = 5.0


def untriggered(statements: list[str]) -> list[str]:
    """What a connection's trace callback saw, each statement once: Python's callback
    reports each trigger program a statement fires as that statement again, right after
    it (migrations 38 and 39's triggers on `messages` and `message_events`)."""
    return [s for i, s in enumerate(statements) if i == 0 or s != statements[i - 1]]


def make_config(
    tmp_path: Path, routes: list[dict[str, Any]] | None = None, **sections: Any
) -> Config:
    if routes is None:
        routes = [{"name": "main", "type": "loopback", **LOOPBACK_TEST}]
    sections.setdefault("http", {"shutdown_grace": 1.0})
    sections.setdefault("consent", TEST_CONSENT)
    # A `sent` rides in the next commit after at most this long (200 ms by default): the
    # same grouping, without 200 ms of real time per outcome a test waits for (the write
    # budget's own tests set their delays).
    sections["store"] = {"lazy_commit_ms": TEST_LAZY_COMMIT_MS, **sections.get("store", {})}
    raw: dict[str, Any] = {"data_dir": str(tmp_path), "routes": routes, **sections}
    config = from_mapping(raw)
    if not config.master_key_path.exists():
        crypto.generate_master_key(config.master_key_path)
    return config


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def open_gateway(tmp_path: Path, clock: FakeClock) -> AsyncIterator[GatewayFactory]:
    """Open gateways on a fake clock, without the dispatch loop (tests drive it)."""
    opened: list[Gateway] = []

    async def factory(
        routes: list[dict[str, Any]] | None = None, *, start: bool = True, **sections: Any
    ) -> Gateway:
        config = make_config(tmp_path, routes, **sections)
        gw = await Gateway.open(config, clock)
        opened.append(gw)
        if start:
            await gw.start(dispatch=False)
        return gw

    yield factory
    for gw in opened:
        if not gw.stopped:
            await gw.stop()


def loopback(gw: Gateway, name: str = "main") -> LoopbackDriver:
    driver = gw.routes[name].driver
    assert isinstance(driver, LoopbackDriver)
    return driver


async def settle_receipts(gw: Gateway) -> None:
    for route in gw.routes.values():
        if isinstance(route.driver, LoopbackDriver):
            await route.driver.settle()


async def accept(gw: Gateway, to: str = CANARY_NUMBER, body: str = "hello", **fields: Any) -> str:
    """Accept one message the way the API does (validate, commit, enqueue); its id."""
    req = SendRequest(to=to, body=body, **fields)
    prepared = gw.intake.prepare(req, None, gw.clock.time())
    await gw.store.insert(gw.intake.statements([prepared]))
    gw.intake.accepted([prepared])
    return prepared.message.id


async def state_of(gw: Gateway, message_id: str) -> str:
    row = await message_row(gw.store, message_id)
    assert row is not None
    return str(row["state"])


@pytest.fixture
async def panel(open_gateway: GatewayFactory) -> AsyncIterator[Any]:
    """The gateway's whole app (API and admin panel) on a loopback socket, fake clock."""
    from aiohttp.test_utils import TestClient, TestServer

    from gateway.http_app import build_app, runner_options
    from tests.admin_support import PanelClient

    gw = await open_gateway(admin=FAST_PASSWORD_HASH)
    server = TestServer(build_app(gw))
    await server.start_server(**runner_options(gw))
    client = TestClient(server)
    await client.start_server()
    try:
        yield PanelClient(gw, client)
    finally:
        await client.close()


def poke_on_commit(writer: Any, poke: Callable[[], None]) -> None:
    """Call `poke` after every store write commits (each of the writer's entry points
    returns a future that resolves after the commit): tests waiting on the store's state
    re-check then instead of sleeping."""
    for name in ("run", "run_grouped", "insert"):
        original = getattr(writer, name)

        def wrapped(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            future = _original(*args, **kwargs)
            future.add_done_callback(lambda _: poke())
            return future

        setattr(writer, name, wrapped)


async def record_decision(
    gw: Gateway,
    number: str,
    decision: str,
    scope: str,
    *,
    program: str = "*",
    disclosure: str | None = None,
    source: str = "api",
) -> int:
    """Append one consent decision through the writer, as the keyword flow and the
    consent API do (`ledger.append` in a writer transaction); its ledger seq."""
    from gateway.consent import ledger

    store = gw.store
    assert store.cipher is not None
    cipher = store.cipher
    entry = ledger.Entry(
        contact_idx=store.blind_index(number),
        number=number,
        decision=decision,  # type: ignore[arg-type]  # the tests pass valid names
        scope=scope,
        program=program,
        source=source,  # type: ignore[arg-type]
        at=gw.clock.time(),
        disclosure=disclosure,
    )
    _, seq = await store.writer.run(lambda conn: ledger.append(conn, cipher, entry))
    return seq


async def set_time_zone(gw: Gateway, number: str, zone: str) -> None:
    """Record a contact's time zone (as staff or an import would)."""
    from gateway.consent import ledger

    store = gw.store
    assert store.cipher is not None
    cipher = store.cipher
    idx = store.blind_index(number)
    now = gw.clock.time()

    def job(conn: Any) -> None:
        ledger.ensure_contact(conn, cipher, idx, number, now)
        conn.execute("UPDATE contacts SET time_zone = ? WHERE idx = ?", (zone, idx))

    await store.writer.run(job)


# -- one OpenLDAP server per test session (tests/peers/slapd.py) -----------------


@pytest.fixture(scope="session")
def slapd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Debian's slapd with the test tree, StartTLS only, on a free loopback port."""
    from tests.peers.slapd import Slapd, make_pki

    root = tmp_path_factory.mktemp("slapd")
    server = Slapd(root / "server", make_pki(root / "pki"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
