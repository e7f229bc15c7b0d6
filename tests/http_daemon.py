"""A real `smsgw run` for the HTTP hardening tests, driven from plain (blocking) sockets.

The daemon's stderr (its JSON log, and anything else written there) is read all the
time on a thread, so the pipe never fills and tests can wait on log events and scan
the whole of it for canaries.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import resource
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gateway.cli import main
from tests.child_log import ChildLog, terminate
from tests.conftest import SMSGW
from tests.ports import free_port

TOKEN_RE = re.compile(r"smsgw_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")


class Daemon:
    def __init__(self, tmp_path: Path, http: str = "", nofile: int | None = None) -> None:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["init", "--data-dir", str(tmp_path)]) == 0
        tokens = TOKEN_RE.findall(out.getvalue())
        assert len(tokens) == 1
        self.token = tokens[0]
        self.port = free_port()
        conf = tmp_path / "smsgw.toml"
        conf.write_text(
            f'data_dir = "{tmp_path}"\n\n[http]\nlisten = "127.0.0.1:{self.port}"\n{http}\n'
            '[log]\nformat = "json"\nlevel = "debug"\n\n'
            '[[routes]]\nname = "demo"\ntype = "loopback"\nreceipt_delay = 0.2\n'
        )

        self._nofile = nofile
        self.proc = self.launch(conf)
        assert self.proc.stderr is not None
        self.log = ChildLog(self.proc.stderr)
        self.wait_log(lambda e: e.get("event") == "listening")

    def command(self, conf: Path) -> list[str]:
        return [*SMSGW, "run", "--config", str(conf)]

    def launch(self, conf: Path) -> subprocess.Popen[bytes]:
        """Start the daemon (a subclass may start it another way: in its own mounts)."""
        nofile = self._nofile

        def lower_open_files() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        return subprocess.Popen(
            self.command(conf),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=lower_open_files,
        )

    def wait_log(self, predicate: Callable[[dict[str, Any]], bool], limit: float = 20) -> None:
        """Until a log event (after those already matched) satisfies `predicate`."""
        self.log.wait(predicate, limit)

    def stderr(self) -> str:
        return self.log.text()

    def stop(self) -> str:
        terminate(self.proc, 20)
        self.log.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.stderr()


@contextlib.contextmanager
def running(tmp_path: Path, http: str = "", nofile: int | None = None) -> Iterator[Daemon]:
    daemon = Daemon(tmp_path, http, nofile)
    try:
        yield daemon
    finally:
        daemon.stop()


def exchange(port: int, raw: bytes, source: str = "127.0.0.1", timeout: float = 20) -> bytes:
    """Send `raw` on a new connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout, (source, 0)) as s:
        s.sendall(raw)
        return read_to_close(s)


def read_to_close(s: socket.socket) -> bytes:
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body
