"""Failed sign-ins cannot fill the disk through the audit trail: identical failures in a
window are one entry and a closing count, while every success and lock-out is its own
entry and the chain stays intact."""

from __future__ import annotations

import asyncio

import pytest

from gateway.config import ConfigError, from_mapping
from gateway.store.audit_log import AuditEntry
from tests.admin_support import PanelClient

WRONG = "not the password, clearly"
BURST = 200
FAILURES = ("login_failed", "login_throttled")


def counted(entries: list[AuditEntry], actions: tuple[str, ...]) -> int:
    """Attempts the trail accounts for: each opening entry is one, or its summary's count."""
    by_seq = {e.seq: e for e in entries}
    total = {e.seq: 1 for e in entries if e.action in actions}
    for e in entries:
        if e.action == "repeated":
            opened = by_seq[int(e.target_id or 0)]
            assert opened.action in actions and e.actor == opened.actor
            total[opened.seq] = int(e.detail_map()["count"] or 0)
    return sum(total.values())


async def _bursts(panel: PanelClient, rounds: int, form: object) -> int:
    token = await panel.csrf("/login")
    sent = 0
    for r in range(rounds):
        forms = form(r) if callable(form) else [form] * BURST
        answers = await asyncio.gather(*(panel.post("/login", f, token=token) for f in forms))
        assert {a.status for a in answers} <= {401, 429}
        sent += len(answers)
        panel.clock.advance(panel.gw.config.admin.max_delay)
    return sent


async def test_thousands_of_failures_leave_a_bounded_trail_with_the_count(
    panel: PanelClient,
) -> None:
    await panel.add_user("alice")
    config = panel.gw.config.admin
    sent = await _bursts(panel, 12, {"username": "alice", "password": WRONG})
    assert sent == 12 * BURST
    actions = await panel.audit_actions()
    assert actions.count("account_locked") == 1
    assert len(actions) <= 5, actions
    panel.clock.advance(config.lockout_minutes * 60)
    assert (await panel.login("alice")).status == 303
    await panel.gw.housekeeping_once()  # closes the windows that are over
    entries = await panel.gw.audit.entries(limit=1000)
    assert len(entries) <= 8, [e.action for e in entries]
    assert counted(entries, FAILURES) == sent
    actions = await panel.audit_actions()
    assert actions.index("account_locked") < actions.index("login")
    assert (await panel.gw.audit.verify()).ok


async def test_one_client_spraying_names_leaves_a_bounded_trail(panel: PanelClient) -> None:
    await panel.add_user("alice")

    def names(r: int) -> list[dict[str, str]]:
        return [{"username": f"n{r}x{i}", "password": WRONG} for i in range(BURST)]

    sent = await _bursts(panel, 5, names)
    panel.clock.advance(panel.gw.config.admin.lockout_minutes * 60)
    await panel.gw.housekeeping_once()
    entries = await panel.gw.audit.entries(limit=1000)
    assert len(entries) <= 6, [e.action for e in entries]
    assert counted(entries, FAILURES) == sent
    assert (await panel.gw.audit.verify()).ok


def test_the_window_is_configured_and_checked() -> None:
    assert from_mapping({"admin": {"failure_audit_window": 60}}).admin.failure_audit_window == 60
    with pytest.raises(ConfigError, match=r"admin\.failure_audit_window"):
        from_mapping({"admin": {"failure_audit_window": 0}})
