"""The console side of an op: `run(config, name, args)`.

If the service answers on its admin socket, the op runs there (the only way on a
TPM-sealed install) and its lines are copied to stdout and stderr, its progress to one
`ProgressLine`. If nothing answers, the op runs here, against the data directory. Run
as root over a data directory that belongs to the service's user, it runs in a child
that has become that user first, so every file SQLite creates (`-wal`, `-shm`, the
database) belongs to the service and it can open them at its next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import socket
import sys
from pathlib import Path
from typing import Any

from gateway import custody
from gateway.config import Config
from gateway.ops import registry
from gateway.ops.socket import reachable, user_name
from gateway.progress import ProgressLine
from gateway.store import crypto
from gateway.store.store import Store

CONNECT_SECONDS = 5.0


class NotServed(Exception):
    """No service answers on the admin socket (none runs, or a killed one's file)."""


def run(config: Config, name: str, args: dict[str, Any], *, key: bytes | None = None) -> int:
    """Run op `name` in the running service if there is one, else here; its exit code.
    `key`: the master key when the caller holds it already (else read, or unlocked)."""
    try:
        return run_remote(config, name, args)
    except NotServed:
        return run_here(config, name, args, key=key)
    except PermissionError:
        problem = "is not open to this user; run the command as root or as the service's user"
    except TimeoutError:
        problem = f"takes no connection within {CONNECT_SECONDS:g} s; is the service hung?"
    print(
        f"smsgw: the service's admin socket {config.admin_socket_path} {problem}", file=sys.stderr
    )
    return 2


def run_remote(config: Config, name: str, args: dict[str, Any]) -> int:
    """Run op `name` through the admin socket; `NotServed` if nothing listens there."""
    path = config.admin_socket_path
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_SECONDS)
        try:
            with reachable(path) as address:
                sock.connect(address)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            raise NotServed from None
        sock.settimeout(None)  # an op (a backup) may take long; the daemon ends it
        actor = f"console:{user_name(os.getuid())}"
        # The service may refuse this caller and close before reading the request: its
        # answer saying why is still there to read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(json.dumps({"op": name, "args": args, "actor": actor}).encode() + b"\n")
        return _follow(sock.makefile("rb"), f"the service stopped before {name} finished")
    finally:
        sock.close()


def _lines(stream: Any) -> Any:
    """The stream's lines, ending (not raising) when the other side resets it."""
    try:
        yield from stream
    except ConnectionError:
        return


def _follow(lines: Any, gone: str) -> int:
    progress = ProgressLine()
    try:
        for raw in _lines(lines):
            message = json.loads(raw)
            if "out" in message:
                print(message["out"], flush=True)
            elif "err" in message:
                print(message["err"], file=sys.stderr, flush=True)
            elif "progress" in message:
                progress(*message["progress"])
            elif "exit" in message:
                return int(message["exit"])
            elif "error" in message:
                progress.close()
                print(f"smsgw: {message['error']['message']}", file=sys.stderr)
                return 2
    finally:
        progress.close()
    print(f"smsgw: {gone}", file=sys.stderr)
    return 1


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


# -- no service running: here ------------------------------------------------------------


def run_here(config: Config, name: str, args: dict[str, Any], *, key: bytes | None = None) -> int:
    """Run op `name` in this process, as the data directory's owner when we are root."""
    owner = _owner(config.data_dir)
    if os.geteuid() == 0 and owner is not None and owner[0] != 0:
        return _as_owner(config, name, args, owner, key)
    return _local(config, name, args, key=key)


def _owner(data_dir: str) -> tuple[int, int] | None:
    try:
        st = Path(data_dir).stat()
    except FileNotFoundError:
        return None
    return st.st_uid, st.st_gid


def _as_owner(
    config: Config, name: str, args: dict[str, Any], owner: tuple[int, int], key: bytes | None
) -> int:
    """Fork; the child drops to `owner` (groups, gid, then uid) and runs the op, sending
    its lines back over a pipe as the admin socket would."""
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        os.close(read_end)
        pipe = os.fdopen(write_end, "wb")

        def emit(message: dict[str, Any]) -> None:
            pipe.write(json.dumps(message).encode() + b"\n")
            pipe.flush()

        try:
            uid, gid = owner
            os.setgroups(_groups(uid, gid))
            os.setgid(gid)
            os.setuid(uid)
            code = _local(
                config,
                name,
                args,
                out=lambda line: emit({"out": line}),
                err=lambda line: emit({"err": line}),
                progress=lambda done, total, what: emit({"progress": [done, total, what]}),
                key=key,
            )
            emit({"exit": code})
        except crypto.MasterKeyError as e:
            emit({"error": {"code": "master_key", "message": str(e)}})
        except BaseException as e:  # the child must end here (os._exit), never return
            emit({"error": {"code": "op_failed", "message": f"{name} failed: {type(e).__name__}"}})
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as lines:
        code = _follow(lines, f"{name} ended before it finished (as uid {owner[0]})")
    os.waitpid(pid, 0)
    return code


def _groups(uid: int, gid: int) -> list[int]:
    try:
        return os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)
    except KeyError:
        return [gid]


def _local(
    config: Config,
    name: str,
    args: dict[str, Any],
    *,
    out: registry.Out = print,
    err: registry.Out = _to_stderr,
    progress: registry.Progress | None = None,
    key: bytes | None = None,
) -> int:
    try:
        key = key or custody.load_master_key(config)
    except crypto.MasterKeyError as e:
        raise crypto.MasterKeyError(
            f"{e}; and no smsgw service answers on {config.admin_socket_path}. Start the"
            " service (systemctl start smsgw) and run the command again, or make the key"
            " readable here (mount its media, or `smsgw keys unprotect`; see"
            " docs/ops/key-custody.md)"
        ) from None

    async def go() -> int:
        store = Store(config.db_path, key, synchronous=config.store.synchronous)
        await store.open()
        try:
            return await registry.run_in(
                config, store, key, name, args, actor="console", out=out, err=err, progress=shown
            )
        finally:
            await store.close()

    if not registry.lookup(name).needs_store:
        raise ValueError(f"op {name} opens no store: call its handler's own entry")
    line = ProgressLine()
    shown = line if progress is None else progress
    try:
        return asyncio.run(go())
    finally:
        line.close()
