"""Panel users and their sessions shared by every node (issue 18): two gateways on one
PostgreSQL, each serving its panel on loopback. A user made on A signs in on B, a
password changed on B refuses the old one on A, a session cookie from A is valid on B
and a sign-out (or the idle timeout) ends it on both, wrong passwords split across the
nodes get no more checks than on one, and the users in a node's own store at its first
start are copied up once without overwriting a newer shared row."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from drivers.clock import FakeClock, SystemClock
from gateway.admin import passwords
from gateway.admin.panel import PRE_SESSION_COOKIE, SESSION_COOKIE
from gateway.app import Gateway
from gateway.cluster.lease import Pool
from gateway.cluster.panel import ClusterPanel
from gateway.cluster.shared_keys import KeyringWatch
from gateway.config import from_mapping
from gateway.http_app import build_app, runner_options
from gateway.ops import registry
from gateway.panel_users import Role
from gateway.store import crypto
from gateway.store.panel_sql import AdminRepo
from gateway.store.store import Store
from tests.admin_support import PASSWORD, PanelClient
from tests.conftest import FAST_PASSWORD_HASH, LOOPBACK_TEST
from tests.test_admin_bruteforce import WRONG, counting_hasher

NEW = "a quieter harbour at midnight"
OFFLINE_NAME = "root"  # made with the node stopped, before its first start


def _config(data: Path, name: str, dsn: str) -> Any:
    data.mkdir(exist_ok=True)
    return from_mapping(
        {
            "data_dir": str(data),
            "routes": [{"name": "main", "type": "loopback", **LOOPBACK_TEST}],
            "http": {"shutdown_grace": 1.0},
            "admin": FAST_PASSWORD_HASH,
            "source": str(data / "smsgw.toml"),
            # A fake clock never renews the lease: long enough for any test here.
            "cluster": {"enabled": True, "node_id": name, "conninfo": dsn, "lease_seconds": 600},
        }
    )


async def _offline_user(config: Any) -> None:
    """`smsgw init` then `smsgw user add` on the first node, before it ever starts."""
    crypto.generate_master_key(config.master_key_path)
    store = Store(config.db_path, crypto.read_master_key(config.master_key_path))
    await store.open()
    try:
        hasher = passwords.Hasher(**_hasher_args())
        await AdminRepo(store).add_user(
            "u-root", OFFLINE_NAME, Role.ADMIN, hasher.hash(PASSWORD), 1.0
        )
    finally:
        await store.close()


def _hasher_args() -> dict[str, int]:
    return {
        "memory_kib": FAST_PASSWORD_HASH["password_hash_memory_kib"],
        "iterations": FAST_PASSWORD_HASH["password_hash_iterations"],
        "lanes": FAST_PASSWORD_HASH["password_hash_lanes"],
    }


@pytest.fixture
async def panels(
    tmp_path: Path, clock: FakeClock, pg_dsn: str
) -> AsyncIterator[tuple[PanelClient, PanelClient]]:
    """Two nodes of one cluster (one keyring: the first's data directory copied, as
    docs/ops/cluster.md says), each with its panel on a loopback socket."""
    gateways: list[Gateway] = []
    clients: list[TestClient[Any, Any]] = []
    first = tmp_path / "gw1"
    try:
        for name in ("gw1", "gw2"):
            if name == "gw1":
                config = _config(first, name, pg_dsn)
                await _offline_user(config)
            else:
                shutil.copytree(first, tmp_path / name)
                config = _config(tmp_path / name, name, pg_dsn)
            gw = await Gateway.open(config, clock)
            gateways.append(gw)
            await gw.start(dispatch=False)
            server = TestServer(build_app(gw))
            await server.start_server(**runner_options(gw))
            client = TestClient(server)
            await client.start_server()
            clients.append(client)
        yield PanelClient(gateways[0], clients[0]), PanelClient(gateways[1], clients[1])
    finally:
        for client in clients:
            await client.close()
        for gw in gateways:
            if not gw.stopped:
                await gw.stop()


def _carry_session(source: PanelClient, target: PanelClient) -> None:
    """What a balancer does: the browser's next request, cookie and all, lands on the
    other node."""
    value = source.cookie(SESSION_COOKIE)
    assert value is not None
    target.client.session.cookie_jar.update_cookies(
        {SESSION_COOKIE: value}, URL(target.origin + "/")
    )


async def _page_status(panel: PanelClient, path: str = "/account") -> tuple[int, str]:
    r = await panel.client.get(path, allow_redirects=False)
    return r.status, r.headers.get("Location", "")


async def test_users_passwords_and_sessions_hold_on_every_node(
    panels: tuple[PanelClient, PanelClient],
) -> None:
    a, b = panels
    # The user made offline in gw1's store before its first start, copied up once:
    # gw2 (the copied data directory) finds the same one, not a second.
    assert [u.username for u in await b.gw.admin_repo.users()] == [OFFLINE_NAME]
    await b.login_ok(OFFLINE_NAME)
    b.client.session.cookie_jar.clear()

    await a.add_user("alice", Role.OPERATOR)  # made on A
    # The login form served by A, posted to B (pre-session cookie and token alike).
    form_token = await a.csrf("/login")
    pre = a.cookie(PRE_SESSION_COOKIE)
    assert pre is not None
    b.client.session.cookie_jar.update_cookies({PRE_SESSION_COOKIE: pre}, URL(b.origin + "/"))
    signed = await b.post("/login", {"username": "alice", "password": PASSWORD}, token=form_token)
    assert signed.status == 303
    b.client.session.cookie_jar.clear()
    a.client.session.cookie_jar.clear()
    token = await b.login_ok("alice")  # signs in on B
    form = {"current_password": PASSWORD, "new_password": NEW, "confirm_password": NEW}
    r = await b.post("/account/password", form, token=token)
    assert r.status == 200 and "is changed" in await r.text()
    assert (await a.login("alice", PASSWORD)).status == 401  # the old one, on A
    token = await a.login_ok("alice", NEW)

    # A's session cookie is valid on B; a sign-out on B ends it on A too.
    _carry_session(a, b)
    assert await _page_status(b) == (200, "")
    assert (await b.post("/logout", token=token)).status == 303
    assert await _page_status(a) == (303, "/login")

    # The idle timeout holds on both: B's use keeps A's session alive, then none does.
    await a.login_ok("alice", NEW)
    _carry_session(a, b)
    idle = a.gw.config.admin.idle_timeout
    a.clock.advance(idle - 1)
    assert await _page_status(b) == (200, "")  # touched on B
    a.clock.advance(idle - 1)
    assert await _page_status(a) == (200, "")  # alive on A: B's touch counted
    a.clock.advance(idle)
    assert await _page_status(b) == (303, "/login")
    assert await _page_status(a) == (303, "/login")


async def test_the_console_through_a_running_node_acts_on_the_shared_users(
    panels: tuple[PanelClient, PanelClient],
) -> None:
    a, b = panels
    said: list[str] = []
    args = {"username": "dora", "role": "viewer", "password": PASSWORD}
    # What `smsgw user add` / `disable` run through gw1's socket do.
    for name, given in (("user.add", args), ("user.disable", {"username": "dora"})):
        code = await registry.run_in(
            a.gw.config,
            a.gw.store,
            a.gw.store.master_key,
            name,
            given,
            actor="console",
            out=said.append,
            err=said.append,
            clock=a.gw.clock,
            gateway=a.gw,
        )
        assert code == 0, said
    found = await b.gw.admin_repo.user_by_name("dora")
    assert found is not None and found[0].disabled
    assert await AdminRepo(a.gw.store).user_by_name("dora") is None  # not the node's own


async def test_wrong_passwords_split_across_nodes_get_at_most_the_configured_checks(
    panels: tuple[PanelClient, PanelClient],
) -> None:
    a, b = panels
    await a.add_user("alice")
    config = a.gw.config.admin
    hashers = counting_hasher(a), counting_hasher(b)
    tokens = await a.csrf("/login"), await b.csrf("/login")
    form = {"username": "alice", "password": WRONG}

    async def burst(each: int) -> list[int]:
        answers = await asyncio.gather(
            *(a.post("/login", form, token=tokens[0]) for _ in range(each)),
            *(b.post("/login", form, token=tokens[1]) for _ in range(each)),
        )
        return [r.status for r in answers]

    def checks() -> int:
        return sum(h.verified for h in hashers)

    statuses = await burst(20)
    # Up to `throttle_after` failures go at once, the next one too, on both nodes together.
    assert statuses.count(401) == checks() == config.throttle_after + 1
    assert statuses.count(429) == 40 - checks()
    for _ in range(config.max_failed_logins):
        a.clock.advance(config.max_delay)
        assert (await burst(1)).count(401) <= 1
    assert checks() == config.max_failed_logins
    # Locked on both: even the right password is not checked on either.
    assert (await a.login("alice")).status == 429
    assert (await b.login("alice")).status == 429
    assert checks() == config.max_failed_logins


async def test_a_nodes_own_users_are_copied_up_once_never_over_a_newer_row(
    pool: Pool, tmp_path: Path
) -> None:
    master = bytes(32)
    stores = [Store(tmp_path / f"gw{n}.db", master) for n in (1, 2)]
    for store in stores:
        await store.open()
    try:
        gw1, gw2 = stores
        assert gw1.cipher is not None
        shared = ClusterPanel(
            pool, gw1.cipher, KeyringWatch(pool, master, gw1.cipher), AdminRepo(gw1)
        )
        now = SystemClock().time()
        one, two = AdminRepo(gw1), AdminRepo(gw2)
        await one.add_user("u-1", "alice", Role.ADMIN, "hash-old", now)
        await one.set_totp_secret("u-1", "JBSWY3DPEHPK3PXP")
        await one.set_totp_required([Role.ADMIN])
        assert await shared.copy_local_once(gw1.reader, "gw1", now) == 1
        assert await shared.copy_local_once(gw1.reader, "gw1", now) is None  # once
        found = await shared.user_by_name("ALICE")  # one name whatever its case
        assert found is not None and found[1].totp_secret == "JBSWY3DPEHPK3PXP"
        assert await shared.totp_required_roles() == frozenset({Role.ADMIN})

        # Changed on the cluster since; gw2's older copy of alice does not undo it, its
        # own bob is added, and its other "Alice" (another id) does not take the name.
        await shared.set_password("u-1", "hash-new", now + 10, keep_session=None)
        await two.add_user("u-1", "alice", Role.VIEWER, "hash-old", now)
        await two.add_user("u-2", "bob", Role.VIEWER, "hash-bob", now)
        await two.add_user("u-3", "carol", Role.VIEWER, "hash-carol", now + 20)
        await shared.add_user("u-3", "carol", Role.VIEWER, "hash-carol-old", now)
        assert await shared.copy_local_once(gw2.reader, "gw2", now + 30) == 2  # bob, carol
        alice = await shared.user_by_id("u-1")
        assert alice is not None and alice[1].password_hash == "hash-new"
        assert alice[0].role is Role.ADMIN
        carol = await shared.user_by_id("u-3")  # the local row changed later: it wins
        assert carol is not None and carol[1].password_hash == "hash-carol"
        assert [u.username for u in await shared.users()] == ["alice", "bob", "carol"]
    finally:
        for store in stores:
            await store.close()
