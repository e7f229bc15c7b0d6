"""A real `smsgw run` for the admin-socket and key-custody tests, and a way to run
console code as another uid (a forked child that drops its ids, as a separate login
would be: the kernel, not the test, tells the daemon who it is).

The daemon's stderr (its JSON log) is read all the time on a thread, so the pipe never
fills and tests can wait on log events.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import site
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gateway.cli import main
from tests.child_log import ChildLog, terminate
from tests.conftest import FAST_PASSWORD_HASH, SMSGW
from tests.ports import free_port

TOKEN_RE = re.compile(r"smsgw_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")
NOBODY = 65534


def init_data_dir(data_dir: Path, extra: str = "") -> Path:
    """`smsgw init` there; a config on a free port, fast password hashing, `extra` added."""
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["init", "--data-dir", str(data_dir)]) == 0
    conf = data_dir / "smsgw.toml"
    text = conf.read_text().replace("127.0.0.1:8080", f"127.0.0.1:{free_port()}")
    fast = "".join(f"{k} = {v}\n" for k, v in FAST_PASSWORD_HASH.items())
    conf.write_text(text + '\n[log]\nformat = "json"\nlevel = "debug"\n\n[admin]\n' + fast + extra)
    return conf


@contextlib.contextmanager
def open_dir(mode: int = 0o755) -> Iterator[Path]:
    """A temporary directory other uids can reach (pytest's own is root's, 0700)."""
    path = Path(tempfile.mkdtemp(prefix="smsgw-sock-"))
    path.chmod(mode)
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=False)  # files of other uids too


class Service:
    """`smsgw run --config CONF` as a child process."""

    def __init__(
        self,
        conf: Path,
        env: dict[str, str] | None = None,
        ready: bool = True,
        uid: int | None = None,
    ) -> None:
        argv, extra = SMSGW, {}
        if uid is not None:  # as that user, with an interpreter it can read
            argv, extra = interpreter_for_others()
        self.proc = subprocess.Popen(
            [*argv, "run", "--config", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **extra, **(env or {})},
            user=uid,
            group=uid,
            extra_groups=[] if uid is not None else None,
        )
        assert self.proc.stderr is not None
        self.log = ChildLog(self.proc.stderr)
        if ready:
            self.wait_log(lambda e: e.get("event") == "listening")

    def wait_log(self, predicate: Callable[[dict[str, Any]], bool], limit: float = 30) -> None:
        """Until a log event (after those already matched) satisfies `predicate`."""
        self.log.wait(predicate, limit)

    def exit_code(self, limit: float = 60) -> int:
        """Wait for the process to end by itself."""
        code = self.proc.wait(limit)
        self.log.close()
        return code

    def stderr(self) -> str:
        return self.log.text()

    def stop(self) -> str:
        terminate(self.proc, 30)
        self.log.close()
        return self.stderr()


def interpreter_for_others() -> tuple[list[str], dict[str, str]]:
    """`smsgw` as another uid would run it: an interpreter of this version that others
    can execute (this one may sit in root's 0700 home, as pyenv's does), with this
    checkout and the venv's packages on its path."""
    candidates = [Path(sys.executable).resolve(), Path(f"/usr/bin/python3.{sys.version_info[1]}")]
    for python in candidates:
        if python.exists() and all(p.stat().st_mode & 0o001 for p in python.parents):
            paths = [str(Path(__file__).resolve().parent.parent), *site.getsitepackages()]
            return [str(python), "-m", "gateway.cli"], {"PYTHONPATH": ":".join(paths)}
    raise FileNotFoundError(f"no Python 3.{sys.version_info[1]} that other users can run")


@contextlib.contextmanager
def running(
    conf: Path, env: dict[str, str] | None = None, uid: int | None = None
) -> Iterator[Service]:
    service = Service(conf, env, uid=uid)
    try:
        yield service
    finally:
        service.stop()


def as_user(
    work: Callable[[], int], uid: int, gid: int, groups: tuple[int, ...] = ()
) -> tuple[int, str, str]:
    """Run `work` in a forked child that has become uid/gid (with these supplementary
    groups); its exit code, stdout and stderr. Everything `work` needs must be imported
    already: the child may not read root's interpreter files."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 70
            try:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
                sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
                os.setgroups(list(groups))
                os.setgid(gid)
                os.setuid(uid)
                code = work()
            except BaseException as e:  # the child must end here, whatever happened
                print(f"child failed: {type(e).__name__}: {e}", file=sys.stderr)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        out.seek(0)
        err.seek(0)
        return os.waitstatus_to_exitcode(status), out.read().decode(), err.read().decode()


def owners(directory: Path) -> dict[str, int]:
    """Every file's owner uid, by name, under `directory`."""
    return {str(p.relative_to(directory)): p.lstat().st_uid for p in directory.rglob("*")}
