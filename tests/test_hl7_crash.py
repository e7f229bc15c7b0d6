"""A crash between the commit and the ACK, with a real process: a pipelined burst of
SIU^S12s to a real `smsgw run`, SIGKILL while answers are coming back, a restart, and
the sender resending every message it holds no ACK for (as an interface engine does).

Messages the dead process had committed but not answered get their stored ACK back
(counted as duplicates) and book nothing twice; the others are applied now. In the end
every message is stored and applied exactly once."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.hl7 import framing
from tests.conftest import smsgw_process
from tests.hl7_rig import msa
from tests.ports import free_port
from tests.test_cli import Daemon

pytestmark = pytest.mark.timeout(180)

BURST = 1000
KILL_AFTER = 1  # ACKs read before the kill: the rest of the burst is in flight
ROUNDS = 5


def siu(i: int) -> bytes:
    start = f"202712{1 + i % 28:02d}0930"
    return (
        "\r".join(
            [
                f"MSH|^~\\&|EHR|CLINIC|SMSGW|HOSP|20261201090000||SIU^S12^SIU_S12|C{i:05d}|P|2.5.1",
                f"SCH|P{i}^EHR|F{i}^EHR|||||||||||||||||||||||Booked",
                f"TQ1|||||||{start}|{start[:-4]}1000",
                f"PID|1||MRN{i}^^^HOSP^MR||Doe^Jane||19800101|F|||||^PRN^CP^^^^^^^^^+1202555{i:04d}",
                "RGS|1",
                f"AIS|1||SVC^Service|{start}",
            ]
        )
        + "\r"
    ).encode()


CONFIG = """
data_dir = "{data}"

[http]
listen = "127.0.0.1:{http}"
shutdown_grace = 0.5

[[routes]]
name = "main"
type = "loopback"

[[hl7.interfaces]]
name = "ehr"
listen = "127.0.0.1:{hl7}"
time_zone = "UTC"
"""


async def start(conf: Path) -> Daemon:
    proc = await smsgw_process("run", "--config", str(conf))
    daemon = Daemon(proc, "")
    await daemon.wait_log(lambda e: e.get("event") == "hl7_listening", 30)
    return daemon


async def burst(port: int, messages: dict[str, bytes], kill: Daemon | None) -> dict[str, str]:
    """Send all `messages` pipelined on one connection; their ACK codes by control id.
    With `kill`: SIGKILL that process after KILL_AFTER ACKs, keep what arrived."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"".join(framing.encode(m) for m in messages.values()))
    decoder, acks = framing.MllpDecoder(), {}
    try:
        while len(acks) < len(messages):
            chunk = await asyncio.wait_for(reader.read(65536), 30)
            if not chunk:
                break
            decoder.receive_data(chunk)
            for event in decoder.events():
                if isinstance(event, framing.Frame):
                    code, control_id = msa(event.payload)
                    acks[control_id] = code
            if kill is not None and len(acks) >= KILL_AFTER and kill.proc.returncode is None:
                kill.proc.send_signal(signal.SIGKILL)
    except ConnectionError:
        pass
    finally:
        writer.close()
    return acks


async def test_kill_9_between_commit_and_ack_then_resend_applies_each_message_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    assert await asyncio.to_thread(main, ["init", "--data-dir", str(data)]) == 0
    capsys.readouterr()
    conf = data / "smsgw.toml"
    hl7_port = free_port()
    conf.write_text(CONFIG.format(data=data, http=free_port(), hl7=hl7_port))
    sent: dict[str, bytes] = {}
    unanswered: set[str] = set()
    started: list[Daemon] = []
    try:
        daemon = await start(conf)
        started.append(daemon)
        # A kill can land where every committed message was answered (under load the
        # first commit may hold one message): then another round, up to ROUNDS.
        for attempt in range(ROUNDS):
            messages = {f"C{i:05d}": siu(i) for i in range(attempt * BURST, (attempt + 1) * BURST)}
            sent.update(messages)
            acked = await burst(hl7_port, messages, kill=daemon)
            assert await asyncio.wait_for(daemon.proc.wait(), 30) == -signal.SIGKILL
            assert KILL_AFTER <= len(acked) < BURST and set(acked.values()) == {"AA"}

            with sqlite3.connect(data / "smsgw.db") as db:  # what the dead process committed
                rows = db.execute("SELECT control_id FROM hl7_messages").fetchall()
            unanswered |= {r[0] for r in rows} & set(messages) - set(acked)

            daemon = await start(conf)
            started.append(daemon)
            resend = {cid: m for cid, m in messages.items() if cid not in acked}
            again = await burst(hl7_port, resend, kill=None)
            assert again == dict.fromkeys(resend, "AA")
            if unanswered:
                break
        assert unanswered, "no message was committed and left unanswered: the crash missed"
        daemon.proc.terminate()
        assert await asyncio.wait_for(daemon.proc.wait(), 30) == 0
        await daemon.finished()
    finally:
        for d in started:
            if d.proc.returncode is None:
                d.proc.kill()
                await d.proc.wait()

    with sqlite3.connect(data / "smsgw.db") as db:
        assert db.execute("SELECT COUNT(*) FROM hl7_messages").fetchone()[0] == len(sent)
        assert db.execute("SELECT COUNT(*) FROM appointments").fetchone()[0] == len(sent)
        assert db.execute("SELECT COUNT(*) FROM patients").fetchone()[0] == len(sent)
        dup = db.execute("SELECT control_id FROM hl7_messages WHERE duplicates > 0").fetchall()
        assert {r[0] for r in dup} == unanswered  # answered from the store, not re-applied
        booked = db.execute("SELECT COUNT(*) FROM appointment_events WHERE event = 'booked'")
        assert booked.fetchone()[0] == len(sent)
