"""The admin socket's protocol, on a real Unix socket in front of an in-process gateway:
streamed lines, several clients at once, a client that goes away, refusals."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import socket
import stat
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.app import Gateway
from gateway.ops import client
from gateway.ops.registry import OpContext, op
from gateway.ops.socket import SUN_PATH_MAX, AdminSocket
from gateway.startup import StartupFault
from gateway.store import crypto
from tests.conftest import GatewayFactory

GATES: dict[str, asyncio.Event] = {}
STARTED: dict[str, asyncio.Event] = {}


@op("test.gate")
async def _gate(ctx: OpContext, args: dict[str, Any]) -> int:
    """Says it started, reports progress, waits for the test to open its gate, records."""
    name = str(args["gate"])
    ctx.out(f"{name} started")
    ctx.progress(1, 2, "waiting")
    STARTED[name].set()
    await GATES[name].wait()
    ctx.err(f"{name} note")
    await ctx.audit.record(ctx.actor, "test_gate_passed", "gate", name)
    ctx.progress(2, 2, "waiting")
    return 3


@op("test.offline", offline_only=True)
async def _offline(ctx: OpContext, args: dict[str, Any]) -> int:
    raise AssertionError("an offline-only op ran in the daemon")


def _gate_named(name: str) -> None:
    GATES[name] = asyncio.Event()
    STARTED[name] = asyncio.Event()


@pytest.fixture
async def served(open_gateway: GatewayFactory) -> AsyncIterator[tuple[Gateway, AdminSocket]]:
    gw = await open_gateway()
    server = AdminSocket(gw, crypto.read_master_key(gw.config.master_key_path))
    await server.start()
    try:
        yield gw, server
    finally:
        await server.close()


async def _ask(path: Path, request: dict[str, Any] | bytes) -> list[dict[str, Any]]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    raw = request if isinstance(request, bytes) else json.dumps(request).encode() + b"\n"
    writer.write(raw)
    answers = [json.loads(line) async for line in reader]
    writer.close()
    return answers


async def _actions(gw: Gateway) -> list[tuple[str, str]]:
    return [(e.actor, e.action) for e in reversed(await gw.audit.entries(limit=50))]


async def test_an_op_streams_its_lines_and_ends_with_its_exit_code(
    served: tuple[Gateway, AdminSocket],
) -> None:
    gw, server = served
    _gate_named("a")
    asking = asyncio.create_task(_ask(server.path, {"op": "test.gate", "args": {"gate": "a"}}))
    await STARTED["a"].wait()
    GATES["a"].set()
    assert await asking == [
        {"out": "a started"},
        {"progress": [1, 2, "waiting"]},
        {"err": "a note"},
        {"progress": [2, 2, "waiting"]},
        {"exit": 3},
    ]
    assert ("console:root", "test_gate_passed") in await _actions(gw)


async def test_several_clients_at_once_and_one_that_goes_away(
    served: tuple[Gateway, AdminSocket],
) -> None:
    gw, server = served
    for name in ("b", "c", "d"):
        _gate_named(name)
    b = asyncio.create_task(_ask(server.path, {"op": "test.gate", "args": {"gate": "b"}}))
    c = asyncio.create_task(_ask(server.path, {"op": "test.gate", "args": {"gate": "c"}}))
    # d's client hangs up while its op waits: the op still finishes, the daemon goes on.
    _, gone = await asyncio.open_unix_connection(str(server.path))
    gone.write(json.dumps({"op": "test.gate", "args": {"gate": "d"}}).encode() + b"\n")
    await asyncio.gather(*(STARTED[n].wait() for n in ("b", "c", "d")))  # all three at once
    gone.close()
    await gone.wait_closed()
    for name in ("d", "c", "b"):
        GATES[name].set()
    assert (await b)[-1] == {"exit": 3} and (await c)[-1] == {"exit": 3}
    answers = await _ask(server.path, {"op": "user.list", "args": {}})
    assert answers[-1] == {"exit": 0}
    passed = [a for a in await gw.audit.entries(limit=50) if a.action == "test_gate_passed"]
    assert sorted(a.target_id or "" for a in passed) == ["b", "c", "d"]


async def test_refusals_name_what_is_wrong(served: tuple[Gateway, AdminSocket]) -> None:
    _, server = served
    offline = await _ask(server.path, {"op": "test.offline", "args": {}})
    assert offline[0]["error"]["code"] == "offline_only"
    assert "stop it" in offline[0]["error"]["message"] and len(offline) == 1
    unknown = await _ask(server.path, {"op": "no.such", "args": {}})
    assert unknown == [
        {"error": {"code": "unknown_op", "message": "this smsgw has no command no.such"}}
    ]
    for raw in (b"not json\n", b'{"args": {}}\n', b'{"op": "user.list", "args": []}\n'):
        answer = await _ask(server.path, raw)
        assert answer[0]["error"]["code"] == "bad_request", raw
    huge = json.dumps({"op": "user.list", "args": {"x": "y" * 70_000}}).encode() + b"\n"
    assert (await _ask(server.path, huge))[0]["error"]["code"] == "bad_request"
    assert (await _ask(server.path, {"op": "user.list", "args": {}}))[-1] == {"exit": 0}


async def test_the_sync_console_client_follows_the_stream(
    served: tuple[Gateway, AdminSocket], capfd: pytest.CaptureFixture[str]
) -> None:
    gw, _ = served
    _gate_named("e")
    code = asyncio.create_task(
        asyncio.to_thread(client.run_remote, gw.config, "test.gate", {"gate": "e"})
    )
    await STARTED["e"].wait()
    GATES["e"].set()
    assert await code == 3
    out, err = capfd.readouterr()
    assert "e started" in out.splitlines()  # (the in-process gateway logs to stdout too)
    assert "e note" in err and "waiting: 2/2 (100%)" in err
    offline = asyncio.to_thread(client.run_remote, gw.config, "test.offline", {})
    assert await offline == 2
    assert "runs only with the service stopped" in capfd.readouterr().err


async def test_a_stale_socket_is_replaced_and_a_live_one_is_not_taken(
    served: tuple[Gateway, AdminSocket], open_gateway: GatewayFactory
) -> None:
    gw, server = served
    second = AdminSocket(gw, crypto.read_master_key(gw.config.master_key_path))
    with pytest.raises(StartupFault, match="served by another running smsgw"):
        await second.start()
    await server.close()
    # What a daemon killed by SIGKILL leaves: a socket file nobody listens on.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(server.path))
    stale.close()
    with pytest.raises(client.NotServed):
        client.run_remote(gw.config, "user.list", {})
    await second.start()
    try:
        assert (await _ask(second.path, {"op": "user.list", "args": {}}))[-1] == {"exit": 0}
    finally:
        await second.close()
    assert not server.path.exists()


async def test_a_socket_path_longer_than_sun_path(
    open_gateway: GatewayFactory, tmp_path: Path
) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "admin.sock"
    assert len(os.fsencode(path)) > SUN_PATH_MAX
    gw = await open_gateway(admin={"socket": str(path)})
    server = AdminSocket(gw, crypto.read_master_key(gw.config.master_key_path))
    await server.start()
    try:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = await asyncio.to_thread(client.run_remote, gw.config, "user.list", {})
        assert code == 0 and any(line.startswith("ID ") for line in out.getvalue().splitlines())
    finally:
        await server.close()
    assert not path.exists()


async def test_a_socket_directory_it_makes_is_0750_and_the_socket_0660(
    open_gateway: GatewayFactory, tmp_path: Path
) -> None:
    path = tmp_path / "run" / "smsgw" / "admin.sock"
    gw = await open_gateway(admin={"socket": str(path)})
    server = AdminSocket(gw, crypto.read_master_key(gw.config.master_key_path))
    await server.start()
    try:
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o750
        assert stat.S_ISSOCK(path.stat().st_mode) and stat.S_IMODE(path.stat().st_mode) == 0o660
    finally:
        await server.close()


def test_a_refusal_sent_before_the_request_is_read_still_reaches_the_console(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # The service refuses a caller by its credentials and closes without reading: the
    # console's write then fails (EPIPE), and the refusal must still be what it reports.
    path = tmp_path / "admin.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    refused = {"error": {"code": "forbidden", "message": "this user may not run commands"}}

    def refuse() -> None:
        conn, _ = listener.accept()
        conn.sendall(json.dumps(refused).encode() + b"\n")
        conn.shutdown(socket.SHUT_WR)
        conn.close()

    server = threading.Thread(target=refuse)
    server.start()
    config = type("C", (), {"admin_socket_path": str(path)})()
    try:
        # Larger than any socket buffer, so the write is still going when the peer closes.
        code = client.run_remote(config, "anything", {"pad": "x" * (8 << 20)})  # type: ignore[arg-type]
    finally:
        server.join(10)
        listener.close()
    assert code == 2
    assert "this user may not run commands" in capfd.readouterr().err
