"""The daemon's admin socket: console commands (ops) run inside the running service.

Theory of operation. On a TPM-sealed install the master key exists only inside the
service (a systemd credential), so `smsgw user add` cannot open the store itself; and
a command run as root beside the service would leave root-owned `-wal`/`-shm` files it
cannot open. So the daemon listens on a Unix socket (`[admin] socket`, mode 0660, in
a directory of its own) and runs ops there, over its own open store and audit trail.

Who may: the kernel tells us the peer's uid (`SO_PEERCRED`, not forgeable); uid 0 and
the daemon's own uid are served, anyone else (a member of the socket's group, say) is
refused, and the refusal audited (uid only) through `record_repeated`, so a loop of
attempts costs two entries per window. The actor recorded for what an op changes is
`console:<user name of that uid>`.

Protocol: one JSON line from the client, `{"op": name, "args": {...}, "actor": ...}`
(the claimed actor is not believed: the peer's uid names it). Then JSON lines from the
daemon, in order: `{"out": line}` (stdout), `{"err": line}` (stderr),
`{"progress": [done, total, what]}` (dropped when the client reads slowly), and last
`{"exit": n}`, or `{"error": {"code", "message"}}` if the op could not run. A client
that goes away does not stop its op (ops are built to finish or resume, not to be cut
mid-way); what it would have printed is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import socket
import stat
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from gateway.ops import registry
from gateway.startup import StartupFault

if TYPE_CHECKING:
    from gateway.app import Gateway

log = structlog.get_logger("smsgw.ops.socket")

MAX_REQUEST = 64 * 1024  # bytes in the request line (args hold a password at most)
REQUEST_SECONDS = 10.0  # a client that connects must send its request within this
DRAIN_SECONDS = 10.0  # at shutdown, how long running ops get before they are cancelled
PROGRESS_BACKLOG = 64 * 1024  # unread bytes beyond which progress lines are dropped
_PEERCRED = struct.Struct("3i")  # pid, uid, gid
SUN_PATH_MAX = 107  # sockaddr_un.sun_path holds 108 bytes with the final NUL


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid{uid}"


def peer_uid(sock: socket.socket) -> int:
    _, uid, _ = _PEERCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    )
    return int(uid)


@contextlib.contextmanager
def reachable(path: Path) -> Iterator[str]:
    """A name for `path` short enough for `sun_path`: itself, or the same file through
    an open descriptor of its directory (`/proc/self/fd/N/name`) when it is too long."""
    if len(os.fsencode(path)) <= SUN_PATH_MAX:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


class AdminSocket:
    def __init__(self, gateway: Gateway, master_key: bytes) -> None:
        self._gateway = gateway
        self._key = master_key
        self.path = gateway.config.admin_socket_path
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task[Any]] = set()
        self._inode: int | None = None

    async def start(self) -> None:
        path = self.path
        try:
            if not path.parent.exists():
                path.parent.mkdir(parents=True)
                path.parent.chmod(0o750)  # the umask (0077) would leave the group out
            self._clear_stale(path)
            # The process umask (0077) makes the socket 0600 at bind; it is opened to
            # the group only after, so it is never wider than 0660.
            with reachable(path) as name:
                self._server = await asyncio.start_unix_server(
                    self._client, path=name, limit=MAX_REQUEST
                )
            os.chmod(path, 0o660)
            self._inode = path.stat().st_ino
        except OSError as e:
            raise StartupFault(
                f"admin.socket: cannot listen on {path} ({e.strerror or e})", 2
            ) from None
        log.info("admin_socket_listening", path=str(path))

    def _clear_stale(self, path: Path) -> None:
        """Remove a socket file a killed daemon left; refuse one another daemon serves."""
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise StartupFault(f"admin.socket: {path} exists and is not a socket", 2)
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with reachable(path) as name:
                probe.connect(name)
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)
            return
        finally:
            probe.close()
        raise StartupFault(
            f"admin.socket: {path} is served by another running smsgw; give each its own", 2
        )

    async def close(self) -> None:
        """Stop accepting, give running ops `DRAIN_SECONDS`, cancel the rest, remove the file."""
        if self._server is None:
            return
        self._server.close()
        self._server = None
        if self._clients:
            _, late = await asyncio.wait(set(self._clients), timeout=DRAIN_SECONDS)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        with contextlib.suppress(FileNotFoundError):
            if self.path.stat().st_ino == self._inode:
                self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            await self._answer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; the op (if any) has finished
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        uid = peer_uid(writer.get_extra_info("socket"))
        actor = f"console:{user_name(uid)}"
        if uid not in (0, os.getuid()):
            log.warning("admin_socket_refused", uid=uid)
            await self._gateway.audit.record_repeated(
                self._gateway.config.admin.failure_audit_window,
                actor,
                "admin_socket_refused",
                "socket",
                None,
                uid=uid,
            )
            await _send(
                writer,
                _error(
                    "forbidden",
                    "this user may not run commands in the service: only root and the"
                    " service's user may",
                ),
            )
            return
        request = await self._request(reader)
        if isinstance(request, str):
            await _send(writer, _error("bad_request", request))
            return
        name, args = request
        try:
            found = registry.lookup(name)
        except KeyError:
            await _send(writer, _error("unknown_op", f"this smsgw has no command {name}"))
            return
        if found.offline_only or not found.needs_store:
            await _send(
                writer,
                _error(
                    "offline_only",
                    f"{name} runs only with the service stopped: stop it (systemctl stop"
                    " smsgw), then run the command again",
                ),
            )
            return
        await self._run(writer, name, args, actor)

    async def _request(self, reader: asyncio.StreamReader) -> tuple[str, dict[str, Any]] | str:
        """(op, args), or why the request line is not one."""
        try:
            async with asyncio.timeout(REQUEST_SECONDS):
                line = await reader.readline()
        except TimeoutError:
            return "no request line"
        except ValueError:  # longer than the stream's limit
            return f"request longer than {MAX_REQUEST} bytes"
        try:
            request = json.loads(line)
        except ValueError:
            return "the request is not one JSON line"
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            return 'expected {"op": name, "args": {...}}'
        args = request.get("args", {})
        if not isinstance(args, dict):
            return "args: expected an object"
        return request["op"], args

    async def _run(
        self, writer: asyncio.StreamWriter, name: str, args: dict[str, Any], actor: str
    ) -> None:
        def emit(message: dict[str, Any]) -> None:
            if not writer.is_closing():
                writer.write(json.dumps(message).encode() + b"\n")

        def progress(done: int, total: int, what: str) -> None:
            transport = writer.transport
            if not writer.is_closing() and transport.get_write_buffer_size() < PROGRESS_BACKLOG:
                emit({"progress": [done, total, what]})

        gateway = self._gateway
        log.info("admin_op_started", op=name, actor=actor)
        try:
            code = await registry.run_in(
                gateway.config,
                gateway.store,
                self._key,
                name,
                args,
                actor=actor,
                out=lambda line: emit({"out": line}),
                err=lambda line: emit({"err": line}),
                progress=progress,
                clock=gateway.clock,
                gateway=gateway,
            )
        except Exception as e:
            # Never the exception's text: an op's arguments may hold a password or PHI.
            log.error("admin_op_failed", op=name, error=type(e).__name__)
            emit(_error("op_failed", f"{name} failed inside the service ({type(e).__name__})"))
        else:
            log.info("admin_op_finished", op=name, actor=actor, exit=code)
            emit({"exit": code})
        with contextlib.suppress(ConnectionError):
            await writer.drain()


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


async def _send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    writer.write(json.dumps(message).encode() + b"\n")
    await writer.drain()
