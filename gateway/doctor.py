"""`smsgw doctor`: check what a start would need and say what is wrong in plain words."""

from __future__ import annotations

import socket
import stat

from drivers.base import DriverError, InboundSms, Receipt, RouteHealth
from drivers.clock import SystemClock
from drivers.registry import load_driver
from gateway.config import Config
from gateway.store import crypto
from gateway.store.store import Store


async def diagnose(config: Config) -> list[str]:
    """Every problem found, one line each; an empty list means healthy."""
    problems: list[str] = []
    where = config.source or "embedded default"
    print(f"config: {where} (data in {config.data_dir})")
    key_path = config.master_key_path
    key = None
    try:
        key = crypto.read_master_key(key_path)
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
    problems.extend(_check_listen(config.http.listen))
    if plain := config.http.plain_http_problem():
        problems.append(plain)
    problems.extend(await _check_routes(config, key))
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
        active = [t for t in await store.tokens() if t.revoked_at is None]
        print(f"store: {config.db_path} ok ({len(active)} active API tokens)")
        if not active:
            problems.append("store: no active API token; create one with `smsgw token create`")
    finally:
        await store.close()
    return problems


def _check_listen(listen: str) -> list[str]:
    host, _, port = listen.rpartition(":")
    if not port.isdigit():
        return [f"http.listen: {listen!r} is not HOST:PORT"]
    with socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET) as s:
        try:
            s.bind((host.strip("[]") or "127.0.0.1", int(port)))
        except OSError as e:
            return [
                f"http.listen: cannot listen on {listen} ({e.strerror}); is smsgw already "
                "running there?"
            ]
    return []


async def _check_routes(config: Config, key: bytes | None) -> list[str]:
    if not config.routes:
        return ["routes: none configured; nothing can be sent"]
    problems = []
    for rc in config.routes:
        factory = load_driver(rc.type)
        if key is None or not config.db_path.exists():
            print(f"route {rc.name}: {rc.type}, options valid")
            continue
        driver = factory(rc.name, rc.options, _ProbeSink(), SystemClock())
        try:
            await driver.start()
            health = driver.health()
            print(f"route {rc.name}: {rc.type}, {health.state.value}")
            if not health.can_send:
                problems.append(f"route {rc.name}: {health.state.value} {health.detail}".rstrip())
        except DriverError as e:
            problems.append(f"route {rc.name}: cannot start ({e})")
        finally:
            await driver.aclose()
    return problems


class _ProbeSink:
    """Doctor starts drivers only to probe them. It refuses what they report, so a
    carrier redelivers it and a modem keeps it on the SIM for the gateway to take."""

    async def receipt(self, route: str, receipt: Receipt) -> None:
        raise RuntimeError("smsgw doctor does not store receipts")

    async def inbound(self, route: str, sms: InboundSms) -> None:
        raise RuntimeError("smsgw doctor does not store messages")

    def health_changed(self, route: str, health: RouteHealth) -> None:
        return None
