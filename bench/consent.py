"""Accept rate with the consent policy on, against the same run with `[consent] enabled =
false`: 10,000 contacts in the ledger, 1,000 of them opted out, mixed purposes.

    .venv/bin/python bench/consent.py            # 2 alternating pairs, 2 s warm-up, 8 s each
    .venv/bin/python bench/consent.py --quick    # 1 pair, 1 s + 3 s

Each run starts a fresh gateway (`smsgw init`), seeds its ledger with `smsgw consent
import` (the public seam: 1,000 opt-outs of everything, 3,000 written marketing
consents, 6,000 other opt-ins; 10,000 contacts), then `smsgw run` with the route held
(`rate = 0.001`, as bench/accept.py holds it) and the policy switch on or off. wrk
POSTs single sends to random numbers of those 10,000, the purpose cycling through
appointment, results, medication, informational and marketing when the gateway's
OpenAPI document names a `purpose` field (otherwise the sends carry none: the gateway
then measures what it has). Every 2xx counts, `blocked` answers included: a refusal is
an accept decision made. Sending windows are opened to the whole day in both runs so
the figure does not depend on the hour. ratio = median accepts/s with checks on /
median with them off (target >= 0.9); the summary goes to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from string import Template
from typing import Any

import aiohttp
import harness
import loadgen

LATEST = harness.BENCH_DIR / "results" / "consent-latest.json"
TARGET = 0.9
CONTACTS = 10_000
OPTED_OUT = 1_000
MARKETING_CONSENTS = 3_000
PURPOSES = ("appointment", "results", "medication", "informational", "marketing")
CONNECTIONS = 64
HELD = harness.RouteSpec(rate=0.001, burst=1)
RUN_TIMEOUT_S = 900.0

_CONSENT = Template("""
[consent]
enabled = $enabled
$purposes
""")
_OPEN_WINDOW = '[consent.purposes.{name}]\nwindow = ""\n'

_LUA = Template(r"""
wrk.method = "POST"
wrk.path = "/api/v1/messages"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $token"
local text = "$body"
local batch = 0
local quota = 0
local purposes = {$purposes}
local n = 0
$report
function request()
  n = n + 1
  local purpose = ""
  if #purposes > 0 then
    purpose = string.format(',"purpose":"%s"', purposes[(n % #purposes) + 1])
  end
  return wrk.format(nil, nil, nil, string.format(
    '{"to":"$prefix%04d","body":"%s"%s}', math.random(0, $last), text, purpose))
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
    messages = messages + 1
  else
    bad = bad + 1
  end
end
""")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one pair, short windows")
    p.add_argument("--pairs", type=int, help="pairs of runs (default 2; quick 1)")
    p.add_argument("--keep", action="store_true", help="keep the data and logs")
    return p.parse_args(argv)


def seed_list(path: Path) -> Path:
    """The ledger every run starts from: 10,000 contacts, 1,000 opted out."""
    with path.open("w") as f:
        f.write("number,decision,scope,disclosure\n")
        for i in range(CONTACTS):
            number = loadgen.recipient(i)
            if i < OPTED_OUT:
                f.write(f"{number},opt_out,all,\n")
            elif i < OPTED_OUT + MARKETING_CONSENTS:
                f.write(f"{number},opt_in,kind:marketing,Texts about our clinics. Reply STOP\n")
            else:
                f.write(f"{number},opt_in,all,\n")
    return path


async def smsgw(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        *args,
        cwd=harness.REPO,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"smsgw {' '.join(args[:2])} failed: {out.decode()[-2000:]}")
    return out.decode()


async def names_purpose(url: str) -> bool:
    """Whether this gateway's send takes a `purpose` (the policy's accept path)."""
    async with aiohttp.ClientSession() as session, session.get(url + "/api/v1/openapi.json") as r:
        doc = await r.json()
    return "purpose" in doc["components"]["schemas"]["SendRequest"]["properties"]


async def one_run(
    work: Path, listing: Path, enabled: bool, pinning: harness.Pinning, quick: bool
) -> dict[str, Any]:
    home = await harness.init_gateway(work)
    server = harness.gateway_server(home, HELD, pinning, f"consent-{enabled}")
    purposes = "".join(_OPEN_WINDOW.format(name=p) for p in PURPOSES)
    own = _CONSENT.substitute(enabled=str(enabled).lower(), purposes=purposes)
    config = home.config_path.read_text().replace(harness.BENCH_CONSENT, "")
    home.config_path.write_text(config + own)
    t0 = asyncio.get_running_loop().time()
    await smsgw("consent", "import", str(listing), "--config", str(home.config_path))
    seeded_s = asyncio.get_running_loop().time() - t0
    await server.start()
    try:
        with_purpose = await names_purpose(server.url)
        names = ",".join(f'"{p}"' for p in PURPOSES) if with_purpose else ""
        script = work / "send.lua"
        script.write_text(
            _LUA.substitute(
                token=home.token,
                body=loadgen.BODY_160_GSM,
                purposes=names,
                report=loadgen.REPORT_LUA,
                prefix=loadgen.RECIPIENT_PREFIX,
                last=CONTACTS - 1,
            )
        )
        warm, measure = (1, 3) if quick else (2, 8)
        await loadgen.run_wrk(pinning.client, server.url, script, CONNECTIONS, warm)
        before = harness.CpuSnapshot.take(server.pid)
        run = await loadgen.run_wrk(pinning.client, server.url, script, CONNECTIONS, measure)
        cpu = before.until(harness.CpuSnapshot.take(server.pid))
    finally:
        await server.stop()
    blocked = harness.query_one(
        home.db_path, "SELECT count(*) FROM messages WHERE state = 'blocked'"
    )[0]
    result = {
        "checks": enabled,
        "purpose_field": with_purpose,
        "accepts_per_s": round(run.ok_per_s, 1),
        "non_2xx": run.bad,
        "blocked": int(blocked),
        "p50_ms": run.p50_ms,
        "p99_ms": run.p99_ms,
        "server_cpu": round(cpu.utilisation, 2),
        "foreign_cpu_s": round(cpu.foreign_s, 2),
        "seed_import_s": round(seeded_s, 2),
    }
    print(json.dumps(result), flush=True)
    return result


async def run(args: argparse.Namespace, root: Path) -> int:
    pinning = harness.setup_pinning()
    pairs = args.pairs or (1 if args.quick else 2)
    print(f"consent bench: {pairs} pair(s), {CONNECTIONS} connections, {pinning.describe()}")
    listing = seed_list(root / "seed.csv")
    on: list[dict[str, Any]] = []
    off: list[dict[str, Any]] = []
    for i in range(pairs):
        # Alternate which goes first, so a drift of the machine weighs on both.
        order = (True, False) if i % 2 == 0 else (False, True)
        for enabled in order:
            result = await one_run(
                root / f"run{i}-{enabled}", listing, enabled, pinning, args.quick
            )
            (on if enabled else off).append(result)
    rate_on = statistics.median(r["accepts_per_s"] for r in on)
    rate_off = statistics.median(r["accepts_per_s"] for r in off)
    ratio = rate_on / rate_off if rate_off else 0.0
    print(
        f"checks on {rate_on:,.0f}/s, off {rate_off:,.0f}/s: ratio {ratio:.3f} (target >= {TARGET})"
    )
    harness.publish_summary(
        {
            "bench": "consent",
            "contacts": CONTACTS,
            "opted_out": OPTED_OUT,
            "purposes": list(PURPOSES) if on and on[0]["purpose_field"] else None,
            "connections": CONNECTIONS,
            "on_per_s": rate_on,
            "off_per_s": rate_off,
            "ratio": round(ratio, 3),
            "target": TARGET,
            "ok": ratio >= TARGET,
            "runs": on + off,
            "pinning": pinning.describe(),
        },
        LATEST,
    )
    return 0 if ratio >= TARGET else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="smsgw-consent-bench-"))
    return harness.run_bench(lambda: run(args, root), root, args.keep, RUN_TIMEOUT_S)


if __name__ == "__main__":
    sys.exit(main())
