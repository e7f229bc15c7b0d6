"""Where one HTTP accept's Python runs, counted: bytecodes per function on the event loop.

    .venv/bin/python bench/accept_opcodes.py                # the gateway, 4 clients
    .venv/bin/python bench/accept_opcodes.py --top 80 --clients 16
    .venv/bin/python bench/accept_opcodes.py --target ceiling
    .venv/bin/python bench/accept_opcodes.py --clients 16 --writer  # its thread's too

CPU per accept on a shared machine moves with the load; the bytecodes the event loop
runs for it do not. The server is built in this process as `profile_accept.py` builds it
(the benchmark's config and route, uvloop, its numbers normalised first), `--clients`
threads post single sends over keep-alive connections, and a trace function counts
every bytecode the loop thread runs, by the function that runs it (its own bytecodes,
not its callees'), and every frame it enters, per accept. C functions (uvloop, the
HTTP parser, AES-GCM, msgspec) count nothing: it is a map of the Python, to find what
to cut, not a clock.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from types import CodeType, FrameType

import harness
import loadgen
import profile_accept

_STDLIB_MARK = "/lib/python3"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sends", type=int, default=400, help="counted sends, in all")
    p.add_argument("--clients", type=int, default=4, help="client threads (connections)")
    p.add_argument("--top", type=int, default=60, help="functions listed")
    p.add_argument("--files", type=int, default=25, help="files listed")
    p.add_argument("--target", choices=("gateway", "ceiling"), default="gateway")
    p.add_argument(
        "--writer", action="store_true", help="count the writer's thread too, apart from the loop"
    )
    return p.parse_args(argv)


class Tally:
    """Bytecodes by code object, and frames entered, while it is the trace function."""

    def __init__(self) -> None:
        self.opcodes: Counter[CodeType] = Counter()
        self.frames: Counter[CodeType] = Counter()

    def trace(self, frame: FrameType, event: str, arg: object) -> Callable[..., object]:
        frame.f_trace_opcodes = True
        if event == "opcode":
            self.opcodes[frame.f_code] += 1
        elif event == "call":
            self.frames[frame.f_code] += 1
        return self.trace


def post_sends(url: str, token: str, first: int, count: int) -> list[int]:
    """`count` single sends over one keep-alive connection, each written in one go as
    wrk writes it (`http.client` writes the headers and the body apart); the statuses."""
    host, _, port = url.removeprefix("http://").rpartition(":")
    statuses = []
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        answers = sock.makefile("rb")
        for i in range(first, first + count):
            to = loadgen.recipient(i % loadgen.RECIPIENTS)
            body = f'{{"to":"{to}","body":"{loadgen.BODY_160_GSM}","priority":"normal"}}'
            sock.sendall(
                (
                    f"POST /api/v1/messages HTTP/1.1\r\nHost: {host}:{port}\r\n"
                    f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n{body}"
                ).encode()
            )
            statuses.append(int(answers.readline().split()[1]))
            length = 0
            while (line := answers.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            answers.read(length)
    return statuses


async def load(args: argparse.Namespace, per_client: int) -> list[int]:
    """Every client's sends at once, each client on its own thread."""
    results: list[list[int]] = [[] for _ in range(args.clients)]

    def client(k: int) -> None:
        results[k] = post_sends(args.url, args.token, k * per_client, per_client)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
    for t in threads:
        t.start()
    await asyncio.to_thread(lambda: [t.join() for t in threads])
    return [s for r in results for s in r]


def where(code: CodeType) -> str:
    path = code.co_filename
    for marker in (str(harness.REPO) + "/", "site-packages/", _STDLIB_MARK):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{code.co_firstlineno} {code.co_qualname}"


def report(tally: Tally, sends: int, top: int, files: int) -> None:
    ops, frames = sum(tally.opcodes.values()), sum(tally.frames.values())
    print(f"per accept: {ops / sends:,.0f} bytecodes, {frames / sends:.1f} frames entered")
    by_module: Counter[str] = Counter()
    for code, n in tally.opcodes.items():
        by_module[where(code).split(":")[0]] += n
    print("\nbytecodes per accept by file:")
    for name, n in by_module.most_common(files):
        print(f"  {n / sends:8.1f}  {name}")
    print(f"\nbytecodes (frames) per accept by function, top {top}:")
    for code, n in tally.opcodes.most_common(top):
        print(f"  {n / sends:8.1f} ({tally.frames[code] / sends:4.2f})  {where(code)}")


async def measure(args: argparse.Namespace, work: Path) -> None:
    args.cprofile = args.sql = 0
    args.warm_numbers = True
    runner, _site, _writer = await profile_accept.serve(args, work)
    per_client = max(1, args.sends // args.clients)
    try:
        assert set(await load(args, per_client)) == {202}  # caches, imports, the token
        tally, on_writer = Tally(), Tally()
        if args.writer:  # the writer's thread runs this between two transactions
            await _writer.call_outside_transaction(lambda _conn: sys.settrace(on_writer.trace))
        before = sys.gettrace()
        sys.settrace(tally.trace)
        try:
            statuses = await load(args, per_client)
        finally:
            sys.settrace(before)
        if args.writer:
            await _writer.call_outside_transaction(lambda _conn: sys.settrace(None))
        assert set(statuses) == {202}, sorted(set(statuses))
        report(tally, len(statuses), args.top, args.files)
        if args.writer:
            print("\nthe writer's thread:")
            report(on_writer, len(statuses), args.top, args.files)
    finally:
        await runner.cleanup()
        if args.gateway is not None:
            await args.gateway.stop()
        else:
            await _writer.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != harness.BENCH_DIR]
    work = Path(tempfile.mkdtemp(prefix="smsgw-accept-opcodes-"))
    try:
        import uvloop

        uvloop.run(measure(args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
