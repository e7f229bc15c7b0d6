"""Any planned notice wakes the sleeping notice runner, not only the reminder
planner's: a results notice (ORU), a medication notice or the debounce's "moved"
notice is planned by a part that has no bell of its own, and the runner then slept up
to a minute (MAX_SLEEP) before sending a notice due at once."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.app import Gateway
from gateway.clinical import notices
from gateway.clinical.notices import Notice, NoticeKind
from tests.clinical_rows import DictRenderer
from tests.conftest import make_config
from tests.test_notice_runner import CONSENT, SleepLog


async def test_a_notice_planned_by_any_part_wakes_the_sleeping_runner(tmp_path: Path) -> None:
    clock = SleepLog()
    gw = await Gateway.open(make_config(tmp_path, consent=CONSENT), clock)
    gw.renderer = DictRenderer()
    try:
        await gw.start(dispatch=True)
        await clock.until_asleep_for(60.0)  # MAX_SLEEP: nothing planned
        clock.slept.clear()
        assert gw.store.cipher is not None
        cipher = gw.store.cipher
        due = clock.time() + 5.0
        notice = Notice(NoticeKind.RESULT_AVAILABLE, b"c" * 32, "result_available", "results", due)

        def plan(conn: sqlite3.Connection) -> str:
            return notices.schedule(conn, cipher, notice, clock.time())

        await gw.store.writer.run(plan)
        await clock.until_asleep_for(5.0)  # woken: sleeps until the new notice is due
    finally:
        await gw.stop()
