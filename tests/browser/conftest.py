"""Browser tests: Debian's headless Chromium, driven by Playwright, against a real
gateway (`smsgw run` in a subprocess on a free loopback port).

Playwright never downloads a browser here: it launches /usr/bin/chromium
(`make browser` installs it). Tests are synchronous and wait on selectors and
conditions, never on time. Playwright's sync API runs its own event loop, so it must be
gone before the async tests of other packages run: the browser is package-scoped, one
Chromium (and one Playwright driver) for every module here, which isolate themselves
with contexts of their own. Starting the driver and Chromium took 2-5 s a module.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright import sync_api

from gateway.cli import main
from gateway.config import load
from gateway.models import new_message_id
from gateway.store import crypto
from gateway.store.store import Store
from tests.conftest import FAST_PASSWORD_HASH, TEST_CONSENT_TOML
from tests.ports import free_port

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
SMSGW = [sys.executable, "-m", "gateway.cli"]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN = ("admin", "Ward7B kettle quietly hums at dawn")
OPERATOR = ("olivia", "Night shift lanterns drift over Elm Street")
VIEWER = ("victor", "Seventeen amber pebbles beside the fjord")
TEST_NUMBER = "+12025550147"
T = TypeVar("T")


@dataclass
class Gateway:
    """A running `smsgw run`; its JSON log (stderr) is read by a thread, so tests can
    wait for an event instead of guessing how long something takes."""

    proc: subprocess.Popen[bytes]
    url: str
    config: Path
    db: Path
    token: str = ""
    lines: list[dict[str, Any]] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def start_reader(self) -> None:
        def read() -> None:
            assert self.proc.stderr is not None
            for raw in self.proc.stderr:
                try:
                    event = json.loads(raw)
                except ValueError:
                    event = {"event": "text", "text": raw.decode(errors="replace")}
                with self._cond:
                    self.lines.append(event)
                    self._cond.notify_all()
            with self._cond:
                self._cond.notify_all()

        threading.Thread(target=read, daemon=True).start()

    def wait_log(self, predicate: Callable[[dict[str, Any]], bool], limit: float = 20) -> None:
        with self._cond:
            ok = self._cond.wait_for(
                lambda: any(predicate(e) for e in self.lines) or self.proc.poll() is not None,
                timeout=limit,
            )
            if not ok or not any(predicate(e) for e in self.lines):
                raise AssertionError(f"gateway log never matched; it said: {self.lines[-20:]}")

    def cli(self, *args: str, stdin: str | None = None) -> str:
        """`smsgw ARGS --config CONFIG`, its output. Run in this process, as the other rigs
        run `smsgw init`: a child would spend a second importing the gateway first."""
        out, err = io.StringIO(), io.StringIO()

        def run() -> int:
            saved = sys.stdin
            sys.stdin = io.StringIO(stdin or "")
            try:
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                    return main([*args, "--config", str(self.config)])
            finally:
                sys.stdin = saved

        code = in_thread(run)
        assert code == 0, err.getvalue()
        return out.getvalue()

    def api(self, method: str, path: str, body: Any = None) -> Any:
        req = urllib.request.Request(  # noqa: S310 - our own gateway on loopback
            self.url + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - see above
            return json.loads(resp.read())

    def send(self, to: str = TEST_NUMBER, body: str = "Your results are ready.") -> str:
        return str(self.api("POST", "/api/v1/messages", {"to": to, "body": body})["id"])

    def stop(self) -> None:
        end_process(self.proc)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def end_process(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL if it has not ended within 15 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


USERS = ((ADMIN, "admin"), (OPERATOR, "operator"), (VIEWER, "viewer"))
INBOUND_SENDER = "+12025550168"


async def seed_inbound(config_path: Path) -> None:
    """Replies already received, stored as a driver's sink stores them (before the gateway
    starts, so only one process writes at a time)."""
    config = load(config_path)
    store = Store(config.db_path, crypto.read_master_key(config.master_key_path))
    await store.open()
    for body in ("YES, I will come on Tuesday", "Please call me back"):
        await store.insert_inbound(
            new_message_id(), "main", INBOUND_SENDER, body, None, None, time.time()
        )
    await store.close()


def in_thread(work: Callable[[], T]) -> T:
    """`work()` on a thread of its own: an asyncio.run there cannot meet Playwright's loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(work).result(timeout=60)


def start_gateway(
    root: Path,
    *,
    idle_timeout: float = 900.0,
    users: tuple[tuple[tuple[str, str], str], ...] = USERS,
    api_token: bool = True,
    modems: list[str] | None = None,
    extra_toml: str = "",
) -> Gateway:
    """`modems`: tty paths of emulated modems (see `modem_simulator`) for a second route;
    `extra_toml`: more tables for the config file (after every other)."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = root / "smsgw.toml"
    bank = ""
    if modems:
        listed = ", ".join(
            f'{{ name = "sim{i + 1}", port = "{path}" }}' for i, path in enumerate(modems)
        )
        bank = (
            "[[routes]]\n"
            'name = "sim-bank"\n'
            'type = "modem"\n'
            f"window = {len(modems)}\n"
            f"modems = [{listed}]\n"
        )
    config.write_text(
        f'data_dir = "{root}"\n'
        "[http]\n"
        f'listen = "127.0.0.1:{port}"\n'
        "token_cache_seconds = 0.5\n"
        "shutdown_grace = 1.0\n"
        "[log]\n"
        'format = "json"\n'
        "[admin]\n"
        f"idle_timeout = {idle_timeout}\n"
        'totp_required_roles = ["admin"]\n'
        + "".join(f"{k} = {v}\n" for k, v in FAST_PASSWORD_HASH.items())
        + "[[routes]]\n"
        'name = "main"\n'
        'type = "loopback"\n'
        "rate = 20\n"
        "burst = 5\n"
        "window = 10\n"
        "latency = 0.05\n"
        "receipt_delay = 0.5\n"
        'undelivered_prefixes = ["+1202555019"]\n'
        + bank
        + TEST_CONSENT_TOML  # the suite's default purpose (tests/conftest.py)
        + extra_toml
    )
    crypto.generate_master_key(root / "master.key")
    in_thread(lambda: asyncio.run(seed_inbound(config)))
    gw = Gateway(
        subprocess.Popen(
            [*SMSGW, "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        ),
        f"http://127.0.0.1:{port}",
        config,
        root / "smsgw.db",
    )
    gw.start_reader()
    try:  # a set-up step that fails must not leave the gateway running
        gw.wait_log(lambda e: e.get("event") == "listening")
        if api_token:
            gw.token = gw.cli("token", "create", "--scope", "send,read,admin", "--name", "tests")
            gw.token = gw.token.strip()
        for (name, password), role in users:
            secret = root / f"{name}.password"
            secret.write_text(password + "\n")
            gw.cli("user", "add", "--role", role, "--password-file", str(secret), name)
    except BaseException:
        gw.stop()
        raise
    return gw


@dataclass
class ModemSimulator:
    """`smsgw simulate modem`: emulated modems on real ptys, in their own process."""

    proc: subprocess.Popen[str]
    paths: list[str]

    def stop(self) -> None:
        end_process(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def modem_simulator(count: int) -> ModemSimulator:
    proc = subprocess.Popen(
        [*SMSGW, "simulate", "modem", "--count", str(count), "--send-latency", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    paths: list[str] = []
    next(proc.stdout)  # the header: PROFILE  PORT
    for line in proc.stdout:  # each modem's "profile  /dev/pts/N", then "ready"
        if "ready" in line:
            return ModemSimulator(proc, paths)
        paths.append(line.split()[1])
    raise AssertionError("the modem simulator ended before it was ready")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path_factory.mktemp("panel"))
    yield gw
    gw.stop()


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():  # `make test` installs it (make browser)
        pytest.skip("Debian chromium is not installed: run `make browser`")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
