"""The floors under the SMPP issue's speed targets: what one core here needs, at least,
per message for the work smsgw cannot skip, against the budget each target leaves.

    make bench-floors     # Kannel's rates from the last bench/smpp.py run, if any
    .venv/bin/python bench/floors.py --kannel-raw 7911 --kannel-clinical 3384

Measured on CPU 0 (as `bench/smpp.py` places the servers), each part on its own:

1. HTTP: one POST through aiohttp on uvloop that reads a JSON body and answers 202, with
   no validation, no store and no scheduler; `wrk -c64` keep-alive from CPU 1 for 5 s.
   CPU per request of the server process.
2. SQLite: the statements of one message's life on smsgw's own schema, commits of 50,
   `synchronous = FULL`: the store's own UPDATE and INSERT statements run bare (no Python
   around them but the calls): insert;
   claim (`sending` + its event); sent (+ event + carrier id); receipt (the part, the
   message, the event). CPU per message of the thread.
3. SMPP codec: encode a submit_sm, decode its submit_sm_resp (raw); plus decode a
   deliver_sm receipt and encode its resp (clinical). CPU per message.

Then: raw single posts need 1 + 2 (insert, claim, sent) + 3 per message, within
1e6 / (0.7 x Kannel raw) us; batch needs 2 + 3 (HTTP shared by 100 taken as free),
within 1e6 / (1.5 x Kannel raw) us. The clinical target meets a limit no code can lift:
window 50 and submits answered after 5 ms allow 10,000 submits/s, and the rate counts
until the last receipt, 1 s after the last submit.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import harness

from drivers.smpp.pdu import Command, Pdu, decode, encode
from gateway.models import State
from gateway.store.schema import migrate
from gateway.store.transitions import CLAIM_RETURNING, INSERT_EVENT, INSERT_PART, update_sql

N = 20_000
GROUP = 50
WINDOW, RESP_DELAY_S, RECEIPT_DELAY_S, BENCH_N = 50, 0.005, 1.0, 20_000
HTTP_SECONDS = 5
BODY = "x" * 150
HELLO_SERVER = """
import sys, uvloop
from aiohttp import web
async def accept(request):
    await request.read()
    return web.Response(body=b'{"id":"x","status":"queued"}', status=202,
                        content_type="application/json")
app = web.Application()
app.router.add_post("/api/v1/messages", accept)
uvloop.install()
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def http_floor(pinning: harness.Pinning) -> float:
    """CPU microseconds per request of a bare aiohttp POST handler under wrk."""
    port = harness.free_port()
    server = subprocess.Popen([*pinning.server, sys.executable, "-c", HELLO_SERVER, str(port)])
    try:
        _wait_for_port(port, server)
        script = Path(tempfile.mkdtemp()) / "post.lua"
        body = json.dumps({"to": "+12025550123", "body": BODY})
        script.write_text(
            f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
        before = sum(harness.thread_cpu_seconds(server.pid).values())
        out = subprocess.run(
            [
                *pinning.client,
                "wrk",
                "-t1",
                "-c64",
                f"-d{HTTP_SECONDS}s",
                "-s",
                str(script),
                f"http://127.0.0.1:{port}/api/v1/messages",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        used = sum(harness.thread_cpu_seconds(server.pid).values()) - before
        match = re.search(r"(\d+) requests in", out)
        assert match is not None, out
        return used / int(match.group(1)) * 1e6
    finally:
        server.terminate()
        server.wait()


def _wait_for_port(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + harness.READY_TIMEOUT_S
    while time.monotonic() < deadline and server.poll() is None:
        try:
            socket.create_connection((harness.LOOPBACK, port), timeout=1).close()
            return
        except OSError:
            time.sleep(harness.READY_POLL_S)
    raise RuntimeError("the bare HTTP server did not start")


def sql_floors() -> dict[str, float]:
    """CPU microseconds per message of each step's bare statements."""
    conn = sqlite3.connect(Path(tempfile.mkdtemp()) / "floor.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    migrate(conn)
    ids = [f"06H1P89D{i:018d}" for i in range(N)]
    now = time.time()

    def insert(i: str) -> None:
        conn.execute(
            "INSERT INTO messages (id, token_id, priority, state, to_ct, to_index, body_ct,"
            " encoding, segments, created_at, updated_at, expires_at, due_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                i,
                "t",
                2,
                "queued",
                os.urandom(40),
                os.urandom(32),
                os.urandom(190),
                "gsm7",
                1,
                now,
                now,
                now + 86400,
                now,
            ),
        )

    # The store's own statements (gateway.store.store), run bare: no Transition, no
    # savepoints, no grouping code around them.
    route_only = (True, False, False, False, False, False)
    counted = (True, False, False, False, False, True)  # a claim counts the attempt
    claim_sql = update_sql(State.SENDING, counted, None, CLAIM_RETURNING, False)
    sent_sql = update_sql(State.SENT, route_only, None, "", False)
    delivered_sql = update_sql(State.DELIVERED, route_only, State.SENT, "", True)

    def claim(i: str) -> None:
        row = conn.execute(claim_sql, ("sending", now, "r", i)).fetchone()
        conn.execute(INSERT_EVENT, (i, now, "sending", "r", None, None, row[0]))

    def sent(i: str) -> None:
        row = conn.execute(sent_sql, ("sent", now, "r", i)).fetchone()
        conn.execute(INSERT_EVENT, (i, now, "sent", "r", "c" + i, None, row[0]))
        conn.execute(INSERT_PART, ("r", "c" + i, i, 0))

    def receipt(i: str) -> None:
        conn.execute(
            "UPDATE carrier_ids SET state = ?, error_code = ? WHERE route = ? AND carrier_id = ?"
            " AND state NOT IN ('delivered', 'failed', 'expired') RETURNING message_id",
            ("delivered", None, "r", "c" + i),
        ).fetchone()
        row = conn.execute(delivered_sql, ("delivered", now, "r", i, i)).fetchone()
        conn.execute(INSERT_EVENT, (i, now, "delivered", "r", "c" + i, None, row[0]))

    steps: dict[str, Callable[[str], None]] = {
        "insert": insert,
        "claim": claim,
        "sent": sent,
        "receipt": receipt,
    }
    floors = {}
    for name, fn in steps.items():
        started = time.thread_time()
        for first in range(0, N, GROUP):
            conn.execute("BEGIN IMMEDIATE")
            for i in ids[first : first + GROUP]:
                fn(i)
            conn.execute("COMMIT")
        floors[name] = (time.thread_time() - started) / N * 1e6
    conn.close()
    return floors


def codec_floors() -> dict[str, float]:
    submit = Pdu(
        Command.SUBMIT_SM,
        7,
        params={
            "destination_addr": "12025550123",
            "registered_delivery": 1,
            "short_message": BODY.encode(),
        },
    )
    resp = encode(Pdu(Command.SUBMIT_SM_RESP, 7, params={"message_id": "0123456789"}))
    text = b"id:0123456789 sub:001 dlvrd:001 submit date:2611270405 done date:2611270405"
    deliver = encode(
        Pdu(
            Command.DELIVER_SM,
            9,
            params={"esm_class": 4, "short_message": text + b" stat:DELIVRD err:000 text:x"},
        )
    )
    deliver_resp = Pdu(Command.DELIVER_SM_RESP, 9)

    def timed(fn: Callable[[], object]) -> float:
        started = time.thread_time()
        for _ in range(N):
            fn()
        return (time.thread_time() - started) / N * 1e6

    return {
        "submit": timed(lambda: (encode(submit), decode(resp))),
        "receipt": timed(lambda: (decode(deliver), encode(deliver_resp))),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kannel-raw", type=float, help="Kannel's raw rate (bench/smpp.py)")
    p.add_argument("--kannel-clinical", type=float, help="Kannel's clinical rate")
    args = p.parse_args()
    latest = harness.BENCH_DIR / "results" / "smpp-latest.json"
    if latest.exists() and not (args.kannel_raw or args.kannel_clinical):
        measured = json.loads(latest.read_text())
        args.kannel_raw = measured.get("kannel_raw_per_s")
        args.kannel_clinical = measured.get("kannel_clinical_per_s")
    pinning = harness.setup_pinning()
    if pinning.server:
        os.sched_setaffinity(0, {0})  # the SQL and codec parts run where servers run
    http = http_floor(pinning)
    sql = sql_floors()
    codec = codec_floors()
    raw_floor = http + sql["insert"] + sql["claim"] + sql["sent"] + codec["submit"]
    batch_floor = sql["insert"] + sql["claim"] + sql["sent"] + codec["submit"]
    line: dict[str, object] = {
        "bench": "floors",
        "http_us": round(http, 1),
        **{f"sql_{k}_us": round(v, 1) for k, v in sql.items()},
        **{f"codec_{k}_us": round(v, 1) for k, v in codec.items()},
        "raw_floor_us": round(raw_floor, 1),
        "batch_floor_us": round(batch_floor, 1),
        "raw_floor_max_per_s": round(1e6 / raw_floor),
        "batch_floor_max_per_s": round(1e6 / batch_floor),
        "clinical_cap_per_s": round(BENCH_N / (BENCH_N * RESP_DELAY_S / WINDOW + RECEIPT_DELAY_S)),
    }
    if args.kannel_raw:
        line["raw_budget_us"] = round(1e6 / (0.7 * args.kannel_raw), 1)
        line["batch_budget_us"] = round(1e6 / (1.5 * args.kannel_raw), 1)
    if args.kannel_clinical:
        line["clinical_target_per_s"] = round(3 * args.kannel_clinical)
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
