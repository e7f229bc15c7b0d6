"""The stop of `smsgw run` cannot hang: steps bounded and never raising, the store closed
whatever failed before it, and a deadline that ends a process stuck at exit, loudly.

The hang itself, reproduced: a real `smsgw run` whose stderr reader went away raised
BrokenPipeError from a log call inside its stop, skipped the store's close, and then
waited for ever for the store's (non-daemon) reader threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import urllib.request
from pathlib import Path

from gateway.app import Gateway
from gateway.cli import main
from gateway.shutdown import EXIT_STOP_OVERDUE, StopSteps
from tests.conftest import SMSGW, TEST_CONSENT_TOML, GatewayFactory
from tests.ports import free_port
from tests.test_cli import TOKEN_RE

EXIT_BOUND = 15.0


async def test_a_failing_or_overrunning_step_does_not_keep_the_next_from_running() -> None:
    ran: list[str] = []
    heard: list[str] = []
    steps = StopSteps(heard.append)

    async def fails() -> None:
        ran.append("fails")
        raise BrokenPipeError

    async def hangs() -> None:
        ran.append("hangs")
        await asyncio.Event().wait()

    async def closes() -> None:
        ran.append("closes")

    await steps.run("first", fails)
    await steps.run("second", hangs, limit=0.05)
    await steps.run("store", closes)
    assert ran == ["fails", "hangs", "closes"]
    assert heard == ["first", "second", "store"]
    assert steps.failed == ["first", "second"]


async def test_gateway_stop_closes_the_store_when_an_earlier_step_fails(
    open_gateway: GatewayFactory,
) -> None:
    before = set(threading.enumerate())
    gw: Gateway = await open_gateway()
    store_threads = [t for t in threading.enumerate() if t not in before and not t.daemon]
    assert store_threads, "the store's reader and writer threads"

    async def http_server_breaks() -> None:
        raise BrokenPipeError

    failed = await gw.stop(before_store_close=http_server_breaks)
    assert failed == ["http server"]
    for thread in store_threads:
        thread.join(EXIT_BOUND)
        assert not thread.is_alive(), f"{thread.name} still running: the store was not closed"


def test_a_process_stuck_at_exit_is_ended_loudly_by_the_deadline() -> None:
    script = textwrap.dedent(
        """
        import threading
        from gateway.shutdown import StopDeadline
        deadline = StopDeadline(0.5)
        deadline.phase("closing the widget")
        deadline.arm()
        threading.Thread(target=threading.Event().wait, name="stuck-worker").start()
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=EXIT_BOUND
    )
    assert proc.returncode == EXIT_STOP_OVERDUE
    assert "shutdown did not finish within 0.5 s" in proc.stderr
    assert "at: closing the widget" in proc.stderr and "stuck-worker" in proc.stderr


def test_deadline_is_dropped_once_no_thread_is_left_to_wait_for() -> None:
    """A process that goes on after a clean stop (a test calling `main`) is not ended."""
    script = textwrap.dedent(
        """
        from gateway.shutdown import StopDeadline
        deadline = StopDeadline(0.5)
        deadline.arm()
        assert deadline.disarm_if_nothing_can_hang()
        deadline.thread.join(10)
        assert not deadline.thread.is_alive()
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=EXIT_BOUND
    )
    assert proc.returncode == 0, proc.stderr


def _daemon_config(tmp_path: Path) -> tuple[Path, str, int]:
    port = free_port()
    conf = tmp_path / "smsgw.toml"
    conf.write_text(
        f'data_dir = "{tmp_path}"\n\n[http]\nlisten = "127.0.0.1:{port}"\nshutdown_grace = 2.0\n'
        '\n[demo]\npeers = true\n\n[log]\nformat = "json"\nlevel = "debug"\n' + TEST_CONSENT_TOML
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["init", "--data-dir", str(tmp_path)]) == 0
    (token,) = TOKEN_RE.findall(out.getvalue())
    return conf, token, port


def test_sigterm_after_the_log_reader_went_away_still_exits_cleanly(tmp_path: Path) -> None:
    conf, token, port = _daemon_config(tmp_path)
    proc = subprocess.Popen(
        [*SMSGW, "run", "--config", str(conf)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stderr is not None and proc.stdout is not None
        for raw in proc.stderr:
            with contextlib.suppress(json.JSONDecodeError):
                if json.loads(raw).get("event") == "listening":
                    break
        else:
            raise AssertionError("the daemon exited before listening")
        # Whatever read its log is gone: every log line from here on hits a closed pipe.
        proc.stderr.close()
        proc.stdout.close()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/messages",
            data=json.dumps({"to": "+12025550123", "body": "hello", "route": "smsc-sim"}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=EXIT_BOUND) as resp:  # noqa: S310
            assert resp.status == 202, "a send must not fail because the log cannot be written"
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(EXIT_BOUND)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit {EXIT_BOUND} s after SIGTERM") from None
        assert code == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
