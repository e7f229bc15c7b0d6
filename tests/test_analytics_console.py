"""`smsgw analytics` (the `analytics.report` op): the same figures as the API, in the
service or offline against the data directory; bad options refused by name; `[analytics]`
keys checked by name."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from drivers.clock import FakeClock
from gateway.app import Gateway
from gateway.config import ConfigError, from_mapping
from gateway.ops.registry import run_in, run_local
from tests import analytics_rows as rows
from tests.analytics_rows import Msg
from tests.conftest import make_config


async def _report(gw: Gateway, args: dict[str, Any], clock: FakeClock) -> tuple[int, list[str]]:
    lines: list[str] = []
    errors: list[str] = []
    status = await run_in(
        gw.config, gw.store, gw.store.master_key, "analytics.report", args,
        actor="console", out=lines.append, clock=clock, err=errors.append,
    )  # fmt: skip
    return status, lines + errors


async def test_the_console_shows_the_figures_in_the_service_and_offline(
    tmp_path: Path, clock: FakeClock
) -> None:
    config = make_config(tmp_path)
    gw = await Gateway.open(config, clock)
    await gw.start(dispatch=False)
    now = clock.time()

    def write(conn: Any) -> None:
        for n in range(3):
            rows.add_message(conn, Msg(f"m{n}", n, now - 100, campaign="cmp_flu"))
            rows.add_event(conn, f"m{n}", now - 90, "sent", "main")

    await gw.store.writer.run(write)
    status, lines = await _report(gw, {"by": "campaign", "refresh": True}, clock)
    assert status == 0, lines
    assert lines[0] == "counted 3 new rows"
    assert lines[-1].split()[:2] == ["cmp_flu", "3"]
    status, lines = await _report(gw, {"csv": True}, clock)
    (total,) = list(csv.DictReader(io.StringIO("\n".join(lines))))
    assert total["sent"] == "3" and total["dimension"] == "total"
    assert "analytics_exported" in [e.action for e in await gw.audit.entries()]
    status, lines = await _report(gw, {"from": "2027-13-01"}, clock)
    assert status == 2 and lines == ["analytics: --from: a date, YYYY-MM-DD"]
    status, lines = await _report(gw, {"by": "patient"}, clock)
    assert status == 2 and lines[0].startswith("analytics: --by: one of total, campaign")
    await gw.stop()
    # Offline, with no daemon (and the real clock): the sums stored above.
    day = datetime.fromtimestamp(now, UTC).date().isoformat()
    found: list[str] = []
    args = {"from": day, "to": day}
    assert (
        await asyncio.to_thread(run_local, config, "analytics.report", args, out=found.append) == 0
    )
    assert found[-1].split()[:2] == ["total", "3"]


@pytest.mark.parametrize(
    ("raw", "key"),
    [({"time_zone": "Mars/Olympus_Mons"}, "analytics.time_zone"),
     ({"interval": 0}, "analytics.interval"), ({"colour": "red"}, "analytics.colour")],
)  # fmt: skip
def test_analytics_keys_are_checked_by_name(raw: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(key)):
        from_mapping({"analytics": raw})
