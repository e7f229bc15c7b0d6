"""Server-side sessions over a real loopback socket: cookies, renewal, logout, timeouts."""

from __future__ import annotations

import hashlib

from gateway.panel_users import Role
from tests.admin_support import PanelClient


async def _session_rows(panel: PanelClient) -> list[tuple[bytes, str, str]]:
    cur = await panel.gw.store.reader.execute("SELECT id_hash, user_id, stage FROM sessions")
    return [tuple(r) for r in await cur.fetchall()]  # type: ignore[misc]


async def test_cookie_attributes_over_plain_http(panel: PanelClient) -> None:
    await panel.add_user("alice")
    r = await panel.login("alice")
    cookie = next(c for c in r.headers.getall("Set-Cookie") if c.startswith("smsgw_session="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie and "Domain" not in cookie and "Max-Age" not in cookie


async def test_only_a_hash_of_the_session_id_is_stored(panel: PanelClient) -> None:
    user = await panel.add_user("alice")
    await panel.login_ok("alice")
    token = panel.cookie("smsgw_session")
    assert token is not None and len(token) >= 43  # 256 bits
    [(id_hash, user_id, stage)] = await _session_rows(panel)
    assert id_hash == hashlib.sha256(token.encode()).digest()
    assert (user_id, stage) == (user.id, "full")
    assert token.encode() not in panel.gw.config.db_path.read_bytes()


async def test_login_issues_a_new_id_and_drops_the_old_one(panel: PanelClient) -> None:
    await panel.add_user("alice")
    await panel.add_user("bob")
    await panel.login_ok("alice")
    first = panel.cookie("smsgw_session")
    await panel.login_ok("bob")
    second = panel.cookie("smsgw_session")
    assert first and second and first != second
    rows = await _session_rows(panel)
    assert [r[0] for r in rows] == [hashlib.sha256(second.encode()).digest()]
    # A planted (fixated) cookie is never adopted: login always mints its own id.
    panel.client.session.cookie_jar.update_cookies({"smsgw_session": "attacker-chosen"})
    await panel.login_ok("alice")
    assert panel.cookie("smsgw_session") not in ("attacker-chosen", second)


async def test_logout_kills_the_session_on_the_server(panel: PanelClient) -> None:
    await panel.add_user("alice")
    token = await panel.login_ok("alice")
    stolen = panel.cookie("smsgw_session")
    r = await panel.post("/logout", token=token)
    assert r.status == 303 and r.headers["Location"] == "/login"
    assert await _session_rows(panel) == []
    # Replaying the old cookie gets nothing.
    panel.client.session.cookie_jar.update_cookies({"smsgw_session": stolen or ""})
    r = await panel.client.get("/account", allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/login"
    assert "logout" in await panel.audit_actions()


async def test_idle_timeout(panel: PanelClient) -> None:
    await panel.add_user("alice")
    await panel.login_ok("alice")
    idle = panel.gw.config.admin.idle_timeout
    assert idle == 15 * 60
    panel.clock.advance(idle - 1)
    assert (await panel.client.get("/account", allow_redirects=False)).status == 200
    panel.clock.advance(idle - 1)  # activity above reset the idle clock
    assert (await panel.client.get("/account", allow_redirects=False)).status == 200
    panel.clock.advance(idle + 1)
    r = await panel.client.get("/account", allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/login"
    assert await _session_rows(panel) == []
    entries = await panel.gw.audit.entries()
    assert entries[0].action == "session_timeout"
    assert entries[0].detail_map() == {"reason": "idle"}


async def test_absolute_lifetime_ends_even_a_busy_session(panel: PanelClient) -> None:
    await panel.add_user("alice")
    await panel.login_ok("alice")
    lifetime = panel.gw.config.admin.absolute_lifetime
    assert lifetime == 12 * 3600
    step = 600.0
    elapsed = 0.0
    while elapsed + step < lifetime:
        panel.clock.advance(step)
        elapsed += step
        assert (await panel.client.get("/account", allow_redirects=False)).status == 200
    panel.clock.advance(lifetime - elapsed)
    r = await panel.client.get("/account", allow_redirects=False)
    assert r.status == 303
    assert (await panel.gw.audit.entries())[0].detail_map() == {"reason": "absolute"}


async def test_post_without_a_session_is_401_json(panel: PanelClient) -> None:
    token = await panel.csrf("/login")
    r = await panel.post("/users", {"username": "x"}, token=token)
    assert r.status == 401
    assert (await r.json())["error"]["code"] == "unauthenticated"


async def test_disabling_a_user_ends_their_sessions(panel: PanelClient) -> None:
    await panel.add_user("root")
    viewer = await panel.add_user("vera", Role.VIEWER)
    await panel.login_ok("vera")
    vera_cookie = panel.cookie("smsgw_session")
    panel.client.session.cookie_jar.clear()
    token = await panel.login_ok("root")
    r = await panel.post(f"/users/{viewer.id}/disable", token=token)
    assert r.status == 303
    assert [row[1] for row in await _session_rows(panel)] != [viewer.id]
    panel.client.session.cookie_jar.clear()
    panel.client.session.cookie_jar.update_cookies({"smsgw_session": vera_cookie or ""})
    assert (await panel.client.get("/account", allow_redirects=False)).status == 303
    assert (await panel.login("vera")).status == 401


async def test_housekeeping_removes_sessions_nobody_came_back_to(panel: PanelClient) -> None:
    await panel.add_user("alice")
    await panel.add_user("bob")
    await panel.login_ok("alice")
    panel.client.session.cookie_jar.clear()
    await panel.login("bob", "wrong password, twice over")
    panel.clock.advance(panel.gw.config.admin.idle_timeout - 60)
    await panel.login_ok("bob")
    panel.clock.advance(120)
    await panel.gw.housekeeping_once()
    rows = await _session_rows(panel)
    assert len(rows) == 1, "alice's idle session is gone, bob's is kept"
    panel.clock.advance(panel.gw.config.admin.lockout_minutes * 60)
    await panel.gw.housekeeping_once()
    cur = await panel.gw.store.reader.execute("SELECT count(*) FROM login_failures")
    assert (await cur.fetchone())[0] == 0
