"""Issue 18, directory sign-in on a cluster: two gateways on one PostgreSQL, each with
its panel on loopback and `[directory]` pointing at the suite's OpenLDAP
(`tests/peers/slapd.py`). What a directory sign-in writes (the user by its stable id,
its role, the session, the failure counts) is in the shared `PanelStore`
(`gateway/cluster/panel.py`): a user signed in on A holds a session valid on B, signing
in on B finds the same user (one row, by the directory's id, whichever node made it),
and a sign-out on B ends the session on A."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from drivers.clock import FakeClock
from gateway.app import Gateway
from gateway.config import from_mapping
from gateway.http_app import build_app, runner_options
from gateway.panel_users import Role
from gateway.store import crypto
from tests.admin_support import PanelClient
from tests.conftest import FAST_PASSWORD_HASH, LOOPBACK_TEST
from tests.directory_rig import directory_section
from tests.peers.slapd import PASSWORDS, Slapd
from tests.pg.test_cluster_panel import _carry_session, _page_status


def _config(data: Path, name: str, dsn: str, directory: dict[str, Any]) -> Any:
    data.mkdir(exist_ok=True)
    return from_mapping(
        {
            "data_dir": str(data),
            "routes": [{"name": "main", "type": "loopback", **LOOPBACK_TEST}],
            "http": {"shutdown_grace": 1.0},
            "admin": FAST_PASSWORD_HASH,
            "directory": directory,
            "source": str(data / "smsgw.toml"),
            # A fake clock never renews the lease: long enough for any test here.
            "cluster": {"enabled": True, "node_id": name, "conninfo": dsn, "lease_seconds": 600},
        }
    )


@pytest.fixture
async def panels(
    tmp_path: Path, clock: FakeClock, pg_dsn: str, slapd_server: Slapd
) -> AsyncIterator[tuple[PanelClient, PanelClient]]:
    directory = directory_section(tmp_path, slapd_server.pki.ca, [slapd_server.url])
    gateways: list[Gateway] = []
    clients: list[TestClient[Any, Any]] = []
    try:
        for name in ("gw1", "gw2"):
            config = _config(tmp_path / name, name, pg_dsn, directory)
            if name == "gw1":
                crypto.generate_master_key(config.master_key_path)
            else:  # one keyring: the first's data directory copied
                shutil.copytree(tmp_path / "gw1", tmp_path / name, dirs_exist_ok=True)
            gw = await Gateway.open(config, clock)
            gateways.append(gw)
            await gw.start(dispatch=False)
            server = TestServer(build_app(gw))
            await server.start_server(**runner_options(gw))
            client: TestClient[Any, Any] = TestClient(server)
            await client.start_server()
            clients.append(client)
        yield PanelClient(gateways[0], clients[0]), PanelClient(gateways[1], clients[1])
    finally:
        for c in clients:
            await c.close()
        for gw in gateways:
            if not gw.stopped:
                await gw.stop()


async def test_a_directory_sign_in_on_a_holds_on_b(
    panels: tuple[PanelClient, PanelClient],
) -> None:
    a, b = panels
    r = await a.login("olivia", PASSWORDS["olivia"])
    assert r.status == 303 and r.headers["Location"] == "/", await r.text()
    found = await b.gw.admin_repo.user_by_name("olivia")  # B reads what A's sign-in wrote
    assert found is not None
    user = found[0]
    assert user.role is Role.OPERATOR and user.directory_id is not None
    assert await b.gw.admin_repo.user_by_directory_id(user.directory_id) == user

    # A's session cookie is valid on B.
    _carry_session(a, b)
    assert await _page_status(b, "/messages") == (200, "")

    # Signing in on B finds the same user: one row, by the directory's stable id.
    b.client.session.cookie_jar.clear()
    token = await b.login_ok("olivia", PASSWORDS["olivia"])
    assert [u.id for u in await a.gw.admin_repo.users() if u.from_directory] == [user.id]

    # A sign-out on B ends the session on A too.
    _carry_session(b, a)
    assert await _page_status(a, "/messages") == (200, "")
    assert (await b.post("/logout", token=token)).status == 303
    assert await _page_status(a, "/messages") == (303, "/login")
