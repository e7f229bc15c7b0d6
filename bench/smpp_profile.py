"""Where smsgw's CPU goes in a bench/smpp.py run, per component, in µs per message.

Input: py-spy's raw stacks, recorded with `--threads` (each stack starts with
`thread (TID): NAME`), and each thread's CPU seconds over the run (/proc). py-spy
samples a thread whether it runs, waits for a CPU or sleeps, so samples alone would
count idle time: per thread, the idle samples (the event loop inside uvloop's C loop,
a worker thread waiting on its queue) are dropped and the thread's measured CPU is
split over the rest. The event loop's own C work (socket reads, callback dispatch) is
thus spread pro rata; the writer's COMMIT samples include its fsync wait, so that row
is an upper bound and the writer's other rows lower bounds.

A stack goes to the first component below with a rule matching any of its frames: the
SMPP codec wherever it runs, then the outbox and webhook client, receipts, dispatch
(scheduler, claims, marking sent), HTTP accept, the rest of the SMPP session, the
writer's commit, the readers' queries, else "other".
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from profile_gateway import frames

Frame = tuple[str, str, str]  # function, file (shortened), line
Rule = Callable[[Frame], bool]
_THREAD = re.compile(r"^thread \((?P<tid>\d+)\)(?::\s*(?P<name>.*))?")


def _in(*parts: str) -> Rule:
    return lambda f: any(p in f[1] for p in parts)


def _named(file_part: str, *names: str) -> Rule:
    return lambda f: file_part in f[1] and f[0].rpartition(".")[2] in names


COMPONENTS: tuple[tuple[str, tuple[Rule, ...]], ...] = (
    ("smpp codec", (_in("drivers/smpp/pdu.py", "drivers/smpp/encoding.py"),)),
    (
        "outbox/webhook",
        (
            _in("gateway/integrations/", "gateway/store/outbox_sql.py", "aiohttp/client"),
            _in("aiohttp/connector.py"),
        ),
    ),
    (
        "receipts",
        (
            _in("drivers/smpp/dlr.py", "gateway/store/receipt"),
            _named("drivers/smpp/driver.py", "_receipt"),
            _named("gateway/sink.py", "receipt"),
            _named("gateway/store/transitions.py", "receipts_many", "_apply_receipt"),
        ),
    ),
    (
        "dispatch",
        (
            _in(
                "gateway/scheduler.py",
                "gateway/scheduler_feed.py",
                "gateway/router.py",
                "gateway/routes.py",
            ),
            _in("gateway/ratelimit.py", "gateway/store/claim_check.py"),
            _named("gateway/store/transitions.py", "claim_many", "mark_sent_many"),
        ),
    ),
    (
        "http accept",
        (
            _in("aiohttp/web", "gateway/http_app.py", "gateway/api/", "gateway/intake.py"),
            _in("gateway/usecases/", "gateway/web/"),
        ),
    ),
    ("smpp session", (_in("drivers/smpp/"),)),
    ("sqlite commit (incl. fsync wait)", (_named("gateway/store/writer.py", "_commit"),)),
    ("sqlite reads", (_in("aiosqlite/"),)),
)
OTHER = "other (asyncio, metrics, logs, GC)"
# Leaf frames of a thread with nothing to do.
IDLE = (
    ("Runner.run", "asyncio/runners.py"),  # uvloop's loop: epoll (and its own C work)
    ("_connection_worker_thread", "aiosqlite/core.py"),  # a reader waiting on its queue
    ("_worker", "concurrent/futures/thread.py"),  # the writer's executor, waiting
    ("wait", "threading.py"),
    ("get", "queue.py"),
)


def component(stack: Sequence[Frame]) -> str:
    for name, rules in COMPONENTS:
        if any(rule(f) for f in stack for rule in rules):
            return name
    return OTHER


def is_idle(stack: Sequence[Frame]) -> bool:
    return not stack or any(
        stack[-1][0] == func and stack[-1][1].endswith(file) for func, file in IDLE
    )


def busy_samples(raw: str) -> dict[int, Counter[str]]:
    """Per thread id, its non-idle samples by component."""
    out: dict[int, Counter[str]] = {}
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        head, _, rest = stack.partition(";")
        m = _THREAD.match(head)
        if m is None or not count.isdigit():
            continue
        parsed = frames(rest)
        if is_idle(parsed):
            continue
        out.setdefault(int(m["tid"]), Counter())[component(parsed)] += int(count)
    return out


def thread_names(raw: str) -> dict[int, str]:
    names: dict[int, str] = {}
    for line in raw.splitlines():
        m = _THREAD.match(line.partition(";")[0])
        if m is not None:
            names[int(m["tid"])] = (m["name"] or "").strip()
    return names


def attribute(raw: str, thread_cpu: Mapping[int, float]) -> dict[str, float]:
    """CPU seconds per component: each thread's CPU over its busy samples' components;
    a thread with CPU but no busy sample counts as `unattributed`."""
    seconds: Counter[str] = Counter()
    samples = busy_samples(raw)
    for tid, cpu in thread_cpu.items():
        counts = samples.get(tid)
        total = sum(counts.values()) if counts else 0
        if not counts or not total:
            seconds["unattributed (no busy samples)"] += cpu
            continue
        for name, count in counts.items():
            seconds[name] += cpu * count / total
    return dict(seconds)


def report(raw: str, thread_cpu: Mapping[int, float], main_tid: int, messages: int) -> str:
    """A table: per component, CPU µs per message on the event loop, on the other
    threads (SQLite writer and readers), and both."""
    loop = attribute(raw, {t: s for t, s in thread_cpu.items() if t == main_tid})
    threads = attribute(raw, {t: s for t, s in thread_cpu.items() if t != main_tid})
    names = sorted(set(loop) | set(threads), key=lambda k: -(loop.get(k, 0) + threads.get(k, 0)))
    per = 1e6 / max(1, messages)
    total = sum(thread_cpu.values()) * per
    lines = [
        f"smsgw CPU per message by component ({total:.0f} µs/msg in all, N={messages}):",
        f"  {'component':34} {'loop':>8} {'threads':>8} {'total':>8}",
    ]
    for name in names:
        a, b = loop.get(name, 0.0) * per, threads.get(name, 0.0) * per
        lines.append(f"  {name:34} {a:8.1f} {b:8.1f} {a + b:8.1f}")
    names = thread_names(raw)
    busy = busy_samples(raw)
    lines.append("  threads (µs/msg, busy samples):")
    for tid, cpu in sorted(thread_cpu.items(), key=lambda kv: -kv[1]):
        label = names.get(tid, "not sampled")
        count = sum(busy.get(tid, Counter()).values())
        lines.append(f"    {tid} {label[:30]:30} {cpu * per:8.1f} {count:6}")
    return "\n".join(lines)
