"""Sign-in over loopback: answers that reveal nothing, throttling and lockout on a fake
clock, TOTP enrolment by QR, codes that work once, TOTP required per role."""

from __future__ import annotations

import re

import pyotp

from gateway.admin import totp
from gateway.panel_users import Role
from tests.admin_support import PASSWORD, PanelClient

WRONG = "not the password, clearly"


async def _failures(panel: PanelClient, username: str, n: int) -> list[int]:
    return [(await panel.login(username, WRONG)).status for _ in range(n)]


async def test_unknown_user_wrong_password_and_disabled_look_the_same(
    panel: PanelClient,
) -> None:
    await panel.add_user("alice")
    disabled = await panel.add_user("dora")
    await panel.accounts.repo.set_disabled(disabled.id, panel.clock.time())
    answers = []
    for username, password in (("alice", WRONG), ("nobody", WRONG), ("dora", PASSWORD)):
        r = await panel.login(username, password)
        answers.append((r.status, re.sub(r'content="[^"]*"|value="[^"]*"', "", await r.text())))
    assert answers[0] == answers[1] == answers[2]
    assert answers[0][0] == 401
    assert "not right" in answers[0][1] and "alice" not in answers[0][1]


async def test_growing_delay_then_lockout(panel: PanelClient) -> None:
    await panel.add_user("alice")
    config = panel.gw.config.admin
    assert (config.throttle_after, config.max_failed_logins) == (3, 10)
    assert await _failures(panel, "alice", 3) == [401, 401, 401]
    # The 4th failure is allowed at once; after it each try waits 1 s, 2 s, 4 s ...
    assert await _failures(panel, "alice", 1) == [401]
    r = await panel.login("alice")  # even the right password must wait
    assert r.status == 429 and "Try again in 1 seconds" in await r.text()
    expected_waits = [1, 2, 4, 8, 16, 32]
    for wait in expected_waits:
        panel.clock.advance(wait - 0.5)
        assert (await panel.login("alice", WRONG)).status == 429
        panel.clock.advance(0.5)
        assert (await panel.login("alice", WRONG)).status == 401
    # 10 failures: locked for lockout_minutes, whatever the password.
    r = await panel.login("alice")
    assert r.status == 429 and "Try again in 900 seconds" in await r.text()
    assert (await panel.audit_actions()).count("account_locked") == 1
    panel.clock.advance(config.lockout_minutes * 60 - 1)
    assert (await panel.login("alice")).status == 429
    panel.clock.advance(1)
    assert (await panel.login("alice")).status == 303


async def test_unknown_names_are_throttled_alike(panel: PanelClient) -> None:
    await panel.add_user("alice")
    known = await _failures(panel, "alice", 5)
    # Loopback has one source address: forget its count so only the names differ.
    await panel.accounts.repo.clear_failures(["source:127.0.0.1"])
    unknown = await _failures(panel, "mallory", 5)
    assert known == unknown == [401, 401, 401, 401, 429]


async def test_success_resets_the_count(panel: PanelClient) -> None:
    await panel.add_user("alice")
    await _failures(panel, "alice", 3)
    assert (await panel.login("alice")).status == 303
    # The account's count starts again (the source's does not: it decays with time).
    assert await _failures(panel, "alice", 1) == [401]
    panel.clock.advance(panel.gw.config.admin.lockout_minutes * 60)
    assert await _failures(panel, "alice", 3) == [401, 401, 401]
    assert await _failures(panel, "alice", 2) == [401, 429]


async def test_totp_enrolment_then_login_with_a_code_once(panel: PanelClient) -> None:
    user = await panel.add_user("alice")
    token = await panel.login_ok("alice")
    page = await (await panel.client.get("/account/totp")).text()
    assert 'src="data:image/svg+xml' in page
    secret = await panel.totp_secret(user.id)
    assert secret.encode() not in panel.gw.config.db_path.read_bytes()  # encrypted at rest
    shown = re.search(r'class="totp-secret">([^<]*)<', page)
    assert shown is not None and shown.group(1).replace(" ", "") == secret
    r = await panel.post("/account/totp", {"code": "000000"}, token=token)
    assert r.status == 401
    r = await panel.post("/account/totp", {"code": panel.code(secret)}, token=token)
    assert r.status == 303
    assert "totp_enrolled" in await panel.audit_actions()

    panel.client.session.cookie_jar.clear()
    r = await panel.login("alice")
    assert r.status == 303 and r.headers["Location"] == "/login/totp"
    pending = panel.cookie("smsgw_session")
    # Password alone opens nothing but the TOTP pages.
    r = await panel.client.get("/audit", allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/login/totp"
    token = await panel.csrf("/login/totp")
    # The code used for enrolment (same 30 s step) is spent: replay refused.
    r = await panel.post("/login/totp", {"code": panel.code(secret)}, token=token)
    assert r.status == 401
    panel.clock.advance(totp.STEP_SECONDS)
    code = panel.code(secret)
    r = await panel.post("/login/totp", {"code": code}, token=token)
    assert r.status == 303 and r.headers["Location"] == "/"
    assert panel.cookie("smsgw_session") != pending, "new id after the second factor"
    assert (await panel.client.get("/audit", allow_redirects=False)).status == 200

    # The same code again, in a fresh login within the same step: refused.
    panel.client.session.cookie_jar.clear()
    await panel.login("alice")
    token = await panel.csrf("/login/totp")
    assert (await panel.post("/login/totp", {"code": code}, token=token)).status == 401
    # The three wrong codes from this address are one entry, then one with their count.
    assert (await panel.audit_actions()).count("totp_failed") == 1
    panel.clock.advance(panel.gw.config.admin.failure_audit_window)
    await panel.gw.audit.close_repeats()
    entries = await panel.gw.audit.entries()
    assert entries[0].action == "repeated"
    assert entries[0].detail_map()["action"] == "totp_failed"
    assert entries[0].detail_map()["count"] == 3


async def test_codes_from_an_authenticator_app_within_one_step_of_drift(
    panel: PanelClient,
) -> None:
    user = await panel.add_user("alice")
    token = await panel.login_ok("alice")
    await panel.client.get("/account/totp")
    secret = await panel.totp_secret(user.id)
    app = pyotp.TOTP(secret)  # what the phone computes
    code = app.at(panel.clock.time() - 30)
    assert (await panel.post("/account/totp", {"code": code}, token=token)).status == 303
    panel.client.session.cookie_jar.clear()
    await panel.login("alice")
    token = await panel.csrf("/login/totp")
    too_old = app.at(panel.clock.time() - 90)
    assert (await panel.post("/login/totp", {"code": too_old}, token=token)).status == 401
    ahead = app.at(panel.clock.time() + 30)
    assert (await panel.post("/login/totp", {"code": ahead}, token=token)).status == 303


async def test_a_role_can_be_made_to_require_totp(panel: PanelClient) -> None:
    await panel.add_user("root")
    await panel.add_user("oscar", Role.OPERATOR)
    token = await panel.login_ok("root")
    r = await panel.post("/users/totp-policy", {"totp_required": "operator"}, token=token)
    assert r.status == 303
    assert await panel.accounts.totp_required_roles() == {Role.OPERATOR}
    panel.client.session.cookie_jar.clear()
    r = await panel.login("oscar")
    assert r.status == 303 and r.headers["Location"] == "/account/totp"
    r = await panel.client.get("/account", allow_redirects=False)
    assert r.headers["Location"] == "/account/totp"
    assert (await panel.client.get("/account/totp")).status == 200
    # Until enrolled, every other page sends oscar back to enrolment.
    token = await panel.csrf("/account/totp")
    r = await panel.post("/account/password", {"current_password": PASSWORD}, token=token)
    assert r.status == 401
    assert (await r.json())["error"]["code"] == "second_factor_required"


async def test_the_configured_totp_roles_apply(open_gateway: object) -> None:
    from gateway.admin.throttle import LoginThrottle
    from gateway.config import from_mapping

    c = from_mapping({"admin": {"totp_required_roles": ["admin"], "max_failed_logins": 5}})
    assert c.admin.totp_required_roles == ("admin",)
    t = LoginThrottle.from_config(c.admin)
    assert t.max_failures == 5


async def test_password_change(panel: PanelClient) -> None:
    await panel.add_user("alice")
    token = await panel.login_ok("alice")
    new = "a quieter harbour at midnight"
    r = await panel.post(
        "/account/password",
        {"current_password": WRONG, "new_password": new, "confirm_password": new},
        token=token,
    )
    assert r.status == 403
    r = await panel.post(
        "/account/password",
        {
            "current_password": PASSWORD,
            "new_password": "Password123456!",
            "confirm_password": "Password123456!",
        },
        token=token,
    )
    assert r.status == 422 and "commonly used" in await r.text()
    r = await panel.post(
        "/account/password",
        {"current_password": PASSWORD, "new_password": new, "confirm_password": new},
        token=token,
    )
    assert r.status == 200 and "is changed" in await r.text()
    panel.client.session.cookie_jar.clear()
    panel.clock.advance(60)
    assert (await panel.login("alice", PASSWORD)).status == 401
    assert (await panel.login("alice", new)).status == 303
