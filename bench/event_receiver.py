"""A counting receiver for the gateway's events, and the bench side that drives it.

Run as a process (`python bench/event_receiver.py --mqtt-port P`), it listens for
webhook POSTs on 127.0.0.1 (any path, answers 204) and, with `--mqtt-port`, subscribes
to `smsgw/#` at QoS 1 on that broker. It counts every event by id: the `webhook-id`
header, the `id` of an MQTT payload. It verifies nothing (no signature check, no JSON
schema): its CPU must stay small beside the gateway's. It prints `{"port": N}` once
listening (and subscribed), then answers JSON commands on stdin, one per line:

    {"cmd": "stats"}             counters and first/last arrival (wall clock)
    {"cmd": "down"}              stop listening (connections refused: an outage)
    {"cmd": "up"}                listen again on the same port (stats then show
                                 `first_since_up`, the first arrival after it)
    {"cmd": "dump", "path": P}   write {"webhook": {id: count}, "mqtt": {...}} to P

`Receiver` (imported by the benches) starts it pinned where the load generator runs,
and `Broker` runs Debian's mosquitto on loopback the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import web
from jsonline_child import JsonLineChild

LOOPBACK = "127.0.0.1"
TOPICS = "smsgw/#"
STATUS_TOPIC = "smsgw/status"
START_TIMEOUT_S = 20.0
SCRIPT = str(Path(__file__).resolve())


class Counts:
    def __init__(self) -> None:
        self.ids: Counter[str] = Counter()
        self.first = 0.0
        self.last = 0.0
        self.bad = 0
        self.first_since_mark = 0.0

    def add(self, event_id: str | None) -> None:
        if not event_id:
            self.bad += 1
            return
        now = time.time()
        self.first = self.first or now
        self.first_since_mark = self.first_since_mark or now
        self.last = now
        self.ids[event_id] += 1

    def stats(self) -> dict[str, Any]:
        total = sum(self.ids.values())
        return {
            "total": total,
            "unique": len(self.ids),
            "duplicates": total - len(self.ids),
            "bad": self.bad,
            "first": self.first,
            "last": self.last,
            "first_since_up": self.first_since_mark,
        }


async def serve(args: argparse.Namespace) -> None:
    hooks, mqtt = Counts(), Counts()

    async def receive(request: web.Request) -> web.Response:
        await request.read()
        hooks.add(request.headers.get("webhook-id"))
        return web.Response(status=204)

    async def listen(port: int) -> web.AppRunner:
        # A fresh app and runner per period up: `cleanup()` on "down" closes the
        # kept-alive connections too, as a stopped receiver would.
        app = web.Application()
        app.router.add_post("/{tail:.*}", receive)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, LOOPBACK, port, reuse_address=True).start()
        return runner

    runner: web.AppRunner | None = await listen(args.port)
    assert runner is not None
    port = runner.addresses[0][1]
    subscriber = None
    if args.mqtt_port:
        ready = asyncio.Event()
        subscriber = asyncio.create_task(subscribe(args.mqtt_port, mqtt, ready))
        await asyncio.wait_for(ready.wait(), START_TIMEOUT_S)
    print(json.dumps({"port": port}), flush=True)
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = json.loads(line)
        cmd = command["cmd"]
        if cmd == "down" and runner is not None:
            await runner.cleanup()
            runner = None
        elif cmd == "up" and runner is None:
            runner = await listen(port)
            hooks.first_since_mark = 0.0
        elif cmd == "dump":
            _write(Path(command["path"]), {"webhook": hooks.ids, "mqtt": mqtt.ids})
        print(json.dumps({"webhook": hooks.stats(), "mqtt": mqtt.stats()}), flush=True)
    if subscriber is not None:
        subscriber.cancel()
    if runner is not None:
        await runner.cleanup()


def _write(path: Path, ids: dict[str, Counter[str]]) -> None:
    path.write_text(json.dumps({k: dict(v) for k, v in ids.items()}))


def _read(path: Path) -> dict[str, Counter[str]]:
    return {k: Counter(v) for k, v in json.loads(path.read_text()).items()}


async def subscribe(port: int, counts: Counts, ready: asyncio.Event) -> None:
    import aiomqtt

    async with aiomqtt.Client(LOOPBACK, port, identifier="bench-counter") as client:
        await client.subscribe(TOPICS, qos=1)
        ready.set()
        async for message in client.messages:
            if str(message.topic) == STATUS_TOPIC:
                continue  # the gateway's online/offline, not an event
            try:
                event_id = json.loads(bytes(message.payload)).get("id")  # type: ignore[arg-type]
            except (ValueError, TypeError, AttributeError):
                event_id = None
            counts.add(event_id if isinstance(event_id, str) else None)


# -- the bench side ------------------------------------------------------------------------


class Receiver(JsonLineChild):
    """This module as a process under `prefix` (taskset), driven over its stdin."""

    name = "event receiver"
    start_timeout_s = START_TIMEOUT_S

    def __init__(self, prefix: tuple[str, ...], mqtt_port: int = 0) -> None:
        super().__init__()
        self.prefix = prefix
        self.mqtt_port = mqtt_port

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/events"

    async def __aenter__(self) -> Receiver:
        argv = [*self.prefix, sys.executable, SCRIPT]
        if self.mqtt_port:
            argv += ["--mqtt-port", str(self.mqtt_port)]
        await self.start(*argv)
        return self

    async def ids(self, path: Path) -> dict[str, Counter[str]]:
        await self.command("dump", path=str(path))
        return _read(path)


class Broker:
    """Debian's mosquitto on a loopback port, under `prefix`, no persistence."""

    def __init__(self, directory: Path, port: int, prefix: tuple[str, ...]) -> None:
        self.directory = directory
        self.port = port
        self.prefix = prefix
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Broker:
        program = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
        if program is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "mosquitto.conf"
        conf.write_text(
            "allow_anonymous true\npersistence false\nlog_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\nuser root\n"
            "max_queued_messages 0\n"
            f"listener {self.port} {LOOPBACK}\n"
        )
        self.process = await asyncio.create_subprocess_exec(
            *self.prefix,
            program,
            "-c",
            str(conf),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self.process.stderr is not None
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                while " running" not in (line := (await self.process.stderr.readline()).decode()):
                    if not line:
                        raise RuntimeError("mosquitto exited")
        except BaseException:
            # __aexit__ does not run when __aenter__ fails: leave no broker behind.
            self.process.kill()
            await self.process.wait()
            raise
        self._drain = asyncio.create_task(self._read_rest(self.process.stderr))
        return self

    async def _read_rest(self, stream: asyncio.StreamReader) -> None:
        while await stream.readline():
            pass

    async def __aexit__(self, *exc: object) -> None:
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            process.terminate()
            await process.wait()
            await asyncio.gather(self._drain, return_exceptions=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--mqtt-port", type=int, default=0)
    try:
        import uvloop

        uvloop.run(serve(p.parse_args()))
    except ImportError:
        asyncio.run(serve(p.parse_args()))


if __name__ == "__main__":
    main()
