"""Directory sign-in tests: the gateway's `[directory]` section for the suite's slapd
(`tests/peers/slapd.py`), and a panel client on a gateway that uses it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from tests.admin_support import PanelClient
from tests.conftest import FAST_PASSWORD_HASH, GatewayFactory
from tests.peers.slapd import GROUPS, PEOPLE, ROLE_GROUPS, SERVICE_DN, SERVICE_PASSWORD, Pki


def directory_section(tmp_path: Path, ca: Path, urls: list[str], **over: Any) -> dict[str, Any]:
    secret = tmp_path / "directory-service.password"
    secret.write_text(SERVICE_PASSWORD + "\n")
    secret.chmod(0o600)
    return {
        "enabled": True,
        "urls": urls,
        "ca_file": str(ca),
        "bind_dn": SERVICE_DN,
        "bind_password_file": str(secret),
        "user_base": PEOPLE,
        "group_base": GROUPS,
        "login_attribute": "uid",
        "user_filter": "(objectClass=inetOrgPerson)",
        "id_attribute": "entryUUID",
        "group_mode": "member",
        "roles": dict(ROLE_GROUPS),
        "recheck_interval": 300.0,
        "connect_timeout": 2.0,
        "timeout": 2.0,
        **over,
    }


async def directory_panel(
    open_gateway: GatewayFactory,
    tmp_path: Path,
    pki: Pki,
    urls: list[str],
    *,
    admin: dict[str, Any] | None = None,
    **over: Any,
) -> tuple[PanelClient, TestClient[Any, Any]]:
    """The whole app on loopback (fake clock) with directory sign-in; close the client."""
    from gateway.http_app import build_app, runner_options

    gw = await open_gateway(
        admin={**FAST_PASSWORD_HASH, **(admin or {})},
        directory=directory_section(tmp_path, pki.ca, urls, **over),
    )
    server = TestServer(build_app(gw))
    await server.start_server(**runner_options(gw))
    client: TestClient[Any, Any] = TestClient(server)
    await client.start_server()
    return PanelClient(gw, client), client
