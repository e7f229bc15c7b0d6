"""The SMPP benchmark's own logic at tiny N: the receipt receiver both gateways forward
to (a real process on loopback), the per-component CPU split of a profile, the
summary's protocol cap and targets, and the throttle scenario's absent-module path."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import aiohttp
import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import harness  # noqa: E402 - bench/ is put on the path just above
import smpp  # noqa: E402
import smpp_profile  # noqa: E402
from receipt_receiver import ReceiptReceiver  # noqa: E402


def _status(message_id: str, state: str) -> bytes:
    data = {"message_id": message_id, "state": state, "route": "sink"}
    return json.dumps({"type": "message.status", "timestamp": "t", "data": data}).encode()


async def test_receiver_counts_each_delivered_receipt_once_from_either_gateway() -> None:
    async with ReceiptReceiver((), target=2) as receiver, aiohttp.ClientSession() as http:
        webhook = receiver.webhook_url
        kannel = receiver.kannel_url.replace("%d", "{t}").replace("%F", "{i}")
        for body in (_status("m1", "delivered"), _status("m1", "delivered"), _status("m2", "sent")):
            async with http.post(webhook, data=body) as r:
                assert r.status == 204
        async with http.post(webhook, data=b"not json") as r:
            assert r.status == 204  # acknowledged, counted as unreadable
        assert (await receiver.stats())["target_ms"] == 0  # one delivered so far
        for dlr_type, carrier_id in (("1", "77"), ("8", "78")):
            async with http.get(kannel.format(t=dlr_type, i=carrier_id)) as r:
                assert r.status == 200
        stats = await receiver.stats()
    assert stats["delivered"] == 2  # m1 (webhook) and 77 (Kannel, type 1)
    assert stats["duplicates"] == 1  # m1 again
    assert stats["other"] == 2  # m2 `sent`, 78 with Kannel's type 8 (accepted by the SMSC)
    assert stats["bad"] == 1
    assert stats["target_ms"] >= stats["first_ms"] > 0


def _stack(tid: int, name: str, *frames: tuple[str, str]) -> str:
    paths = {"std": "/usr/lib/python3.11/", "repo": f"{harness.REPO}/"}
    parts = [f"thread ({tid}): {name}"]
    for func, where in frames:
        kind, _, file = where.partition(":")
        parts.append(f"{func} ({paths[kind]}{file}:1)")
    return ";".join(parts)


def test_profile_splits_each_threads_cpu_over_its_busy_samples() -> None:
    loop = ("Runner.run", "std:asyncio/runners.py")
    lane = ("Outbox._run", "repo:gateway/integrations/outbox.py")
    send = ("Scheduler._send", "repo:gateway/scheduler.py")
    raw = "\n".join(
        [
            f"{_stack(100, 'MainThread', loop)} 6",  # idle in uvloop: dropped
            f"{_stack(100, 'MainThread', loop, lane)} 3",
            f"{_stack(100, 'MainThread', loop, send)} 1",
            f"{_stack(101, 'writer', ('_worker', 'std:concurrent/futures/thread.py'))} 9",
            f"{_stack(101, 'writer', ('receipts_many', 'repo:gateway/store/transitions.py'))} 2",
        ]
    )
    seconds = smpp_profile.attribute(raw, {100: 0.4, 101: 0.2, 102: 0.05})
    assert seconds == pytest.approx(
        {
            "outbox/webhook": 0.3,
            "dispatch": 0.1,
            "receipts": 0.2,
            "unattributed (no busy samples)": 0.05,
        }
    )
    table = smpp_profile.report(raw, {100: 0.4, 101: 0.2}, main_tid=100, messages=1000)
    assert "outbox/webhook" in table and "300.0" in table  # 0.3 s over 1,000 messages


def test_summary_reports_the_clinical_rate_against_the_protocol_cap_and_targets() -> None:
    settings = smpp.Settings(20000, 1, 64, 60.0)
    placement = smpp.Placement((), (), "test")
    medians = {("clinical", "smsgw"): 3000.0, ("clinical", "kannel"): 2500.0}
    summary = smpp.summarize(medians, {}, None, settings, placement)
    assert summary["ratio"] == 1.2
    assert summary["clinical_cap_per_s"] == 10000.0  # window 50 over a 5 ms answer
    assert summary["clinical_cap_for_n_per_s"] == 6666.7  # 2 s of submits, then 1 s
    assert summary["smsgw_clinical_of_cap"] == 0.3
    assert summary["met"] == {
        "ratio": True,
        "raw_ratio": None,
        "batch_ratio": None,
        "throttle_ratio": None,
    }
    assert {"ratio", "raw_ratio", "batch_ratio", "throttle_ratio"} <= summary.keys()


async def test_throttle_scenario_without_its_module_reports_null(tmp_path: Path) -> None:
    placement = smpp.Placement((), (), "test")
    found = await smpp.run_throttle(placement, tmp_path, "no_such_bench_module")
    assert found["throttle_ratio"] is None
    assert "no_such_bench_module" in found["missing"]


async def test_throttle_scenario_ratio_reaches_the_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench/smpp_throttle.py's interface (i16-throttle): `run_throttle(root, placement)`,
    a coroutine function returning `throttle_ratio` among its figures."""
    (tmp_path / "fake_throttle_bench.py").write_text(
        "async def run_throttle(root, placement=None, *, n=3000):\n"
        "    return {'throttle_ratio': 1.4, 'smsgw_of_carrier': 0.93, 'runs': [{'n': n}],"
        " 'root': str(root)}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    placement = smpp.Placement((), (), "test")
    found = await smpp.run_throttle(placement, tmp_path / "throttle", "fake_throttle_bench")
    assert found["root"] == str(tmp_path / "throttle")
    summary = smpp.summarize({}, {}, found, smpp.Settings(3000, 1, 64, 60.0), placement)
    assert summary["throttle_ratio"] == 1.4
    assert summary["met"]["throttle_ratio"] is True
    assert "runs" not in summary["throttle"]
