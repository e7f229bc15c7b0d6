"""Issue 10 point 23: schemathesis against a live gateway finds nothing.

A real gateway (real clock, a loopback route, dispatch running) serves on an ephemeral
loopback port; schemathesis's CLI, in a subprocess, reads its `openapi.json` and runs
every phase (coverage, fuzzing, and the stateful phase that follows the document's
links from a send to reading and cancelling it) within a time budget. Any failure of
any check — a 5xx, an answer or status the document does not describe, a schema-
invalid request accepted, a valid one refused — fails the test with the report.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from drivers.clock import SystemClock
from gateway.app import Gateway
from gateway.http_app import build_app, runner_options
from gateway.tokens import SCOPES, create_token
from tests.conftest import make_config

HERE = Path(__file__).resolve().parent
# schemathesis's --max-time per run (start-up and report come on top): the stateful
# phase last, on its own.
BUDGETS = {"examples,coverage,fuzzing": 30, "stateful": 15}
ROUTE = {"name": "main", "type": "loopback", "latency": 0.0, "receipt_delay": 0.5}


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """(base URL, a token with every scope) of a gateway serving on loopback."""
    gw = await Gateway.open(make_config(tmp_path, [ROUTE]), SystemClock())
    await gw.start()
    token = await create_token(gw.store, "fuzz", frozenset(SCOPES), gw.clock)
    runner = web.AppRunner(build_app(gw), **runner_options(gw))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}", token.text
    finally:
        await gw.stop(before_store_close=runner.cleanup)


@pytest.mark.timeout(sum(BUDGETS.values()) + 80)
async def test_schemathesis_finds_no_failure(live: tuple[str, str], tmp_path: Path) -> None:
    # The stateful phase has a budget of its own: in one run it comes last, and the
    # fuzzing of 100-odd operations spent the shared budget on a busy machine, so it
    # was skipped (and the links it follows went untested).
    for phases, budget in BUDGETS.items():
        report = await _schemathesis(live, tmp_path, phases, budget)
        # A warning is not a failure. "Authentication failed: 1 operation returned only
        # 401/403" names a different operation each run: the time budget ended that
        # operation's examples while only its unauthenticated probes (the ignored_auth
        # check, which passed) had run. Every check's failure still fails the test.
        lines = report.splitlines()
        checked = "\n".join(line for line in lines if "Authentication failed" not in line)
        assert " failed" not in checked and "errored" not in checked, report[-6000:]
    # The stateful phase ran and followed links from accepted sends to their messages.
    assert re.search(r"Stateful \(in ", report), report[-3000:]
    assert re.search(r"API Links:\s+[1-9]\d* covered", report), report[-3000:]


async def _schemathesis(live: tuple[str, str], cwd: Path, phases: str, budget: int) -> str:
    """One run of the schemathesis CLI over the live gateway: its report."""
    url, token = live
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
        "PYTHONPATH": str(HERE.parent),
        "NO_COLOR": "1",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        f"{url}/api/v1/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--phases",
        phases,
        "--max-examples",
        "25",
        "--max-time",
        str(budget),
        "--workers",
        "1",
        "--request-timeout",
        "10",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=cwd,
        env=env,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), budget + 40)
    report = out.decode(errors="replace")
    assert proc.returncode == 0, report[-6000:]
    return report
