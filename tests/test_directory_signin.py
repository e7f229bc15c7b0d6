"""Panel sign-in against a real OpenLDAP (Debian slapd, StartTLS with a test CA): nested
groups to roles, TOTP kept by the directory's stable id, losing access within the
recheck interval, throttling before the directory's lockout, bad input refused, and the
break-glass admin while the directory is down."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.admin import totp
from gateway.panel_users import Role
from tests.admin_support import PASSWORD, PanelClient
from tests.conftest import GatewayFactory
from tests.directory_rig import directory_panel
from tests.peers.slapd import PASSWORDS, Slapd, user_dn

WRONG = "not the directory password"


@pytest.fixture
async def directory(
    open_gateway: GatewayFactory, tmp_path: Path, slapd_server: Slapd
) -> AsyncIterator[PanelClient]:
    panel, client = await directory_panel(
        open_gateway, tmp_path, slapd_server.pki, [slapd_server.url]
    )
    try:
        yield panel
    finally:
        await client.close()


def count_calls(obj: Any, name: str) -> list[tuple[Any, ...]]:
    """Record each call of `obj.name` (the real method still runs)."""
    calls: list[tuple[Any, ...]] = []
    real = getattr(obj, name)

    def wrapper(*args: Any) -> Any:
        calls.append(args)
        return real(*args)

    setattr(obj, name, wrapper)
    return calls


async def _user(panel: PanelClient, name: str) -> Any:
    found = await panel.gw.admin_repo.user_by_name(name)
    assert found is not None
    return found[0]


# -- 1, 2: sign-in, nested groups, roles ---------------------------------------------------


async def test_a_member_of_a_nested_group_signs_in_as_operator(directory: PanelClient) -> None:
    r = await directory.login("olivia", PASSWORDS["olivia"])
    assert r.status == 303 and r.headers["Location"] == "/", await r.text()
    user = await _user(directory, "olivia")
    assert user.role is Role.OPERATOR and user.from_directory
    assert re.fullmatch(r"[0-9a-f-]{36}", user.directory_id), "the entryUUID"
    assert (await directory.client.get("/messages", allow_redirects=False)).status == 200
    entries = await directory.gw.audit.entries(limit=5)
    assert entries[0].action == "login" and entries[0].detail_map()["directory"] is True
    status = directory.gw.directory.status if directory.gw.directory else None
    assert status is not None and status.state == "up"


@pytest.mark.parametrize(("name", "role"), [("adam", Role.ADMIN), ("vera", Role.VIEWER)])
async def test_each_mapped_group_gives_its_role(
    directory: PanelClient, name: str, role: Role
) -> None:
    r = await directory.login(name, PASSWORDS[name])
    assert r.status == 303
    assert (await _user(directory, name)).role is role


async def test_a_user_in_no_mapped_group_cannot_sign_in(directory: PanelClient) -> None:
    r = await directory.login("nogroup", PASSWORDS["nogroup"])
    assert r.status == 403
    assert "not in a group" in await r.text()
    assert await directory.gw.admin_repo.user_by_name("nogroup") is None
    assert directory.cookie("smsgw_session") is None


async def test_a_locked_account_is_refused_without_a_bind(directory: PanelClient) -> None:
    assert directory.gw.directory is not None
    binds = count_calls(directory.gw.directory.client, "check_password")
    r = await directory.login("locked", PASSWORDS["locked"])
    assert r.status == 401 and "not right" in await r.text()
    assert binds == [], "a locked account is never bound: smsgw adds nothing to its count"
    entries = await directory.gw.audit.entries(limit=5)
    failed = [e for e in entries if e.action == "login_failed"]
    assert failed and failed[0].detail_map()["reason"] == "locked"


async def test_removed_from_the_group_loses_access_within_the_interval(
    directory: PanelClient, slapd_server: Slapd
) -> None:
    assert (await directory.login("mover", PASSWORDS["mover"])).status == 303
    mover = await _user(directory, "mover")
    assert (await directory.client.get("/messages", allow_redirects=False)).status == 200
    slapd_server.remove_member("smsgw-operators", user_dn("mover"))
    try:
        interval = directory.gw.config.directory.recheck_interval
        directory.clock.advance(interval - 1)
        r = await directory.client.get("/messages", allow_redirects=False)
        assert r.status == 200, "within the interval the role read at sign-in stands"
        directory.clock.advance(1)
        r = await directory.client.get("/messages", allow_redirects=False)
        assert r.status == 303 and r.headers["Location"] == "/login"
        assert await directory.gw.admin_repo.session_count(mover.id) == 0
        assert "directory_access_ended" in await directory.audit_actions()
        r = await directory.login("mover", PASSWORDS["mover"])
        assert r.status == 403, "signing in again is refused too"
    finally:
        slapd_server.add_member("smsgw-operators", user_dn("mover"))
    r = await directory.login("mover", PASSWORDS["mover"])
    assert r.status == 303, "back in the group: access again, the same row"
    assert (await _user(directory, "mover")).id == mover.id


async def test_a_locked_directory_account_ends_the_session_at_the_recheck(
    directory: PanelClient, slapd_server: Slapd
) -> None:
    import ldap3

    assert (await directory.login("mover", PASSWORDS["mover"])).status == 303
    lock = {"pwdAccountLockedTime": [(ldap3.MODIFY_REPLACE, ["000001010000Z"])]}
    slapd_server.modify(user_dn("mover"), lock)
    try:
        directory.clock.advance(directory.gw.config.directory.recheck_interval)
        r = await directory.client.get("/messages", allow_redirects=False)
        assert r.status == 303 and r.headers["Location"] == "/login"
    finally:
        slapd_server.modify(user_dn("mover"), {"pwdAccountLockedTime": [(ldap3.MODIFY_DELETE, [])]})


async def test_a_role_change_in_the_directory_is_read_at_the_next_sign_in(
    directory: PanelClient, slapd_server: Slapd
) -> None:
    assert (await directory.login("vera", PASSWORDS["vera"])).status == 303
    assert (await _user(directory, "vera")).role is Role.VIEWER
    slapd_server.add_member("smsgw-auditors", user_dn("vera"))
    try:
        directory.client.session.cookie_jar.clear()
        assert (await directory.login("vera", PASSWORDS["vera"])).status == 303
        assert (await _user(directory, "vera")).role is Role.AUDITOR  # ranks above viewer
    finally:
        slapd_server.remove_member("smsgw-auditors", user_dn("vera"))


# -- 3: the second factor stays, keyed to the stable id -----------------------------------


async def test_totp_is_required_and_survives_a_rename(
    open_gateway: GatewayFactory, tmp_path: Path, slapd_server: Slapd
) -> None:
    panel, client = await directory_panel(
        open_gateway,
        tmp_path,
        slapd_server.pki,
        [slapd_server.url],
        admin={"totp_required_roles": ["viewer"]},
    )
    try:
        r = await panel.login("vera", PASSWORDS["vera"])
        assert r.status == 303 and r.headers["Location"] == "/account/totp"
        vera = await _user(panel, "vera")
        token = await panel.csrf("/account/totp")
        secret = await panel.totp_secret(vera.id)
        r = await panel.post("/account/totp", {"code": panel.code(secret)}, token=token)
        assert r.status == 303 and r.headers["Location"] == "/"
        slapd_server.rename("vera", "vera.nurse")
        try:
            panel.client.session.cookie_jar.clear()
            panel.clock.advance(totp.STEP_SECONDS)
            r = await panel.login("vera.nurse", PASSWORDS["vera"])
            assert r.status == 303 and r.headers["Location"] == "/login/totp", "enrolled already"
            renamed = await _user(panel, "vera.nurse")
            assert renamed.id == vera.id and renamed.directory_id == vera.directory_id
            token = await panel.csrf("/login/totp")
            r = await panel.post("/login/totp", {"code": panel.code(secret)}, token=token)
            assert r.status == 303 and r.headers["Location"] == "/"
        finally:
            slapd_server.rename("vera.nurse", "vera")
    finally:
        await client.close()


async def test_a_directory_user_changes_no_password_here(directory: PanelClient) -> None:
    assert (await directory.login("olivia", PASSWORDS["olivia"])).status == 303
    token = await directory.csrf("/account")
    r = await directory.post(
        "/account/password",
        {
            "current_password": PASSWORDS["olivia"],
            "new_password": "x" * 20,
            "confirm_password": "x" * 20,
        },
        token=token,
    )
    assert r.status == 409 and "directory" in await r.text()


# -- 5: throttling, one bind per try, a lock before the directory's ------------------------


async def test_wrong_passwords_bind_once_each_and_lock_before_the_directory_does(
    directory: PanelClient,
) -> None:
    assert directory.gw.directory is not None
    assert (await directory.login("adam", PASSWORDS["adam"])).status == 303  # a known user
    directory.client.session.cookie_jar.clear()
    binds = count_calls(directory.gw.directory.client, "check_password")
    limit = directory.gw.config.directory.max_failed_logins
    assert limit < 5, "below AD's common lockout threshold"
    statuses = []
    for _ in range(limit):
        statuses.append((await directory.login("adam", WRONG)).status)
        directory.clock.advance(directory.gw.config.admin.max_delay)
    assert statuses == [401] * limit
    assert len(binds) == limit, "one bind per attempt, never a retry"
    r = await directory.login("adam", PASSWORDS["adam"])
    assert r.status == 429, "locked here: the right password is not even tried"
    assert len(binds) == limit
    assert "account_locked" in await directory.audit_actions()


async def test_parallel_wrong_passwords_get_no_more_binds_than_the_throttle_allows(
    directory: PanelClient,
) -> None:
    assert directory.gw.directory is not None
    binds = count_calls(directory.gw.directory.client, "check_password")
    statuses = await asyncio.gather(*(directory.login("adam", WRONG) for _ in range(8)))
    codes = sorted(r.status for r in statuses)
    allowed = directory.gw.config.admin.throttle_after + 1  # then each try waits
    assert codes.count(401) == allowed and codes.count(429) == 8 - allowed
    assert len(binds) == allowed


# -- 6: bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["*", "olivia)(uid=*", "*)(|(uid=*", "oliv*", "olivia)(objectClass=*", "\\2a"]
)
async def test_ldap_injection_in_the_name_finds_nobody(directory: PanelClient, name: str) -> None:
    assert directory.gw.directory is not None
    binds = count_calls(directory.gw.directory.client, "check_password")
    r = await directory.login(name, PASSWORDS["olivia"])
    assert r.status == 401
    assert binds == []


@pytest.mark.parametrize("name", ["olivia", "nobody-here"])
async def test_an_empty_password_is_refused_before_any_bind(
    directory: PanelClient, name: str
) -> None:
    assert directory.gw.directory is not None
    finds = count_calls(directory.gw.directory.client, "find")
    binds = count_calls(directory.gw.directory.client, "check_password")
    r = await directory.login(name, "")
    assert r.status == 401 and directory.cookie("smsgw_session") is None
    assert finds == [] and binds == [], "an unauthenticated bind must never count"


async def test_a_referral_is_not_a_user(directory: PanelClient) -> None:
    r = await directory.login("elsewhere", "any password at all")
    assert r.status == 401
    assert directory.gw.directory is not None
    assert directory.gw.directory.status.state == "up", "not chased, not an outage"


async def test_a_slow_directory_is_refused_within_its_timeout(
    open_gateway: GatewayFactory, tmp_path: Path, slapd_server: Slapd
) -> None:
    accepted = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await reader.read()  # never answers; the client gives up
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    panel, client = await directory_panel(
        open_gateway, tmp_path, slapd_server.pki, [f"ldap://127.0.0.1:{port}"], timeout=1.0
    )
    try:
        r = await panel.login("olivia", PASSWORDS["olivia"])
        assert accepted.is_set()
        assert r.status == 503 and "not available" in await r.text()
        health = await (await panel.client.get("/api/v1/healthz")).json()
        assert health["directory"]["state"] == "down"
    finally:
        await client.close()
        server.close()
        await server.wait_closed()


async def test_a_certificate_for_another_name_is_refused(
    open_gateway: GatewayFactory, tmp_path: Path, slapd_server: Slapd
) -> None:
    from structlog.testing import capture_logs

    wrong = Slapd(tmp_path / "wrong-name", slapd_server.pki, wrong_name=True)
    await asyncio.to_thread(wrong.start)
    try:
        panel, client = await directory_panel(open_gateway, tmp_path, slapd_server.pki, [wrong.url])
        try:
            with capture_logs() as logs:
                r = await panel.login("olivia", PASSWORDS["olivia"])
            assert r.status == 503
            down = [e for e in logs if e["event"] == "directory_unavailable"]
            assert down and down[0]["tls"] is True
            assert "CERTIFICATE_VERIFY_FAILED" in down[0]["reason"]
            assert PASSWORDS["olivia"] not in str(logs)
            assert "service-secret" not in str(logs)
            health = await (await panel.client.get("/api/v1/healthz")).json()
            assert health["directory"] == {
                "state": "down",
                "tls_error": True,
                "since": health["directory"]["since"],
            }
        finally:
            await client.close()
    finally:
        await asyncio.to_thread(wrong.stop)


# -- 4: break-glass while the directory is down -------------------------------------------


async def test_the_break_glass_admin_signs_in_while_the_directory_is_stopped(
    open_gateway: GatewayFactory, tmp_path: Path, slapd_server: Slapd
) -> None:
    own = Slapd(tmp_path / "own-slapd", slapd_server.pki)
    await asyncio.to_thread(own.start)
    panel, client = await directory_panel(open_gateway, tmp_path, slapd_server.pki, [own.url])
    try:
        await panel.add_user("breakglass", Role.ADMIN)
        assert (await panel.login("olivia", PASSWORDS["olivia"])).status == 303
        await asyncio.to_thread(own.stop)
        panel.client.session.cookie_jar.clear()
        r = await panel.login("olivia", PASSWORDS["olivia"])
        assert r.status == 503 and "local account" in await r.text()

        assert (await panel.login("breakglass", PASSWORD)).status == 303
        entries = await panel.gw.audit.entries(limit=10)
        glass = [e for e in entries if e.action == "break_glass_login"]
        assert glass and glass[0].detail_map()["directory"] == "down"

        page = await (await panel.client.get("/")).text()
        assert re.search(r'id="break-glass-count"[^>]*>1<', page)
        assert "Directory not answering" in page
        health = await (await panel.client.get("/api/v1/healthz")).json()
        assert health["directory"]["state"] == "down" and health["ready"] is True
        assert panel.gw.metrics.registry.get_sample_value("smsgw_directory_up") == 0
        refused = panel.gw.metrics.registry.get_sample_value(
            "smsgw_directory_signins_total", {"outcome": "unavailable"}
        )
        assert refused == 1
    finally:
        await client.close()
        await asyncio.to_thread(own.stop)


async def test_an_outage_at_the_recheck_keeps_a_signed_in_session(
    open_gateway: GatewayFactory, tmp_path: Path, slapd_server: Slapd
) -> None:
    own = Slapd(tmp_path / "own-slapd", slapd_server.pki)
    await asyncio.to_thread(own.start)
    panel, client = await directory_panel(open_gateway, tmp_path, slapd_server.pki, [own.url])
    try:
        assert (await panel.login("olivia", PASSWORDS["olivia"])).status == 303
        await asyncio.to_thread(own.stop)
        panel.clock.advance(panel.gw.config.directory.recheck_interval)
        r = await panel.client.get("/messages", allow_redirects=False)
        assert r.status == 200, "the directory's outage does not sign staff out"
        assert "directory_access_ended" not in await panel.audit_actions()
        assert panel.gw.directory is not None and panel.gw.directory.status.state == "down"
    finally:
        await client.close()
        await asyncio.to_thread(own.stop)


async def test_an_admin_cannot_change_a_directory_users_role_here(
    directory: PanelClient,
) -> None:
    await directory.add_user("localadmin", Role.ADMIN)
    assert (await directory.login("olivia", PASSWORDS["olivia"])).status == 303
    olivia = await _user(directory, "olivia")
    directory.client.session.cookie_jar.clear()
    token = await directory.login_ok("localadmin")
    page = await (await directory.client.get("/users")).text()
    assert "(directory groups)" in page
    r = await directory.post(f"/users/{olivia.id}/role", {"role": "admin"}, token=token)
    assert r.status == 409
    assert (await r.json())["error"]["code"] == "directory_managed"
    assert (await _user(directory, "olivia")).role is Role.OPERATOR


async def test_an_open_dashboard_stream_ends_when_the_user_leaves_the_group(
    directory: PanelClient, slapd_server: Slapd
) -> None:
    from tests.test_admin_pages import _read_event

    assert (await directory.login("mover", PASSWORDS["mover"])).status == 303
    r = await directory.client.get("/events")
    await _read_event(r, "snapshot")
    slapd_server.remove_member("smsgw-operators", user_dn("mover"))
    try:
        await directory.clock.wait_sleeping(2)  # the stream and the hub's poller
        directory.clock.advance(directory.gw.config.directory.recheck_interval)
        assert await _read_event(r, "logout") == b"{}"
        r.close()
    finally:
        slapd_server.add_member("smsgw-operators", user_dn("mover"))


async def test_ldaps_a_systemd_credential_and_a_dead_first_server(
    open_gateway: GatewayFactory,
    tmp_path: Path,
    slapd_server: Slapd,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.peers.slapd import SERVICE_PASSWORD
    from tests.ports import free_port

    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "directory.password").write_text(SERVICE_PASSWORD + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    dead = f"ldaps://127.0.0.1:{free_port()}"  # nothing listens: the next URL is tried
    panel, client = await directory_panel(
        open_gateway,
        tmp_path,
        slapd_server.pki,
        [dead, slapd_server.ldaps_url],
        bind_password_file=None,
        bind_password_credential="directory.password",
    )
    try:
        assert panel.gw.directory is not None
        binds = count_calls(panel.gw.directory.client, "check_password")
        r = await panel.login("olivia", WRONG)
        assert r.status == 401 and len(binds) == 1, "a wrong password: one bind, one server"
        r = await panel.login("olivia", PASSWORDS["olivia"])
        assert r.status == 303 and r.headers["Location"] == "/"
    finally:
        await client.close()


async def test_wrong_guesses_at_many_names_from_one_source_are_slowed(
    directory: PanelClient,
) -> None:
    assert directory.gw.directory is not None
    finds = count_calls(directory.gw.directory.client, "find")
    names = ["olivia", "adam", "vera", "mover", "nobody-1", "nobody-2"]
    statuses = [(await directory.login(name, WRONG)).status for name in names]
    allowed = directory.gw.config.admin.throttle_after + 1
    assert statuses == [401] * allowed + [429] * (len(names) - allowed)
    assert len(finds) == allowed, "a throttled try never reaches the directory"


async def test_a_directory_user_disabled_in_the_panel_stays_out(directory: PanelClient) -> None:
    assert (await directory.login("olivia", PASSWORDS["olivia"])).status == 303
    olivia = await _user(directory, "olivia")
    await directory.gw.admin_repo.set_disabled(olivia.id, directory.clock.time())
    assert (await directory.client.get("/messages", allow_redirects=False)).status == 303
    r = await directory.login("olivia", PASSWORDS["olivia"])
    assert r.status == 401, "the directory's yes does not lift a disable made here"
    assert (await _user(directory, "olivia")).disabled
