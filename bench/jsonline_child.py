"""A bench peer run as a child process that speaks one JSON object per line: a first
line with its `port` once it listens, then one answer per command written to its stdin
(`{"cmd": "stats"}`, ...). Closing its stdin stops it."""

from __future__ import annotations

import asyncio
import json
from typing import Any


class JsonLineChild:
    name = "child"  # for errors: "the <name> exited"
    start_timeout_s = 20.0
    stop_grace_s = 10.0

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None
        self.port = 0

    async def start(self, *argv: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        """Start it and read its first line (it names the port)."""
        self.process = await asyncio.create_subprocess_exec(
            *argv, env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        try:
            first = await self._line()
            self.port = int(first["port"])
        except BaseException:
            await self.stop()
            raise
        return first

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), self.stop_grace_s)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def command(self, cmd: str, **extra: Any) -> dict[str, Any]:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(json.dumps({"cmd": cmd, **extra}).encode() + b"\n")
        await self.process.stdin.drain()
        return await self._line()

    async def stats(self) -> dict[str, Any]:
        return await self.command("stats")

    async def _line(self) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), self.start_timeout_s)
        if not raw:
            raise RuntimeError(f"the {self.name} exited")
        line: dict[str, Any] = json.loads(raw)
        return line
