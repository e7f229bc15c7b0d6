"""Issue 13 as the checker walks it, against a real `smsgw run`: python-hl7's client as
the EHR sends the shared samples (re-dated and given a textable number with the send
tool's own edits), the gateway's demo clock is moved forward, the demo handset replies,
and a python-hl7 MLLP server stands for the EHR that takes the write-back.

The texts are read where they arrive: the test runs the carrier (an SMSC simulator,
over real SMPP) the gateway's first route points at. Waits re-read the API after each
line the daemon logs, or after the carrier or the EHR got something, with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import hl7
import hl7.mllp
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from gateway.cli import main
from gateway.hl7 import demo_edit
from tests.conftest import smsgw_process
from tests.hl7_peers import Ehr
from tests.hl7_samples import text
from tests.ports import free_port

pytestmark = pytest.mark.timeout(180)

WAIT = 30.0
HANDSET = "+12025550147"
TOKEN_RE = re.compile(r"smsgw_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")
DEBOUNCE = 300


class Site:
    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        http: aiohttp.ClientSession,
        url: str,
        hl7_port: int,
        carrier: SmscSimulator,
        ehr: Ehr,
        changed: asyncio.Event,
    ) -> None:
        self.proc, self.http, self.url, self.hl7_port = proc, http, url, hl7_port
        self.carrier, self.ehr, self.changed = carrier, ehr, changed

    async def get(self, path: str) -> Any:
        async with self.http.get(self.url + path) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def post(self, path: str, body: dict[str, Any], status: int = 200) -> Any:
        async with self.http.post(self.url + path, json=body) as resp:
            assert resp.status == status, await resp.text()
            return await resp.json()

    async def until(self, check: Callable[[], Awaitable[Any]], limit: float = WAIT) -> Any:
        async with asyncio.timeout(limit):
            while True:
                self.changed.clear()
                if found := await check():
                    return found
                await self.changed.wait()

    async def send(self, *messages: str) -> list[hl7.Message]:
        """python-hl7's client as the EHR: each message, then its ACK (hl7apy-valid)."""
        reader, writer = await hl7.mllp.open_hl7_connection(
            "127.0.0.1", self.hl7_port, encoding="utf-8"
        )
        acks = []
        try:
            for m in messages:
                writer.writemessage(hl7.parse(m))
                await writer.drain()
                ack = await asyncio.wait_for(reader.readmessage(), WAIT)
                assert str(ack.segment("MSA")[2]) == demo_edit.control_id(m)
                parse_message(
                    str(ack), validation_level=VALIDATION_LEVEL.STRICT, force_validation=True
                )
                acks.append(ack)
        finally:
            writer.close()
            await writer.wait_closed()
        return acks

    async def now(self) -> datetime:
        moved = await self.post("/api/v1/demo/clock/advance", {"seconds": 0.001})
        return datetime.fromisoformat(moved["now"])

    async def advance_to(self, when: datetime) -> None:
        now = await self.now()
        await self.post("/api/v1/demo/clock/advance", {"seconds": (when - now).total_seconds()})

    def texts_to_handset(self) -> list[str]:
        """The carrier's view: each message to the handset whose parts have all
        arrived, its parts joined (a part alone is not yet the text)."""
        parts: dict[object, list[tuple[int, str]]] = {}
        totals: dict[object, int] = {}
        for i, sub in enumerate(self.carrier.submitted):
            if sub.destination.lstrip("+") != HANDSET.lstrip("+"):
                continue
            key = ("c", sub.concat.reference) if sub.concat else ("s", i)
            totals[key] = sub.concat.total if sub.concat else 1
            parts.setdefault(key, []).append((sub.concat.seq if sub.concat else 0, sub.text))
        return ["".join(t for _, t in sorted(p)) for k, p in parts.items() if len(p) == totals[k]]


def _config(data: Path, http_port: int, hl7_port: int, smsc: SmscSimulator, ehr_port: int) -> str:
    return f"""
data_dir = "{data}"

[http]
listen = "127.0.0.1:{http_port}"
shutdown_grace = 1.0

[log]
level = "debug"

[demo]
peers = true

# the walk runs at any hour and sends a moved notice soon after a reminder
[consent.purposes.appointment]
window = ""
caps = []

[consent.purposes.results]
window = ""
caps = []

[[routes]]
name = "carrier"
type = "smpp"
host = "127.0.0.1"
port = {smsc.port}
system_id = "{smsc.config.system_id}"
password = "{smsc.config.password}"

[[hl7.interfaces]]
name = "ehr"
direction = "in"
listen = "127.0.0.1:{hl7_port}"
charset = "UNICODE UTF-8"
processing_ids = ["P", "T"]
accept_untyped_phone = true
time_zone = "America/New_York"
cancel_debounce = {DEBOUNCE}.0
writeback = "ehr-out"

[[hl7.interfaces]]
name = "ehr-out"
direction = "out"
host = "127.0.0.1"
port = {ehr_port}
ack_timeout = 10.0
backoff_initial = 0.2
"""


def _tokens(data: Path, conf_text: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["init", "--data-dir", str(data)]) == 0
    capsys.readouterr()
    conf = data / "smsgw.toml"
    conf.write_text(conf_text)
    args = ["token", "create", "--scope", "admin,read,phi,send", "--name", "walk"]
    assert main([*args, "--config", str(conf)]) == 0
    (token,) = TOKEN_RE.findall(capsys.readouterr().out)
    return str(token)


@pytest.fixture
async def site(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> AsyncIterator[Site]:
    changed = asyncio.Event()
    carrier = SmscSimulator(SimulatorConfig(system_id="smsgw", password="walk", receipt_delay=0.2))
    await carrier.start()
    ehr = Ehr(changed=changed)
    ehr_port = await ehr.start()
    data = tmp_path / "data"
    data.mkdir()
    http_port, hl7_port = free_port(), free_port()
    conf_text = _config(data, http_port, hl7_port, carrier, ehr_port)
    token = await asyncio.to_thread(_tokens, data, conf_text, capsys)
    proc = await smsgw_process("run", "--config", str(data / "smsgw.toml"))
    lines: list[str] = []
    listening = asyncio.Event()

    async def follow_log() -> None:
        assert proc.stderr is not None
        while raw := await proc.stderr.readline():
            lines.append(raw.decode())
            if '"listening"' in lines[-1]:
                listening.set()
            changed.set()

    drain = asyncio.gather(proc.stdout.read() if proc.stdout else asyncio.sleep(0), follow_log())
    try:
        async with asyncio.timeout(WAIT):
            await listening.wait()
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            yield Site(proc, http, f"http://127.0.0.1:{http_port}", hl7_port, carrier, ehr, changed)
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 0, "".join(lines[-30:])
        await drain
        await ehr.aclose()
        await carrier.aclose()
        log = "".join(lines)
        assert HANDSET not in log and HANDSET[2:] not in log, "a number in the log"


def demo_sample(name: str, days: int, now: datetime, language: str | None = "es") -> str:
    """A shared sample as `smsgw hl7 send --phone --shift-days N --control-id-suffix`
    makes it: the handset's number, the start N days after `now`'s date, sent now."""
    m = text(name)
    if days is not None and demo_edit.start_day(m) is not None:
        m = demo_edit.stamp_sent(demo_edit.shift_days(m, days, now.date()), datetime.now(UTC))
    m = demo_edit.set_phone(m, HANDSET)
    if language:
        m = demo_edit.set_language(m, language)
    return demo_edit.suffix_control_id(m, f"-{days}-{len(name)}")


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_the_checkers_walk_book_remind_confirm_move_and_results(site: Site) -> None:
    # a. an S12 (Spanish-speaking patient, two days ahead) books and plans reminders
    now = await site.now()
    await site.send(demo_sample("SIU-S12-01.hl7", 2, now))
    (appt,) = (await site.get("/api/v1/appointments"))["items"]
    assert appt["status"] == "booked" and appt["language"] == "es"
    start = _ts(appt["start"])
    assert start.date() == now.date() + timedelta(days=2)
    view = await site.get(f"/api/v1/appointments/{appt['id']}")
    pending = [n for n in view["notices"] if n["kind"] == "reminder" and n["state"] == "pending"]
    assert len(pending) >= 1 and all(n["language"] == "es" for n in pending)
    first_due = min(_ts(n["due_at"]) for n in pending)
    assert now < first_due < start

    # b. the clock moved past the first due time: the reminder goes, in Spanish
    await site.advance_to(first_due + timedelta(seconds=30))

    async def reminded() -> list[str]:
        return [t for t in site.texts_to_handset() if "cita" in t]

    (reminder,) = await site.until(reminded)
    assert "Responda C" in reminder and appt["short_code"] in reminder
    view = await site.get(f"/api/v1/appointments/{appt['id']}")
    sent = [n for n in view["notices"] if n["kind"] == "reminder" and n["message_id"]]
    assert len(sent) == 1 and sent[0]["state"] == "queued"

    # c. C from the demo handset confirms; the SIU^S14 reaches the EHR's MLLP server
    await site.post("/api/v1/demo/inbound", {"sender": HANDSET, "body": "C"}, status=202)

    async def written_back() -> list[str]:
        return [m for m in site.ehr.received if "SIU^S14" in m]

    (s14,) = await site.until(written_back)
    parsed = parse_message(
        s14.replace("\n", "\r"), validation_level=VALIDATION_LEVEL.STRICT, find_groups=True
    )
    parsed.validate()
    sch = hl7.parse(s14).segment("SCH")
    assert str(sch[2][0][0]) == "36996"  # the filler's appointment id, from the S12's SCH-2
    assert "CONFIRMED" in str(sch[6])
    confirmed = await site.get(f"/api/v1/appointments/{appt['id']}")
    assert confirmed["confirmed_at"] is not None

    # d. S15 then S12 a day later, within the debounce: one "moved", no "cancelled"
    await site.send(demo_sample("SIU-S15-01.hl7", 2, now), demo_sample("SIU-S12-01.hl7", 3, now))
    await site.advance_to((await site.now()) + timedelta(seconds=DEBOUNCE + 30))

    async def moved_sent() -> list[dict[str, Any]] | None:
        view = await site.get(f"/api/v1/appointments/{appt['id']}")
        kinds = [n for n in view["notices"] if n["kind"].startswith("appointment_")]
        done = [n for n in kinds if n["state"] != "pending"]
        texts = [t for t in site.texts_to_handset() if "paso al" in t]
        return kinds if len(done) == len(kinds) and texts else None

    notices = await site.until(moved_sent)
    queued = [n for n in notices if n["state"] == "queued"]
    assert [n["kind"] for n in queued] == ["appointment_moved"]
    assert all(n["kind"] != "appointment_cancelled" or n["state"] == "superseded" for n in notices)
    assert len([t for t in site.texts_to_handset() if "paso al" in t]) == 1
    assert not [t for t in site.texts_to_handset() if "cancel" in t.lower()]
    moved = await site.get(f"/api/v1/appointments/{appt['id']}")
    assert moved["status"] == "booked"
    assert _ts(moved["start"]).date() == now.date() + timedelta(days=3)

    # e. an ORU^R01 with OBR-25 F: one results notice, no value from the message in it
    oru = demo_sample("LAB-ORU-1.hl7", 0, now, language=None)
    values = {str(seg[5]) for seg in hl7.parse(oru).segments("OBX") if str(seg[5]).strip()} | {
        str(seg[3][0][1]) for seg in hl7.parse(oru).segments("OBX")
    }
    await site.send(oru)

    async def results() -> list[str]:
        return [t for t in site.texts_to_handset() if "resultados" in t]

    (notice,) = await site.until(results)  # at once: no clock move, no minute-long sleep
    for value in values:
        assert value not in notice
    assert "%" not in notice and "Hemogram" not in notice
    messages = await site.get("/api/v1/messages?limit=50")
    categories = [m["category"] for m in messages["messages"]]
    assert categories.count("result_available") == 1
    assert json.dumps(messages).count(HANDSET) == 0  # masked without include=phi
