"""HL7 over MLLP: SIU messages over one pipelined connection, acknowledged after an
fsync'd commit (`synchronous = FULL`), beside the raw ceiling measured in the same run.

    .venv/bin/python bench/hl7.py            # 5,000 messages per target (make bench-hl7)
    .venv/bin/python bench/hl7.py --quick    # 1,000

Each target is a server in its own process (on CPU 0 when `taskset` exists; the
sender on CPU 1), on fresh data in a temporary directory, with the real listener
(`gateway.hl7.listener`) and the real inbound pipeline (`Hl7Inbound`):
* `gateway`: all of it: charset, header check, dedupe, the parse of what the mapper
  reads, the real SIU mapper, the appointments' state machine and the reminder
  planner with the demo's rules (each booking plans its reminders), the encrypted
  message row and its stored ACK, in one group-committed transaction;
* `ceiling`: the same listener, framing, decode, header check, dedupe, encrypted row
  and stored ACK, but no parse, map or apply (the issue's "raw ceiling of the same
  framing and commit without mapping"): a subclass whose `map` maps to nothing, built
  here only, so no configuration can turn mapping off;
* `bare` (reference): the framer and the group-committed writer alone, one row of
  raw bytes and a fixed ACK per frame.
The sender keeps `--window` messages outstanding and times each from its write to its
ACK. One JSON line per target (with what the server stored: messages, mapped,
appointments, pending notices), then the ratio of `gateway` to `ceiling`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# This file is named like python-hl7's package: its own folder must not shadow `hl7`.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

from gateway.hl7 import framing  # noqa: E402  # after the path fix for a plain checkout

SAMPLES = ROOT / "tests" / "data" / "hl7v2-samples"
# A small synthetic v2.3 booking as Epic Cadence ships them (research §A6.1): start in
# SCH-11, one patient, one resource, location and provider (no real person).
SMALL_SIU = (
    "MSH|^~\\&|EPIC|NORTH|SMSGW|NORTH|20261201090000||SIU^S12|{cid}|P|2.3\r"
    "SCH|{key}|{key}|||||ROUTINE^Routine||30|MIN|^^30^{start}|||||||||||||||Booked\r"
    "PID|1||MRN{mrn}^^^HOSP^MR||Doe^Jane||19800101|F|||1 Main St^^Town^ST^00000||"
    "^PRN^CP^^1^202^555{mrn:04d}||ENG\r"
    "RGS|1\r"
    "AIS|1||CARDIO^Cardiology|{start}|||30|MIN\r"
    "AIL|1||NORTH^Clinic North\r"
    "AIP|1||1234^Smith^Ann|ATTENDING\r"
)


def siu(i: int, sample: str | None) -> bytes:
    """Message `i`: a new booking (its own control id and appointment key); the small
    SIU's patients recur (500 of them, each with a number of its own), as a clinic's
    do."""
    if sample is None:
        start = f"{time.gmtime().tm_year + 1}1215093000"  # always ahead
        return SMALL_SIU.format(cid=f"B{i:08d}", key=i, mrn=i % 500, start=start).encode()
    text = (SAMPLES / sample).read_bytes().decode("utf-8").lstrip("\ufeff")
    text = text.replace("\r\n", "\r").replace("\n", "\r").rstrip("\r") + "\r"
    segs = text.split("\r")
    for n, seg in enumerate(segs):
        f = seg.split("|")
        if f[0] == "MSH":
            f[9] = f"B{i:08d}"
        elif f[0] == "SCH":
            f[1:3] = [f"P{i}", f"F{i}"]
        elif f[0] == "PID" and len(f) > 13:
            f[3] = f"MRN{i % 500}^^^HOSP^MR"  # 500 patients, as for the small SIU
            f[13] = f"^PRN^CP^^1^202^555{i % 500:04d}"  # the samples' are not valid ones
        segs[n] = "|".join(f)
    # The sample's times are in the past: move them to next year, so the booking is
    # still ahead and the planner plans it as a live one (birth dates stay); with a
    # textable number, its reminders are planned too.
    next_year = str(time.gmtime().tm_year + 1)
    text = re.sub(r"(?<=[|^&])20\d\d(?=\d{4})", next_year, "\r".join(segs))
    return text.encode("utf-8")


# -- servers ---------------------------------------------------------------------------


def interface(sample: str | None) -> object:
    """The bench's interface: the small SIU carries its start in SCH-11, the v2.5+
    samples in TQ1 (the default)."""
    from gateway.hl7.settings import Hl7Interface

    return Hl7Interface(
        name="bench",
        processing_ids=("P", "T"),
        accept_untyped_phone=True,
        timing_source="sch11" if sample is None else "tq1",
    )


async def open_inbound(data: Path, sample: str | None, *, mapped: bool) -> object:
    """The gateway's own inbound pipeline on a fresh store. `mapped`: with the real
    mappers, the appointments' state machine and the reminder planner with the demo's
    rules (as `make run` seeds them); without: everything but parse, map and apply."""
    from drivers.clock import SystemClock
    from gateway import logs
    from gateway.clinical import mappers
    from gateway.clinical.commands import ClinicalHooks
    from gateway.hl7.inbound import Hl7Inbound, Mapped
    from gateway.reminders import rules
    from gateway.reminders.demo import DEMO_RULES
    from gateway.reminders.planner import Planner
    from gateway.store.store import Store

    logs.configure("json", "info")  # as `smsgw run` does with the default [log]
    mappers.load()
    store = Store(data / "gw.db", os.urandom(32), synchronous="FULL")
    await store.open()
    hooks = ClinicalHooks()
    if not mapped:

        class Unmapped(Hl7Inbound):
            def map(self, text: str, h: object) -> Mapped:
                return []

        return Unmapped(interface(sample), store, SystemClock(), hooks)  # type: ignore[arg-type]
    Planner().install(hooks)
    now = time.time()

    def seed(conn: sqlite3.Connection) -> None:
        for spec in DEMO_RULES:
            rules.save(conn, None, spec, "system:demo", now)

    await store.writer.run(seed)
    return Hl7Inbound(interface(sample), store, SystemClock(), hooks)  # type: ignore[arg-type]


async def serve_pipeline(data: Path, port_file: Path, sample: str | None, mapped: bool) -> None:
    from gateway.hl7 import listener

    inbound = await open_inbound(data, sample, mapped=mapped)
    server = await listener.serve(inbound, "127.0.0.1", 0)  # type: ignore[arg-type]
    await _announce(port_file, server.port)
    await server.aclose()

    def count(conn: sqlite3.Connection) -> dict[str, int]:
        one = lambda q: int(conn.execute(q).fetchone()[0])  # noqa: E731
        return {
            "stored": one("SELECT count(*) FROM hl7_messages"),
            "mapped": one("SELECT count(*) FROM hl7_messages WHERE state = 'mapped'"),
            "appointments": one("SELECT count(*) FROM appointments"),
            "notices": one("SELECT count(*) FROM clinical_notices WHERE state = 'pending'"),
        }

    counts = await inbound.store.writer.run(count)  # type: ignore[attr-defined]
    (data / "counts.json").write_text(json.dumps(counts))


async def serve_bare(data: Path, port_file: Path) -> None:
    """The old reference: the framer and the group-committed writer alone."""
    from gateway.store.writer import GroupCommitWriter

    writer = GroupCommitWriter(data / "bare.db", "FULL")
    await writer.open()
    await writer.run(
        lambda c: c.execute(
            "CREATE TABLE IF NOT EXISTS m (id INTEGER PRIMARY KEY, raw BLOB, ack TEXT)"
        )
    )
    ack_text = "MSH|^~\\&|A|B|C|D|20260101000000||ACK^S12^ACK|1|P|2.3\rMSA|AA|1\r"
    ack = framing.encode(ack_text.encode())

    def insert(payload: bytes) -> asyncio.Future[None]:
        return writer.run(
            lambda c: c.execute("INSERT INTO m (raw, ack) VALUES (?, ?)", (payload, ack_text))
        )

    class Bare(asyncio.Protocol):
        """Like the listener: each frame's commit starts at once (group commit), the
        answers go out in arrival order."""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.decoder = framing.MllpDecoder()
            self.queue: asyncio.Queue[asyncio.Future[None]] = asyncio.Queue()
            self.task = asyncio.get_running_loop().create_task(self.answer())

        def data_received(self, data: bytes) -> None:
            self.decoder.receive_data(data)
            for e in self.decoder.events():
                if isinstance(e, framing.Frame):
                    self.queue.put_nowait(insert(e.payload))

        async def answer(self) -> None:
            while True:
                await (await self.queue.get())
                self.transport.write(ack)  # type: ignore[attr-defined]

        def connection_lost(self, exc: Exception | None) -> None:
            self.task.cancel()

    server = await asyncio.get_running_loop().create_server(Bare, "127.0.0.1", 0)
    await _announce(port_file, int(server.sockets[0].getsockname()[1]))


async def _announce(port_file: Path, port: int) -> None:
    port_file.write_text(str(port))  # noqa: ASYNC240  # once, before anything is served
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


TARGETS = ("ceiling", "gateway", "bare")


# -- sender ----------------------------------------------------------------------------


async def drive(
    port: int, count: int, window: int, sample: str | None, first: int = 0
) -> dict[str, float]:
    """Messages `first` .. `first + count - 1` over one connection; `latencies_s` the
    sorted ACK latencies (for pooling several connections' figures)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    frames = [framing.encode(siu(first + i, sample)) for i in range(count)]
    decoder = framing.MllpDecoder()
    sent_at: list[float] = []
    latencies: list[float] = []
    acked = 0
    start = time.perf_counter()
    next_i = 0
    while acked < count:
        while next_i < count and next_i - acked < window:
            sent_at.append(time.perf_counter())
            writer.write(frames[next_i])
            next_i += 1
        data = await reader.read(65536)
        if not data:
            raise SystemExit("the server closed the connection")
        decoder.receive_data(data)
        now = time.perf_counter()
        for e in decoder.events():
            if isinstance(e, framing.Frame):
                if b"MSA|AA" not in e.payload and b"MSA|CA" not in e.payload:
                    raise SystemExit(f"not accepted: {e.payload[:200]!r}")
                latencies.append(now - sent_at[acked])
                acked += 1
    elapsed = time.perf_counter() - start
    writer.close()
    latencies.sort()
    return {
        "messages": count,
        "seconds": round(elapsed, 3),
        "acks_per_s": round(count / elapsed, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
        "latencies_s": latencies,  # type: ignore[dict-item]
    }


def run_target(target: str, count: int, window: int, sample: str | None) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-hl7-{target}-"))
    port_file = tmp / "port"
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []
    extra = ["--sample", sample] if sample else []
    proc = subprocess.Popen(  # our own interpreter and script
        [*pin, sys.executable, __file__, "--serve", target, "--data", str(tmp), *extra],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{target}: the server did not start")
            time.sleep(0.05)
        result = asyncio.run(drive(int(port_file.read_text()), count, window, sample))
        del result["latencies_s"]
    finally:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        proc.kill()
        counts = tmp / "counts.json"
        stored = json.loads(counts.read_text()) if counts.exists() else {}
        shutil.rmtree(tmp, ignore_errors=True)
    return {  # type: ignore[dict-item]
        "target": target,
        "sample": sample or "small v2.3 SIU",
        "window": window,
        **result,
        **stored,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--count", type=int)
    p.add_argument("--window", type=int, default=16, help="messages outstanding (default 16)")
    p.add_argument("--sample", help="a file in tests/data/hl7v2-samples (default: a small SIU)")
    p.add_argument("--serve", choices=TARGETS, help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        with contextlib.suppress(ImportError):
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        data = Path(args.data)
        if args.serve == "bare":
            asyncio.run(serve_bare(data, data / "port"))
        else:
            asyncio.run(serve_pipeline(data, data / "port", args.sample, args.serve == "gateway"))
        return 0
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    count = args.count or (1000 if args.quick else 5000)
    results = [run_target(t, count, args.window, args.sample) for t in TARGETS]
    for r in results:
        print(json.dumps(r), flush=True)
    ceiling, gateway, _ = results
    print(
        json.dumps(
            {
                "ratio": round(gateway["acks_per_s"] / ceiling["acks_per_s"], 2),
                "target_ratio": 0.7,
                "p99_ms": gateway["p99_ms"],
                "target_p99_ms": 50,
            }
        )
    )
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
