"""`smsgw demo-cluster` (`make cluster-demo`): two nodes on one machine, for a newcomer.

What docs/ops/cluster.md ("A two-node set-up on one machine") sets up by hand, in one
command and throwaway: a PostgreSQL of its own (`gateway/cluster/throwaway_pg.py`,
Debian's programs), the SMSC simulator in this process (its submit log tells the nodes
apart by their binds' system_type), and two `smsgw run` children sharing both. Node 1's
data directory is made by `smsgw init` and a first panel admin by `smsgw user add` (both
run in this process, while PostgreSQL starts), then copied for node 2 (one keyring, one
token table), as the docs say. Their route sends on one carrier account whose rate the
cluster shares, with short leases, so a node frozen (`kill -STOP`) or killed (`kill -9`)
shows the other taking its queue within seconds.

The children run in sessions of their own: a Ctrl-C in the terminal reaches only this
program, which then prints the carrier's record (gateway/cluster_demo_report.py),
stops the nodes (SIGTERM), the simulator and PostgreSQL, and removes the temporary
directories (unless `--keep`). The nodes' logs go to `node.log` in their directories.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import secrets
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psycopg

from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from gateway import logs
from gateway.cluster.throwaway_pg import MISSING, ThrowawayPostgres, find_bindir
from gateway.cluster_demo_report import ROUTE, Accepted, carrier_record

SMSGW = (sys.executable, "-m", "gateway.cli")
TOKEN_RE = re.compile(r"smsgw_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")
NAMES = ("gw1", "gw2")
PANEL_ADMIN = "admin"
RATE, BURST = 20, 5  # the shared carrier account: submits a second across the nodes
START_LIMIT = 90.0  # seconds a node gets to answer its health check
STOP_LIMIT = 30.0


@dataclass
class DemoNode:
    name: str
    listen: str
    data: Path
    proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://{self.listen}"

    @property
    def config(self) -> Path:
        return self.data / "smsgw.toml"


def run(listens: list[str], keep: bool, stop_after: float | None) -> int:
    """`smsgw demo-cluster` (gateway/cluster_demo_cmd.py): the exit code."""
    bindir = find_bindir()
    if bindir is None:
        print(f"smsgw demo-cluster: {MISSING}", file=sys.stderr)
        return 2
    logs.configure("auto", "warning")  # the simulator's connection lines would bury the text
    return asyncio.run(ClusterDemo(bindir, listens, keep).run(stop_after))


class ClusterDemo:
    def __init__(self, bindir: Path, listens: list[str], keep: bool) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="smsgw-cluster-demo-"))
        self.pg = ThrowawayPostgres(bindir)
        self.keep = keep
        self.nodes = [
            DemoNode(n, lst, self.root / n) for n, lst in zip(NAMES, listens, strict=True)
        ]
        self.smsc = SmscSimulator(
            SimulatorConfig(system_id="smsgw", password=secrets.token_hex(4), receipt_delay=1.0)
        )
        self.dsn = ""

    async def run(self, stop_after: float | None) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        code = 0
        try:
            token, password = await self._start()
            self._welcome(token, password)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), stop_after)
            print("\nstopping...", flush=True)
            await self._report()
        except DemoFailed as e:
            print(f"smsgw demo-cluster: {e}", file=sys.stderr)
            code = 1
        finally:
            failed = await self._stop()
        return code or failed

    async def _start(self) -> tuple[str, str]:
        print("starting a throwaway PostgreSQL and making the nodes' data...", flush=True)
        started, made = await asyncio.gather(
            asyncio.to_thread(self.pg.start), asyncio.to_thread(self._init_data),
            return_exceptions=True,
        )  # fmt: skip
        for outcome in (started, made):
            if isinstance(outcome, RuntimeError | DemoFailed):
                raise DemoFailed(str(outcome)) from None
            if isinstance(outcome, BaseException):
                raise outcome
        assert isinstance(made, tuple)
        async with await psycopg.AsyncConnection.connect(self.pg.dsn(), autocommit=True) as c:
            await c.execute("CREATE DATABASE smsgw")
        self.dsn = self.pg.dsn("smsgw")
        await self.smsc.start()
        for node in self.nodes:
            node.config.write_text(self._config(node))
        print("starting the two nodes...", flush=True)
        await asyncio.gather(*(self._start_node(n) for n in self.nodes))
        return made

    def _init_data(self) -> tuple[str, str]:
        """Node 1's data (`smsgw init`, a panel admin with `smsgw user add`), copied for
        node 2; the API token and the admin's password. Run here, not as children: a
        second interpreter's start-up is seconds on a small machine."""
        first = self.nodes[0]
        (token,) = TOKEN_RE.findall(_smsgw("init", "--data-dir", str(first.data)))
        password = secrets.token_urlsafe(12)
        secret = self.root / "panel.pass"
        secret.write_text(password + "\n")
        try:
            _smsgw(
                "user", "add", "--config", str(first.config), "--role", "admin",
                "--password-file", str(secret), PANEL_ADMIN,
            )  # fmt: skip
        finally:
            secret.unlink()
        for node in self.nodes[1:]:
            shutil.copytree(first.data, node.data)
        return token, password

    def _config(self, node: DemoNode) -> str:
        return (
            f'data_dir = "{node.data}"\n\n'
            f'[http]\nlisten = "{node.listen}"\nshutdown_grace = 1.0\n\n'
            '[log]\nformat = "json"\nlevel = "info"\n\n'
            '[consent]\ndefault_purpose = "informational"\n\n'
            # A demo runs at any hour: its sends go now, not at 08:00 in the recipient's
            # time zone (a site keeps its purposes' windows).
            '[consent.purposes.informational]\nwindow = ""\n\n'
            f'[cluster]\nenabled = true\nnode_id = "{node.name}"\nconninfo = "{self.dsn}"\n'
            "lease_seconds = 6\nmargin_seconds = 2\nheartbeat_seconds = 1\n\n"
            f'[[cluster.accounts]]\nname = "acme"\nrate = {RATE}\nburst = {BURST}\n\n'
            f'[[routes]]\nname = "{ROUTE}"\ntype = "smpp"\nhost = "127.0.0.1"\n'
            f'port = {self.smsc.port}\nsystem_id = "smsgw"\n'
            f'password = "{self.smsc.config.password}"\nsystem_type = "{node.name}"\n'
            'account = "acme"\nreconnect_min = 0.2\nreconnect_max = 2.0\n'
        )

    async def _start_node(self, node: DemoNode) -> None:
        with (node.data / "node.log").open("ab") as log:
            node.proc = await asyncio.create_subprocess_exec(
                *SMSGW, "run", "--config", str(node.config),
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True,  # Ctrl-C is ours to pass on, in order
            )  # fmt: skip
        async with aiohttp.ClientSession() as http:
            for _ in range(int(START_LIMIT / 0.25)):
                if node.proc.returncode is not None:
                    tail = (node.data / "node.log").read_text(errors="replace")[-3000:]
                    raise DemoFailed(f"{node.name} exited ({node.proc.returncode}):\n{tail}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{node.url}/api/v1/healthz") as r:
                        if r.status == 200:
                            return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(node.proc.wait(), 0.25)
        raise DemoFailed(f"{node.name} did not answer on {node.url} within {START_LIMIT:g} s")

    def _welcome(self, token: str, password: str) -> None:
        n1, n2 = self.nodes
        assert n1.proc is not None and n2.proc is not None
        auth = '-H "Authorization: Bearer $TOKEN"'
        print(
            f"""
Two smsgw nodes share one PostgreSQL queue and one simulated carrier:

  {n1.name}  {n1.url}  (pid {n1.proc.pid})
  {n2.name}  {n2.url}  (pid {n2.proc.pid})
  PostgreSQL  {self.dsn}
  SMSC simulator  127.0.0.1:{self.smsc.port}, one carrier account, {RATE} submits/s shared

The API token, for both nodes (shown only now): paste this line in another terminal

  TOKEN={token}

Admin panel, on either node: {n1.url}/login and {n2.url}/login,
user {PANEL_ADMIN}, password {password}  (the Cluster page lists the nodes)

Try:

  # a send through either node (whichever claims it first sends it), and the nodes
  curl -s -X POST {n1.url}/api/v1/messages {auth} \\
    -d '{{"to": "+12025550123", "body": "Your results are ready (1)."}}'
  curl -s -X POST {n2.url}/api/v1/messages {auth} \\
    -d '{{"to": "+12025550124", "body": "Your results are ready (2)."}}'
  curl -s {n2.url}/api/v1/cluster {auth}

  # a node frozen, as if cut off: stop node 1 for 15 s; node 2 takes the queue once
  # node 1's lease lapses, and node 1, thawed, finds its lease gone and fences itself
  # (no submit on a lost claim), then rejoins as a new incarnation
  kill -STOP {n1.proc.pid}; sleep 15; kill -CONT {n1.proc.pid}

  # a node killed under load: 300 messages to node 1, then kill -9 node 2 at once;
  # node 2's lease lapses in a few seconds and node 1 takes its queue and its
  # in-flight messages (resent, flagged possible_duplicate)
  python3 -c 'import json; print(json.dumps({{"messages": [{{"to": f"+1202555{{i:04d}}",
    "body": f"Reminder {{i}}"}} for i in range(300)]}}))' |
    curl -s -o /dev/null -w '%{{http_code}}\\n' -X POST {n1.url}/api/v1/messages/batch {auth} -d @-
  kill -9 {n2.proc.pid}
  curl -s {n1.url}/api/v1/cluster {auth}

Ctrl-C stops everything and prints the carrier's record: the submits of each node,
the messages accepted, and any message the carrier got twice (with its flag).
The nodes' data and logs: {self.root}, PostgreSQL's: {self.pg.root}
({"kept" if self.keep else "removed"} at the end).
""",
            flush=True,
        )

    async def _report(self) -> None:
        try:
            async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as c:
                rows = await (
                    await c.execute("SELECT id, state, segments, possible_duplicate FROM messages")
                ).fetchall()
                ids = await (
                    await c.execute(
                        "SELECT carrier_id, message_id FROM carrier_ids WHERE route = %s",
                        (ROUTE,),
                    )
                ).fetchall()
        except psycopg.Error as e:
            print(f"the carrier's record: the database cannot be read ({type(e).__name__})")
            return
        record = carrier_record(
            [Accepted(*row) for row in rows],
            dict(ids),
            list(self.smsc.submitted),
            list(self.smsc.submit_log),
        )
        print("\n".join(record.lines(RATE)), flush=True)

    async def _stop(self) -> int:
        """Nodes first (they drain into the simulator and the database), then the
        simulator and PostgreSQL; 1 when a node had to be killed."""
        failed = 0
        for node in self.nodes:
            if node.proc is not None and node.proc.returncode is None:
                node.proc.send_signal(signal.SIGCONT)  # one frozen by hand (kill -STOP)
                node.proc.terminate()
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                await asyncio.wait_for(node.proc.wait(), STOP_LIMIT)
            except TimeoutError:
                node.proc.kill()
                await node.proc.wait()
                failed = 1
            if node.proc.returncode not in (0, -signal.SIGKILL):
                failed = 1  # a node killed by hand (kill -9) is the demo, not a fault
        with contextlib.suppress(Exception):
            await self.smsc.aclose()
        await asyncio.to_thread(self.pg.stop, remove=not self.keep)
        if self.keep:
            print(f"kept: {self.root} (nodes) and {self.pg.root} (PostgreSQL, stopped)")
        else:
            shutil.rmtree(self.root, ignore_errors=True)
        return failed


class DemoFailed(Exception):
    pass


def _smsgw(*args: str) -> str:
    """`smsgw ARGS` in this process (on a thread of its own: it runs its own event
    loop); what it printed."""
    from gateway.cli import main  # the command line imports this module

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    if code != 0:
        raise DemoFailed(f"smsgw {args[0]} {args[1]} failed: {err.getvalue()}{out.getvalue()}")
    return out.getvalue()
