"""The raw ceiling: a bare aiohttp handler doing only the durable, group-committed insert.

It answers `POST /api/v1/messages` the way the gateway does at its core: read the
body, insert the rows a message insert adds (the SQL taken from
`Store.insert_statements`) through the same `GroupCommitWriter`
with `synchronous=FULL`, and reply 202 only after the commit returned. The
ciphertexts and the blind indexes are prepared once at start-up; there is no
authentication, no JSON validation, no number parsing, no scheduler. The gateway's
accept rate divided by this one is the share the rest of the stack leaves.

    python bench/ceiling_server.py --db /tmp/x/ceiling.db --listen 127.0.0.1:18081
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web
from loadgen import BODY_160_GSM, RECIPIENTS, recipient

from gateway.models import Priority, new_message_id
from gateway.store import crypto
from gateway.store.schema import migrate
from gateway.store.store import NewMessage, Store
from gateway.store.writer import GroupCommitWriter, Statement

EXPIRES_AFTER = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class RowTemplate:
    """The gateway's insert statements for one message, encrypted once.

    The blind index differs per recipient and is indexed, so it is precomputed for
    every number the load generator uses and picked at random per request, giving the
    `messages_to` index the same scattered writes the gateway makes.
    """

    statements: list[Statement]
    blind_indexes: tuple[bytes, ...]

    def rows(self, message_id: str, now: float) -> list[Statement]:
        """The template with a fresh id, recipient index and timestamps."""
        (message_sql, message_params), *others = self.statements
        params = list(message_params)
        params[0] = message_id
        params[5] = random.choice(self.blind_indexes)  # to_index
        params[13] = params[14] = params[17] = now  # created_at, updated_at, due_at
        params[16] = now + EXPIRES_AFTER  # expires_at
        # Any further rows (none today) are keyed by the message id first.
        return [(message_sql, params), *((sql, (message_id, *p[1:])) for sql, p in others)]


def row_template(db_path: Path) -> RowTemplate:
    store = Store(db_path, os.urandom(crypto.KEY_BYTES))
    cipher = crypto.FieldCipher({1: os.urandom(crypto.KEY_BYTES)}, os.urandom(crypto.KEY_BYTES))
    store.cipher = cipher
    now = time.time()
    sample = NewMessage(
        id=new_message_id(),
        token_id=None,
        priority=Priority.NORMAL,
        to=recipient(0),
        body=BODY_160_GSM,
        encoding="gsm7",
        segments=1,
        created_at=now,
        expires_at=now + EXPIRES_AFTER,
    )
    indexes = tuple(cipher.blind_index(recipient(i)) for i in range(RECIPIENTS))
    return RowTemplate(store.insert_statements(sample), indexes)


WRITER_KEY: web.AppKey[GroupCommitWriter] = web.AppKey("writer", GroupCommitWriter)
TEMPLATE_KEY: web.AppKey[RowTemplate] = web.AppKey("template", RowTemplate)


def _accepted_body(message_id: str) -> bytes:
    return msgspec.json.encode(
        {
            "id": message_id,
            "status": "queued",
            "priority": "normal",
            "segments": 1,
            "encoding": "gsm7",
        }
    )


async def accept(request: web.Request) -> web.Response:
    await request.read()
    message_id = new_message_id()
    rows = request.app[TEMPLATE_KEY].rows(message_id, time.time())
    await request.app[WRITER_KEY].insert(rows)
    return web.Response(
        body=_accepted_body(message_id), status=202, content_type="application/json"
    )


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def open_writer(db_path: Path) -> GroupCommitWriter:
    writer = GroupCommitWriter(db_path, "FULL")
    await writer.open()
    await writer.call_outside_transaction(migrate)
    return writer


def build_app(writer: GroupCommitWriter, template: RowTemplate) -> web.Application:
    app = web.Application()
    app[WRITER_KEY] = writer
    app[TEMPLATE_KEY] = template
    app.router.add_post("/api/v1/messages", accept)
    app.router.add_get("/api/v1/healthz", healthz)
    return app


async def serve(db_path: Path, host: str, port: int) -> None:
    writer = await open_writer(db_path)
    runner = web.AppRunner(
        build_app(writer, row_template(db_path)), access_log=None, handle_signals=False
    )
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    await writer.close()


def _event_loop_policy() -> Any:
    """uvloop when installed, as `smsgw run` uses it."""
    with contextlib.suppress(ImportError):
        import uvloop

        return uvloop.EventLoopPolicy()
    return asyncio.DefaultEventLoopPolicy()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True, help="SQLite file to create or reuse")
    parser.add_argument("--listen", default="127.0.0.1:18081", help="HOST:PORT")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    asyncio.set_event_loop_policy(_event_loop_policy())
    asyncio.run(serve(Path(args.db), host, int(port)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
