"""CPU per HL7 message, by thread, for the gateway's inbound pipeline and its ceiling.

    .venv/bin/python bench/profile_hl7.py                 # 2,000 small SIUs
    .venv/bin/python bench/profile_hl7.py --sample SIU-S12-01.hl7 --count 1000
    .venv/bin/python bench/profile_hl7.py --repeat 5      # medians of 5 alternating runs
    .venv/bin/python bench/profile_hl7.py --cprofile 25   # counts, and the top 25 functions

In one process (no sockets): `Hl7Inbound.receive` of `bench/hl7.py`'s messages in
windows of `--window` (16), on a fresh store with `synchronous = FULL`, first for the
ceiling (no mapping) then for the gateway. Prints the CPU time per message of the event
loop's thread and of the writer's thread (`time.thread_time`), which barely depend on
other load on the machine, unlike rates. With `--cprofile N`, both threads run under
cProfile (slower; the CPU figures are then not comparable) and the top N functions by
own time are printed per thread, with the counts that do not depend on the load at
all: Python calls per message per thread and SQL statements per message.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib.util
import io
import json
import pstats
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

# bench/hl7.py under another name: as `hl7` it would shadow python-hl7 (it fixes sys.path).
_spec = importlib.util.spec_from_file_location("bench_hl7", Path(__file__).parent / "hl7.py")
assert _spec is not None and _spec.loader is not None
bench_hl7 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_hl7)


async def measure(
    mapped: bool, count: int, window: int, sample: str | None, top: int
) -> dict[str, object]:
    data = Path(tempfile.mkdtemp(prefix="profile-hl7-"))
    inbound = await bench_hl7.open_inbound(data, sample, mapped=mapped)
    writer = inbound.store.writer  # type: ignore[attr-defined]
    payloads = [bench_hl7.siu(i, sample) for i in range(count + 200)]
    for p in payloads[count:]:  # warm-up (imports, caches, first pages)
        await inbound.receive(p)  # type: ignore[attr-defined]
    loop_prof, writer_prof = cProfile.Profile(time.thread_time), cProfile.Profile(time.thread_time)
    statements: list[str] = []
    writer_cpu0 = await writer.run(lambda c: time.thread_time())
    if top:
        await writer.run(lambda c: c.set_trace_callback(statements.append))
        await writer.run(lambda c: writer_prof.enable())
        loop_prof.enable()
    loop_cpu0 = time.thread_time()
    for start in range(0, count, window):
        answers = await asyncio.gather(
            *(inbound.receive(p) for p in payloads[start : min(start + window, count)])  # type: ignore[attr-defined]
        )
        assert all(a.state in ("mapped", "ignored") or not mapped for a in answers), answers
    loop_cpu = time.thread_time() - loop_cpu0
    if top:
        loop_prof.disable()
        await writer.run(lambda c: writer_prof.disable())
        await writer.run(lambda c: c.set_trace_callback(None))
    writer_cpu = await writer.run(lambda c: time.thread_time()) - writer_cpu0

    def count_rows(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT count(*) FROM clinical_notices").fetchone()[0])

    notices = await writer.run(count_rows)
    await inbound.store.close()  # type: ignore[attr-defined]
    out: dict[str, object] = {
        "target": "gateway" if mapped else "ceiling",
        "messages": count,
        "loop_us_per_msg": round(loop_cpu / count * 1e6, 1),
        "writer_us_per_msg": round(writer_cpu / count * 1e6, 1),
        "total_us_per_msg": round((loop_cpu + writer_cpu) / count * 1e6, 1),
        "notices": notices,
        "cprofile": bool(top),
    }
    if top:
        # Load-independent counts: Python calls and SQL statements (trigger bodies and
        # transaction control included) per message.
        for name, prof in (("loop", loop_prof), ("writer", writer_prof)):
            calls = pstats.Stats(prof).total_calls  # type: ignore[attr-defined]
            out[f"{name}_calls_per_msg"] = round(calls / count, 1)
        out["statements_per_msg"] = round(len(statements) / count, 2)
        for name, prof in (("loop", loop_prof), ("writer", writer_prof)):
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(top)
            print(f"--- {out['target']} {name} thread, top {top} by own time", file=sys.stderr)
            print(s.getvalue(), file=sys.stderr)
    return out


def loop_stages(count: int, sample: str | None) -> dict[str, float]:
    """Thread CPU per message of each mapping step on the loop, run alone in turn over
    the same messages: the header, the scoping, python-hl7's parse, the mapper."""
    import hl7

    from gateway.clinical import mappers
    from gateway.hl7 import charset, header, inbound

    mappers.load()
    iface = bench_hl7.interface(sample)
    profile = iface.profile()  # type: ignore[attr-defined]
    payloads = [bench_hl7.siu(i, sample) for i in range(count)]
    texts = [charset.decode(p, iface.codec).text for p in payloads]  # type: ignore[attr-defined]
    reads = inbound.with_phones(mappers.segments_for("SIU", "S12"), profile)  # type: ignore[arg-type]
    scoped = [inbound.scoped(t, reads, "|") for t in texts]
    parsed = [hl7.parse(t) for t in scoped]
    mapper = mappers.mapper_for("SIU", "S12")
    assert mapper is not None
    steps = {
        "decode_and_header": lambda i: header.parse(charset.decode(payloads[i], "utf-8").text),
        "scope": lambda i: inbound.scoped(texts[i], reads, "|"),
        "hl7_parse": lambda i: hl7.parse(scoped[i]),
        "mapper": lambda i: mapper(parsed[i], profile),
    }
    out = {}
    for name, step in steps.items():
        start = time.thread_time()
        for i in range(count):
            step(i)
        out[name] = round((time.thread_time() - start) / count * 1e6, 1)
    return out


def _median(runs: list[dict[str, object]]) -> dict[str, object]:
    out = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, float):
            out[key] = statistics.median(float(r[key]) for r in runs)  # type: ignore[arg-type]
    out["runs"] = len(runs)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--window", type=int, default=16)
    p.add_argument("--sample", help="a file in tests/data/hl7v2-samples (default: a small SIU)")
    p.add_argument("--cprofile", type=int, default=0, metavar="N")
    p.add_argument("--repeat", type=int, default=1, help="alternate runs; report medians")
    args = p.parse_args()
    runs: dict[bool, list[dict[str, object]]] = {False: [], True: []}
    for _ in range(args.repeat):
        for m in (False, True):
            runs[m].append(
                asyncio.run(measure(m, args.count, args.window, args.sample, args.cprofile))
            )
    results = [_median(runs[False]), _median(runs[True])]
    for r in results:
        print(json.dumps(r))
    print(json.dumps({"loop_stages_us_per_msg": loop_stages(args.count, args.sample)}))
    ceiling, gateway = results
    print(
        json.dumps(
            {
                "cpu_ratio": round(
                    float(ceiling["total_us_per_msg"])  # type: ignore[arg-type]
                    / float(gateway["total_us_per_msg"]),  # type: ignore[arg-type]
                    3,
                )
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
