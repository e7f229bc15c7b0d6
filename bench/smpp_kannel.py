"""Kannel in bench/smpp.py: Debian's bearerbox and smsbox configured from
bench/kannel/kannel.conf.template, and the wrk script that sends through sendsms."""

from __future__ import annotations

import asyncio
import shutil
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from string import Template

import aiohttp
import harness
import loadgen
from harness import LOOPBACK, Server
from smpp_parts import SYSTEM_ID, SYSTEM_PASSWORD, WINDOW, Placement, Scenario, System

KANNEL_TEMPLATE = harness.BENCH_DIR / "kannel" / "kannel.conf.template"
KANNEL_USER, KANNEL_PASSWORD = "bench", "benchpw"


_KANNEL_LUA = Template(r"""
wrk.method = "GET"
local base = "$base"
local quota = $quota
$report
function request()
  return wrk.format(nil, base .. string.format("%04d", math.random(0, $last)))
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
    messages = messages + 1
  else
    bad = bad + 1
  end
  if quota > 0 and messages >= quota then wrk.thread:stop() end
end
""")


def kannel_script(path: Path, *, receipts: bool, quota: int, dlr_url: str | None = None) -> Path:
    """GET /cgi-bin/sendsms with the URL-encoded 160-character body (and dlr-mask=1 when
    receipts are wanted, with `dlr_url` where smsbox forwards each one); the recipient's
    last four digits are drawn per request (the same range as smsgw's script)."""
    params = {"username": KANNEL_USER, "password": KANNEL_PASSWORD, "text": loadgen.BODY_160_GSM}
    if receipts:
        params["dlr-mask"] = "1"
        if dlr_url is not None:
            params["dlr-url"] = dlr_url
    to = urllib.parse.quote(loadgen.RECIPIENT_PREFIX, safe="")
    base = f"/cgi-bin/sendsms?{urllib.parse.urlencode(params)}&to={to}"
    path.write_text(
        _KANNEL_LUA.substitute(
            base=base, last=loadgen.RECIPIENTS - 1, report=loadgen.REPORT_LUA, quota=quota
        )
    )
    return path


@dataclass
class Box(Server):
    """A server that is ready once `ready_url` answers at all (any HTTP status)."""

    ready_url: str = ""

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + harness.READY_TIMEOUT_S
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.returncode is not None:
                    break
                try:
                    timeout = aiohttp.ClientTimeout(total=1)
                    async with session.get(self.ready_url, timeout=timeout):
                        return
                except (aiohttp.ClientError, TimeoutError):
                    await asyncio.sleep(harness.READY_POLL_S)
        await self.stop()
        raise RuntimeError(f"{self.name} did not become ready; see {self.log_path}")


def kannel_binaries() -> tuple[Path, Path] | str:
    """(bearerbox, smsbox), or why Kannel cannot run here."""
    found = []
    for name in ("bearerbox", "smsbox"):
        path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
        if path is None:
            return f"{name} not found: install the Debian package (apt-get install kannel)"
        found.append(Path(path))
    return found[0], found[1]


def kannel_system(
    work: Path,
    sink_port: int,
    placement: Placement,
    scenario: Scenario,
    quota: int,
    dlr_url: str | None = None,
) -> System:
    """`dlr_url`: where smsbox forwards each receipt (the clinical scenario's receiver)."""
    binaries = kannel_binaries()
    if isinstance(binaries, str):
        raise RuntimeError(binaries)
    bearerbox, smsbox = binaries
    work.mkdir(parents=True)
    admin, smsbox_port, sendsms = (harness.free_port() for _ in range(3))
    conf = work / "kannel.conf"
    conf.write_text(
        Template(KANNEL_TEMPLATE.read_text()).substitute(
            admin_port=admin,
            admin_password="bench-admin",  # noqa: S106 - loopback only, per run
            smsbox_port=smsbox_port,
            sendsms_port=sendsms,
            workdir=work,
            username=KANNEL_USER,
            password=KANNEL_PASSWORD,
            smsc_port=sink_port,
            system_id=SYSTEM_ID,
            system_password=SYSTEM_PASSWORD,
            window=WINDOW,
        )
    )
    # -v 2: warnings and worse on the console too; the log files get the same level.
    bb = Box(
        "bearerbox",
        [*placement.server, str(bearerbox), "-v", "2", str(conf)],
        admin,
        work / "bearerbox.out",
        ready_url=f"http://{LOOPBACK}:{admin}/status",
    )
    sb = Box(
        "smsbox",
        [*placement.server, str(smsbox), "-v", "2", str(conf)],
        sendsms,
        work / "smsbox.out",
        ready_url=f"http://{LOOPBACK}:{sendsms}/cgi-bin/sendsms",
    )
    logs_ = [work / n for n in ("bearerbox.out", "smsbox.out", "bearerbox.log", "smsbox.log")]
    script = kannel_script(
        work / "kannel.lua", receipts=scenario.receipts, quota=quota, dlr_url=dlr_url
    )
    return System("kannel", [bb, sb], sb.url, script, logs_)
