"""wrk as the HTTP load generator: Lua scripts for single and batch sends, and its results.

Each script counts 2xx answers (and, for batches, the `accepted` count in the reply)
in wrk's `response` callback, and its `done` callback prints one `BENCH_JSON` line
with those counts, wrk's error counters and the latency percentiles, so nothing has
to be scraped from wrk's human-readable summary. Recipients are random numbers in
+1 202 555 0000-9999 (all valid for `phonenumbers`), so the gateway parses numbers the
way it would in production rather than hitting its normalisation cache.
"""

from __future__ import annotations

import asyncio
import json
import signal
from dataclasses import dataclass
from pathlib import Path
from string import Template

BODY_160_GSM = (
    "Reminder: your appointment at the outpatient clinic is on Monday at 09:30. Please"
    " bring your ID card and arrive 15 minutes early. Reply STOP to opt out. Thanks!"
)
assert len(BODY_160_GSM) == 160
RECIPIENT_PREFIX = "+1202555"
RECIPIENTS = 10_000  # +1 202 555 0000 .. 9999
WRK_TIMEOUT = "10s"
WRK_GRACE_S = 30.0
_MARK = "BENCH_JSON "


def recipient(i: int) -> str:
    """The i-th number of the range the scripts draw from (all valid for phonenumbers)."""
    return f"{RECIPIENT_PREFIX}{i:04d}"


# Shared by every wrk script here: per-thread counters `ok`, `bad` and `messages` (set
# by each script's `response`), reported as one JSON line after the mark at the end.
REPORT_LUA = (
    r"""
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok = 0
  bad = 0
  messages = 0
  math.randomseed(os.time())
end

function done(summary, latency, requests)
  local ok_all, bad_all, messages_all = 0, 0, 0
  for _, t in ipairs(threads) do
    ok_all = ok_all + t:get("ok")
    bad_all = bad_all + t:get("bad")
    messages_all = messages_all + t:get("messages")
  end
  local e = summary.errors
  io.write(string.format(
    '"""
    + _MARK
    + r"""{"duration_us":%d,"requests":%d,"ok":%d,"bad":%d,"messages":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.duration, summary.requests, ok_all, bad_all, messages_all,
    e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""
)

_LUA = Template(r"""
wrk.method = "POST"
wrk.path = "$path"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $token"
local text = "$body"
local batch = $batch
local quota = $quota  -- stop once this many messages were accepted (0: run for -d)
$report
local function one()
  return string.format('{"to":"$prefix%04d","body":"%s","priority":"$priority"}',
                       math.random(0, $last), text)
end

function request()
  if batch == 0 then
    return wrk.format(nil, nil, nil, one())
  end
  local items = {}
  for i = 1, batch do items[i] = one() end
  return wrk.format(nil, nil, nil, '{"messages":[' .. table.concat(items, ",") .. ']}')
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
    if batch == 0 then
      messages = messages + 1
    else
      messages = messages + (tonumber(string.match(body, '"accepted":(%d+)')) or 0)
    end
  else
    bad = bad + 1
  end
  if quota > 0 and messages >= quota then wrk.thread:stop() end
end
""")


def write_script(
    path: Path,
    token: str,
    *,
    batch: int = 0,
    priority: str = "normal",
    url_path: str = "",
    quota: int = 0,
) -> Path:
    """A wrk script POSTing one message (`batch=0`) or `batch` messages per request;
    with `quota`, its thread stops once that many messages were accepted."""
    default_path = "/api/v1/messages/batch" if batch else "/api/v1/messages"
    path.write_text(
        _LUA.substitute(
            path=url_path or default_path,
            token=token,
            body=BODY_160_GSM,
            batch=batch,
            quota=quota,
            priority=priority,
            report=REPORT_LUA,
            prefix=RECIPIENT_PREFIX,
            last=RECIPIENTS - 1,
        )
    )
    return path


@dataclass(frozen=True, slots=True)
class WrkResult:
    duration_s: float
    requests: int
    ok: int
    bad: int
    messages: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @property
    def ok_per_s(self) -> float:
        return self.ok / self.duration_s

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.duration_s


def parse(output: str) -> WrkResult:
    line = next((x for x in output.splitlines() if x.startswith(_MARK)), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result line:\n{output}")
    raw = json.loads(line[len(_MARK) :])
    return WrkResult(
        duration_s=raw["duration_us"] / 1e6,
        requests=raw["requests"],
        ok=raw["ok"],
        bad=raw["bad"],
        messages=raw["messages"],
        socket_errors=raw["connect"] + raw["read"] + raw["write"] + raw["timeout"],
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        mean_ms=raw["mean_us"] / 1000,
    )


async def run_wrk(
    prefix: tuple[str, ...],
    url: str,
    script: Path,
    connections: int,
    seconds: float,
    stop: asyncio.Event | None = None,
) -> WrkResult:
    """`wrk -t1 -cN -dS --latency` with keep-alive (wrk's default); bounded in time.
    Setting `stop` ends it early (SIGINT: wrk still reports what it did)."""
    argv = [
        *prefix,
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "--timeout",
        WRK_TIMEOUT,
        "-s",
        str(script),
        url,
    ]
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    stopper = asyncio.create_task(_interrupt_when(stop, process))
    try:
        out, _ = await asyncio.wait_for(process.communicate(), seconds + WRK_GRACE_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    finally:
        stopper.cancel()
    return parse(out.decode(errors="replace"))


async def _interrupt_when(stop: asyncio.Event | None, process: asyncio.subprocess.Process) -> None:
    if stop is None:
        return
    await stop.wait()
    if process.returncode is None:
        process.send_signal(signal.SIGINT)
