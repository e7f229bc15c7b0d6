"""`smsgw hl7 send` as a user runs it: against the listener of a test store, and
against `smsgw run` on the embedded default (its demo HL7 feed)."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.hl7.send_cmd import split_messages
from gateway.hl7.settings import Hl7Interface
from gateway.store.store import Store
from tests import hl7_rig
from tests.conftest import SMSGW, smsgw_process
from tests.hl7_samples import SAMPLES
from tests.ports import free_port


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(tmp_path / "gw.db", bytes(32))
    await s.open()
    yield s
    await s.close()


def test_a_file_with_lf_lines_and_two_messages_is_split_at_msh() -> None:
    raw = ("\ufeff" + hl7_rig.message("Z01", "A") + hl7_rig.message("Z02", "B")).replace("\r", "\n")
    assert split_messages(raw.encode()) == [
        hl7_rig.message("Z01", "A"),
        hl7_rig.message("Z02", "B"),
    ]


def rows(out: bytes) -> list[list[str]]:
    """The table's rows, split at the column gaps (two spaces or more)."""
    return [re.split(r"  +", line) for line in out.decode().splitlines()]


async def test_send_prints_each_ack_and_fails_unless_all_accepted(
    store: Store, tmp_path: Path
) -> None:
    rig = await hl7_rig.start(store, Hl7Interface(name="ehr"))
    good = tmp_path / "good.hl7"
    good.write_text((hl7_rig.message("Z01", "A") + hl7_rig.message("Z02", "B")).replace("\r", "\n"))
    bad = tmp_path / "bad.hl7"
    bad.write_text(hl7_rig.message("Z03", "C"))
    proc = await smsgw_process("hl7", "send", "--port", str(rig.port), str(good))
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    assert rows(out) == [
        ["FILE", "CONTROL-ID", "ACK", "ERROR"],
        [str(good), "A", "AA"],
        [str(good), "B", "AA"],
    ]
    proc = await smsgw_process("hl7", "send", "--port", str(rig.port), str(good), str(bad))
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    lines = rows(out)
    assert lines[1:3] == [[str(good), "A", "AA"], [str(good), "B", "AA"]]  # the stored ACKs
    assert lines[3] == [str(bad), "C", "AE", "no identifier of the configured authority"]
    await rig.server.aclose()


async def test_the_embedded_default_takes_the_sample_files_on_its_demo_feed(
    tmp_path: Path,
) -> None:
    http_port, hl7_port = free_port(), free_port()
    proc = await asyncio.create_subprocess_exec(
        *SMSGW,
        "run",
        "--listen",
        f"127.0.0.1:{http_port}",
        "--hl7-listen",
        f"127.0.0.1:{hl7_port}",
        "--links-listen",  # the demo short links, off their fixed 8081
        f"127.0.0.1:{free_port()}",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k != "SMSGW_CONFIG"},
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        async with asyncio.timeout(30):
            while b"hl7_listening" not in (line := await proc.stderr.readline()):
                assert line, "smsgw run exited before its HL7 feed listened"
        sample = SAMPLES / "SIU-S12-01.hl7"
        send = await smsgw_process("hl7", "send", "--port", str(hl7_port), str(sample))
        out, _ = await asyncio.wait_for(send.communicate(), 30)
        # the SIU mapper is the appointments part's: accepted with it, refused without
        assert re.fullmatch(
            rf"FILE +CONTROL-ID +ACK +ERROR\n{sample} +MSG00012 +A[AR].*\n", out.decode()
        )
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
