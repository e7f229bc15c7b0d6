"""Guessing in parallel against a real panel on loopback: hundreds of wrong passwords or
codes at once get at most the configured number of checks, then the account locks.

Checks are counted where they happen: argon2 verifications through a real hasher that
counts its calls, TOTP codes through a counting wrapper around the real matcher.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from gateway.admin import passwords, totp
from gateway.admin.accounts import Accounts
from gateway.admin.panel import PANEL
from gateway.config import AdminConfig
from tests.admin_support import PASSWORD, PanelClient

WRONG = "not the password, clearly"
BURST = 200


class CountingHasher(passwords.Hasher):
    """The configured argon2id hasher, counting the verifications it runs."""

    def __init__(self, config: AdminConfig) -> None:
        super().__init__(
            config.password_hash_memory_kib,
            config.password_hash_iterations,
            config.password_hash_lanes,
        )
        self._lock = threading.Lock()
        self.verified = 0

    def verify(self, stored_hash: str, password: str) -> bool:
        with self._lock:
            self.verified += 1
        return super().verify(stored_hash, password)


class CountingMatcher:
    """`totp.match_step`, counting the codes it is asked to check."""

    def __init__(self) -> None:
        self.checked = 0

    def __call__(self, secret: str, code: str, now: float, last_step: int) -> int | None:
        self.checked += 1
        return totp.match_step(secret, code, now, last_step)


def live_accounts(panel: PanelClient) -> Accounts:
    """The accounts service the running panel signs people in with."""
    accounts: Accounts = panel.client.server.app[PANEL].accounts
    return accounts


def counting_hasher(panel: PanelClient) -> CountingHasher:
    accounts = live_accounts(panel)
    hasher = CountingHasher(panel.gw.config.admin)
    accounts.hasher = hasher
    return hasher


def counting_matcher(panel: PanelClient) -> CountingMatcher:
    matcher = CountingMatcher()
    live_accounts(panel).match_code = matcher
    return matcher


async def burst(
    panel: PanelClient, path: str, form: Callable[[int], dict[str, str]], token: str
) -> list[int]:
    answers = await asyncio.gather(*(panel.post(path, form(i), token=token) for i in range(BURST)))
    return [r.status for r in answers]


async def enrolled(panel: PanelClient, username: str) -> str:
    """A user with TOTP enrolled; their secret. The cookie jar is left empty."""
    user = await panel.add_user(username)
    token = await panel.login_ok(username)
    await panel.client.get("/account/totp")
    secret = await panel.totp_secret(user.id)
    r = await panel.post("/account/totp", {"code": panel.code(secret)}, token=token)
    assert r.status == 303
    panel.client.session.cookie_jar.clear()
    panel.clock.advance(totp.STEP_SECONDS)
    return secret


def wrong_codes(secret: str, panel: PanelClient) -> Callable[[int], dict[str, str]]:
    now = int(panel.clock.time() // totp.STEP_SECONDS)
    valid = {totp.code_at(secret, s) for s in range(now - 3, now + 4)}
    codes = [f"{n:06d}" for n in range(BURST + len(valid)) if f"{n:06d}" not in valid]
    return lambda i: {"code": codes[i]}


async def test_parallel_wrong_passwords_get_at_most_the_configured_checks(
    panel: PanelClient,
) -> None:
    await panel.add_user("alice")
    config = panel.gw.config.admin
    hasher = counting_hasher(panel)
    token = await panel.csrf("/login")
    form = {"username": "alice", "password": WRONG}
    statuses = await burst(panel, "/login", lambda _: form, token)
    # Up to `throttle_after` failures go at once, the next one too; then each waits.
    assert statuses.count(401) == hasher.verified == config.throttle_after + 1
    assert statuses.count(429) == BURST - hasher.verified
    for _ in range(config.max_failed_logins):
        panel.clock.advance(config.max_delay)
        statuses = await burst(panel, "/login", lambda _: form, token)
        assert statuses.count(401) <= 1
    assert hasher.verified == config.max_failed_logins
    # Locked: even the right password is not checked.
    r = await panel.login("alice")
    assert r.status == 429 and "Try again in" in await r.text()
    assert hasher.verified == config.max_failed_logins
    assert (await panel.audit_actions()).count("account_locked") == 1
    panel.clock.advance(config.lockout_minutes * 60)
    assert (await panel.login("alice")).status == 303


async def test_parallel_wrong_codes_get_at_most_the_configured_checks(
    panel: PanelClient,
) -> None:
    secret = await enrolled(panel, "alice")
    config = panel.gw.config.admin
    matcher = counting_matcher(panel)
    assert (await panel.login("alice")).status == 303
    token = await panel.csrf("/login/totp")
    statuses = await burst(panel, "/login/totp", wrong_codes(secret, panel), token)
    assert statuses.count(401) == matcher.checked == config.throttle_after + 1
    assert statuses.count(429) == BURST - matcher.checked
    for _ in range(config.max_failed_logins):
        panel.clock.advance(config.max_delay)
        statuses = await burst(panel, "/login/totp", wrong_codes(secret, panel), token)
        assert statuses.count(401) <= 1
    assert matcher.checked == config.max_failed_logins
    # The right code is not checked now, and the password cannot start a new try.
    r = await panel.post("/login/totp", {"code": panel.code(secret)}, token=token)
    assert r.status == 429
    assert matcher.checked == config.max_failed_logins
    panel.client.session.cookie_jar.clear()
    assert (await panel.login("alice")).status == 429
    locks = [e for e in await panel.gw.audit.entries() if e.action == "account_locked"]
    assert len(locks) == 1 and locks[0].detail_map()["factor"] == "totp"
    # `smsgw user unlock` lifts a lock of either count.
    await panel.accounts.unlock("alice", "console")
    assert (await panel.login("alice")).status == 303
    token = await panel.csrf("/login/totp")
    assert (
        await panel.post("/login/totp", {"code": panel.code(secret)}, token=token)
    ).status == 303


async def test_a_good_password_does_not_reset_the_code_count(panel: PanelClient) -> None:
    secret = await enrolled(panel, "alice")
    config = panel.gw.config.admin
    matcher = counting_matcher(panel)
    for _ in range(2 * config.max_failed_logins):
        panel.client.session.cookie_jar.clear()
        r = await panel.login("alice")
        if r.status == 429:
            break
        assert r.status == 303 and r.headers["Location"] == "/login/totp"
        token = await panel.csrf("/login/totp")
        await burst(panel, "/login/totp", wrong_codes(secret, panel), token)
        panel.clock.advance(config.max_delay)
    assert r.status == 429, "a burst of codes after each good password never locked"
    assert matcher.checked == config.max_failed_logins


async def test_current_password_guesses_are_throttled_and_lock(panel: PanelClient) -> None:
    await panel.add_user("alice")
    config = panel.gw.config.admin
    token = await panel.login_ok("alice")
    hasher = counting_hasher(panel)
    new = "a quieter harbour at midnight"
    form = {"current_password": WRONG, "new_password": new, "confirm_password": new}
    statuses = await burst(panel, "/account/password", lambda _: form, token)
    assert statuses.count(403) == hasher.verified == config.throttle_after + 1
    assert statuses.count(429) == BURST - hasher.verified
    for _ in range(config.max_failed_logins):
        panel.clock.advance(config.max_delay)
        await burst(panel, "/account/password", lambda _: form, token)
    assert hasher.verified == config.max_failed_logins
    # The lock ended the session that guessed (a stolen one, as far as we can tell).
    assert "account_locked" in await panel.audit_actions()
    assert "sessions_ended" in await panel.audit_actions()
    right = {"current_password": PASSWORD, "new_password": new, "confirm_password": new}
    r = await panel.post("/account/password", right, token=token)
    assert r.status == 401, "the session is gone"
    r = await panel.client.get("/account", allow_redirects=False)
    assert r.headers["Location"] == "/login"
    assert hasher.verified == config.max_failed_logins
    panel.client.session.cookie_jar.clear()
    assert (await panel.login("alice")).status == 429
