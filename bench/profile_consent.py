"""The accept path with the send policy on and off, in this process, under cProfile.

    .venv/bin/python bench/profile_consent.py                  # both, 12,000 sends each
    .venv/bin/python bench/profile_consent.py --only on --top 40
    .venv/bin/python bench/profile_consent.py --cprofile 0     # thread CPU only, no profiler
    .venv/bin/python bench/profile_consent.py --cprofile 0 --statements  # and SQL per accept
    .venv/bin/python bench/profile_consent.py --cprofile 0 --phases --only on --warm 30000
    .venv/bin/python bench/profile_consent.py --cprofile 0 --bytecodes --n 2000 --warm 20000
    .venv/bin/python bench/profile_consent.py --cprofile 0 --vm --n 2000 --warm 20000

What `bench/consent.py` loads through HTTP, without HTTP: a fresh gateway per mode
(`smsgw init`, the same seeded ledger through `smsgw consent import`, sending windows
open all day, `[consent] enabled` on or off), opened in this process with no route
running, then N sends to random numbers of the 10,000 with the purpose cycling as the
bench's do, from `--concurrency` tasks calling `Messages.accept` (the use case every
front end calls), so the writer forms groups as under wrk. The event loop and the
SQLite writer thread are profiled apart (a profiler is enabled on the writer's own
thread through `call_outside_transaction`). Prints CPU per message of each thread and
each thread's functions by own time; the profiles go to bench/results/.

Call counts and own time are what to read here, and they hold on a busy machine; the
absolute microseconds are inflated by the profiler (`--cprofile 0` for thread CPU
alone) and by whatever else the machine runs. `--statements` counts the SQL statements
the writer runs per accept, by kind (SQLite's trace callback on the writer's connection;
it costs CPU of its own, so read the counts, not the times, of such a run). `--phases`
times parts of the writer's work by thread CPU per accept: its transactions in all, the
policy's group views (`GroupView`) and, within them, the reads of `consent_state` rows,
the verdicts (`Intake.judge`) and, within them, the cap searches, and the insert rows.
`--bytecodes` (Python bytecodes, with those of every function that runs at least one
per two accepts, and `--bytecode-lines` by line too) and `--vm` (SQLite VM
instructions) count the writer's work per accept, which the machine's load does not
move; run them apart (`--vm`'s handler is Python the other would count). Every run
prints the process's read syscalls per accept (SQLite's page cache misses, in the
main); `--cache-mib` sets the writer's page cache (SQLite's default is 2 MiB).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import harness
import loadgen
from consent import _CONSENT, _OPEN_WINDOW, CONTACTS, HELD, PURPOSES, seed_list, smsgw

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.intake import SendRequest

RESULTS = harness.BENCH_DIR / "results"
_VM_STEP = 10  # `--vm`: the progress handler runs every this many VM instructions
SEED = 12  # the same recipients and purposes in both modes


@dataclass(frozen=True, slots=True)
class Measured:
    enabled: bool
    n: int
    seconds: float
    loop_us: float  # CPU per message, event loop thread
    writer_us: float  # CPU per message, the SQLite writer thread
    statuses: dict[str, int]
    statements: dict[str, int]  # SQL the writer ran, by kind (`--statements`)
    groups: int  # writer transactions
    vm_per_accept: float  # SQLite VM instructions in the writer (`--vm`; 0.0 without)
    bytecodes_per_accept: float  # Python bytecodes in the writer (`--bytecodes`; 0.0 without)
    bytecodes_by_function: dict[str, int]  # ... by function (file:qualified name)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=12_000, help="sends measured per mode")
    p.add_argument("--warm", type=int, default=4_000, help="sends before measuring")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--only", choices=("on", "off"), help="one mode only")
    p.add_argument("--cprofile", type=int, default=25, metavar="TOP", help="0: no profiler")
    p.add_argument("--statements", action="store_true", help="count SQL statements per accept")
    p.add_argument("--bytecode-lines", action="store_true", help="with --bytecodes: by line, too")
    p.add_argument(
        "--cache-mib", type=int, default=0, help="the writer's SQLite page cache (0: as run)"
    )
    p.add_argument("--phases", action="store_true", help="writer CPU per accept by phase")
    p.add_argument(
        "--vm", action="store_true", help="SQLite VM instructions per accept in the writer"
    )
    p.add_argument(
        "--bytecodes", action="store_true", help="Python bytecodes per accept in the writer"
    )
    return p.parse_args(argv)


def requests(n: int, rng: random.Random) -> list[SendRequest]:
    from gateway.intake import SendRequest

    return [
        SendRequest(
            to=loadgen.recipient(rng.randrange(CONTACTS)),
            body=loadgen.BODY_160_GSM,
            purpose=PURPOSES[i % len(PURPOSES)],  # type: ignore[arg-type]  # valid names
        )
        for i in range(n)
    ]


async def send_all(gw: Gateway, todo: list[SendRequest], concurrency: int) -> dict[str, int]:
    from gateway.usecases import Caller

    caller = Caller(actor="bench", token_id=None, sees_all=True, may_send=True, may_read_phi=False)
    messages = gw.usecases.messages
    statuses: dict[str, int] = {}
    it = iter(todo)

    async def worker() -> None:
        for request in it:
            answer = await messages.accept(caller, request)
            key = answer.status if answer.reason is None else f"{answer.status}:{answer.reason}"
            statuses[key] = statuses.get(key, 0) + 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


async def one_mode(
    work: Path, listing: Path, enabled: bool, args: argparse.Namespace, phases: Phases | None = None
) -> tuple[Measured, cProfile.Profile | None, cProfile.Profile | None]:
    from gateway import config as gateway_config
    from gateway import logs
    from gateway.app import Gateway
    from gateway.cli import _tune_gc

    home = await harness.init_gateway(work)
    home.configure(HELD, harness.free_port())
    purposes = "".join(_OPEN_WINDOW.format(name=p) for p in PURPOSES)
    own = _CONSENT.substitute(enabled=str(enabled).lower(), purposes=purposes)
    config_text = home.config_path.read_text().replace(harness.BENCH_CONSENT, "")
    home.config_path.write_text(config_text + own)
    await smsgw("consent", "import", str(listing), "--config", str(home.config_path))
    rng = random.Random(SEED)
    warm, todo = requests(args.warm, rng), requests(args.n, rng)
    with (work / "gateway.log").open("w") as log_file:
        logs.configure("json", "info", stream=log_file)
        gw = await Gateway.open(gateway_config.load(home.config_path))
        try:
            await gw.start(dispatch=False)  # as `smsgw run`: outbox rows only for consumers
            writer = gw.store.writer
            await send_all(gw, warm, args.concurrency)
            _tune_gc()
            # Timed by thread CPU: wall time would charge the GIL's waits to whatever
            # function was running when the other thread took it.
            loop_prof = cProfile.Profile(time.thread_time) if args.cprofile else None
            writer_prof = cProfile.Profile(time.thread_time) if args.cprofile else None
            if writer_prof is not None:
                await writer.call_outside_transaction(lambda _conn: writer_prof.enable())
            statements: Counter[str] = Counter()
            if args.statements:
                await writer.call_outside_transaction(
                    lambda conn: conn.set_trace_callback(
                        lambda sql: statements.update((kind(sql),))
                    )
                )
            opcodes = Opcodes(args.bytecode_lines)
            if args.bytecodes:
                await writer.call_outside_transaction(lambda _conn: sys.settrace(opcodes.trace))
            vm = [0]  # SQLite VM instructions in the writer, in steps of _VM_STEP
            if args.vm:

                def step() -> int:
                    vm[0] += 1
                    return 0

                await writer.call_outside_transaction(
                    lambda conn: conn.set_progress_handler(step, _VM_STEP)
                )
            if args.cache_mib:
                mib = args.cache_mib
                await writer.call_outside_transaction(
                    lambda conn: conn.execute(f"PRAGMA cache_size = -{mib * 1024}")
                )
            reads_before = _read_syscalls()
            batches = writer.batches
            if phases is not None:
                phases.ns.clear()  # the warm-up's
            writer_before = await writer.call_outside_transaction(lambda _conn: time.thread_time())
            loop_before, started = time.thread_time(), time.perf_counter()
            if loop_prof is not None:
                loop_prof.enable()
            statuses = await send_all(gw, todo, args.concurrency)
            if phases is not None:
                phases.measured = dict(phases.ns)
            if loop_prof is not None:
                loop_prof.disable()
            loop_cpu, elapsed = time.thread_time() - loop_before, time.perf_counter() - started
            writer_cpu = (
                await writer.call_outside_transaction(lambda _conn: time.thread_time())
                - writer_before
            )
            if writer_prof is not None:
                await writer.call_outside_transaction(lambda _conn: writer_prof.disable())
            if args.statements:
                await writer.call_outside_transaction(lambda conn: conn.set_trace_callback(None))
            if args.vm:
                await writer.call_outside_transaction(
                    lambda conn: conn.set_progress_handler(None, 0)
                )
            if args.bytecodes:
                await writer.call_outside_transaction(lambda _conn: sys.settrace(None))
            batches = writer.batches - batches
            print(f"  {(_read_syscalls() - reads_before) / args.n:.2f} read syscalls per accept")
        finally:
            await gw.stop()
    n = args.n
    measured = Measured(
        enabled,
        n,
        elapsed,
        loop_cpu / n * 1e6,
        writer_cpu / n * 1e6,
        dict(sorted(statuses.items())),
        dict(statements.most_common()),
        batches,
        vm[0] * _VM_STEP / n,
        opcodes.count / n,
        dict(opcodes.by_function.most_common()),
    )
    return measured, loop_prof, writer_prof


def _read_syscalls() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("syscr:"):
            return int(line.split()[1])
    return 0


class Opcodes:
    """Counts the bytecodes a thread runs while `trace` is its trace function
    (`--bytecodes`: a count the machine's load does not move)."""

    def __init__(self, lines: bool = False) -> None:
        self.count = 0
        self.by_function: Counter[str] = Counter()
        self.lines = lines  # by line too (`--bytecode-lines`)

    def trace(self, frame: FrameType, event: str, arg: object) -> Callable[..., object]:
        frame.f_trace_opcodes = True
        if event == "opcode":
            self.count += 1
            code = frame.f_code
            self.by_function[f"{Path(code.co_filename).name}:{code.co_qualname}"] += 1
            if self.lines:
                self.by_function[f"  {code.co_qualname}:{frame.f_lineno}"] += 1
        return self.trace


class Phases:
    """Thread CPU (ns) of some of the writer's functions, wrapped in place (`--phases`)."""

    def __init__(self) -> None:
        self.ns: Counter[str] = Counter()
        self.measured: dict[str, int] = {}  # `ns` when the measured sends were done

    def wrap(self, owner: object, name: str, label: str) -> None:
        inner = getattr(owner, name)
        ns, clock = self.ns, time.thread_time_ns

        def timed(*args: object, **kwargs: object) -> object:
            started = clock()
            try:
                return inner(*args, **kwargs)
            finally:
                ns[label] += clock() - started

        setattr(owner, name, timed)

    def install(self) -> None:
        from gateway.consent import ledger, policy, state_cache
        from gateway.intake import Intake
        from gateway.store.writer import GroupCommitWriter

        self.wrap(GroupCommitWriter, "_commit", "transactions")
        self.wrap(policy.GroupView, "__init__", "views")
        self.wrap(Intake, "judge", "verdicts (Intake.judge)")
        self.wrap(policy, "_cap_room", "verdicts: cap searches (_cap_room)")
        self.wrap(Intake, "statements", "insert rows (Intake.statements)")
        self.wrap(state_cache, "state_rows", "views: consent_state reads")
        self.wrap(ledger, "state_rows", "views: consent_state reads")


def kind(sql: str) -> str:
    """A statement's text without its values and `IN` lists: its kind."""
    return re.sub(r"\((\?,)*\?\)", "(...)", " ".join(sql.split()))[:100]


def report(label: str, profile: cProfile.Profile, n: int, top: int, out: Path) -> None:
    text = io.StringIO()
    stats = pstats.Stats(profile, stream=text)
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]  # pstats' table
    print(f"\n{label}: {total / n * 1e6:.1f} us CPU per message under the profiler")
    stats.sort_stats("tottime").print_stats(top)
    body = text.getvalue()
    print(body[body.find("   ncalls") :].rstrip())
    stats.dump_stats(out)


async def run(args: argparse.Namespace) -> None:
    """One mode (`args.only`), in this process."""
    root = Path(tempfile.mkdtemp(prefix="smsgw-profile-consent-"))
    try:
        listing = seed_list(root / "seed.csv")
        enabled = args.only == "on"
        phases = Phases() if args.phases else None
        if phases is not None:
            phases.install()
        measured, loop_prof, writer_prof = await one_mode(
            root / args.only, listing, enabled, args, phases
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"checks {args.only}: {measured.n} sends in {measured.seconds:.2f} s;"
        f" CPU per message: event loop {measured.loop_us:.1f} us,"
        f" writer {measured.writer_us:.1f} us; {measured.statuses};"
        f" {measured.groups} writer transactions"
    )
    if measured.bytecodes_per_accept:
        print(f"  {measured.bytecodes_per_accept:.0f} Python bytecodes per accept in the writer")
        for function, count in measured.bytecodes_by_function.items():
            if count >= measured.n / 2:
                print(f"  {count / measured.n:7.1f}  {function}")
    if measured.vm_per_accept:
        print(f"  {measured.vm_per_accept:.0f} SQLite VM instructions per accept in the writer")
    for sql, count in measured.statements.items():
        print(f"  {count / measured.n:6.3f} per accept  {sql}")
    if measured.statements:
        total = sum(measured.statements.values())
        print(f"  {total / measured.n:6.3f} SQL statements per accept in all")
    for label, ns in sorted((phases.measured if phases is not None else {}).items()):
        print(f"  writer CPU per accept, {label.strip()}: {ns / measured.n / 1000:.2f} us")
    if loop_prof is not None and writer_prof is not None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        for thread, profile in (("event loop", loop_prof), ("writer thread", writer_prof)):
            name = f"profile-consent-{args.only}-{thread.split()[0]}.pstats"
            report(
                f"{thread}, checks {args.only}", profile, measured.n, args.cprofile, RESULTS / name
            )
    print(_RESULT + json.dumps({"loop_us": measured.loop_us, "writer_us": measured.writer_us}))


def both(argv: Sequence[str]) -> int:
    """Each mode in a process of its own: caches (the numbers' parse cache above all)
    start cold in both, as in two `smsgw run`s."""
    found: dict[str, dict[str, float]] = {}
    for mode in ("on", "off"):
        child = subprocess.run(
            [sys.executable, __file__, *argv, "--only", mode],
            stdout=subprocess.PIPE,
            text=True,
            check=True,
        )
        for line in child.stdout.splitlines():
            if line.startswith(_RESULT):
                found[mode] = json.loads(line.removeprefix(_RESULT))
            else:
                print(line)
    on, off = found["on"], found["off"]
    print(
        f"\nper message, on - off: event loop {on['loop_us'] - off['loop_us']:+.1f} us,"
        f" writer {on['writer_us'] - off['writer_us']:+.1f} us"
    )
    return 0


_RESULT = "RESULT "


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.only is None:
        return both(sys.argv[1:] if argv is None else list(argv))
    # This script's folder comes first on sys.path, and its hl7.py would shadow the hl7
    # package the gateway imports: the gateway's modules are imported without it.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != harness.BENCH_DIR]
    try:
        import uvloop
    except ImportError:
        asyncio.run(run(args))
    else:
        uvloop.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
