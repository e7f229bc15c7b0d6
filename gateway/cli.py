"""The `smsgw` command: init, run, send, token, user, audit, keys, consent, doctor."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.metadata
import os
import secrets
import signal
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import structlog
from aiohttp import web

from drivers.clock import AdjustableClock, SystemClock
from gateway import (
    __version__,
    analytics_cmd,
    cluster_demo_cmd,
    consent_cmd,
    custody,
    custody_cmd,
    keys_cmd,
    logs,
    retention_cmd,
    send_cmd,
    store_migrate_cmd,
    systemd,
    tls,
    undecodable_cmd,
)
from gateway import config as config_mod
from gateway import console as commands
from gateway.app import Gateway
from gateway.backup_cmd import add_parser as add_backup_parsers
from gateway.config import Config, ConfigError
from gateway.console import CONSOLE, audit_trail, with_store
from gateway.contacts import ops as contacts_ops
from gateway.demo import DemoPeers, embedded_modems
from gateway.hl7 import send_cmd as hl7_send
from gateway.ops.socket import AdminSocket
from gateway.shutdown import EXIT_STOP_INCOMPLETE, STEP_LIMIT, StopDeadline, stop_limit
from gateway.start_stages import StartStages
from gateway.startup import DataDirLock, Startup, StartupFault, serve_or_explain
from gateway.startup import describe as describe_fault
from gateway.store import crypto
from gateway.store.store import Store
from gateway.table import table
from gateway.tokens import BadScope
from gateway.usecases.tokens import Tokens

if TYPE_CHECKING:
    from drivers.modem.emulator import EmulatedModem
    from drivers.smpp.simulator import SmscSimulator

log = structlog.get_logger("smsgw.cli")
ENV_CONFIG = "SMSGW_CONFIG"

_CONFIG_TEMPLATE = """\
# smsgw configuration, written by `smsgw init`. Every key is documented in
# config/smsgw.example.toml of the smsgw source.
data_dir = "{data_dir}"

[http]
listen = "127.0.0.1:8080"
{tls}
[store]
path = "smsgw.db"
master_key_file = "master.key"   # keep off the data volume in production (see README)
synchronous = "FULL"

[queue]
default_region = "US"

[[routes]]
name = "demo"
type = "loopback"
rate = 50
burst = 10
window = 20
receipt_delay = 2.0
"""


def _load(path: str | None) -> Config:
    path = path or os.environ.get(ENV_CONFIG)
    return config_mod.load(path)


TLS_CERT = "tls/cert.pem"
TLS_KEY = "tls/key.pem"


async def _init_store(config: Config, *, first_token: bool = True) -> str | None:
    """Create key and store if missing; returns a first token if the store was new."""
    key_path = config.master_key_path
    fresh = not config.db_path.exists()
    new_key = False
    if not key_path.exists():
        if not fresh:
            raise crypto.MasterKeyError(
                f"{config.db_path} exists but its master key {key_path} is missing; restore the"
                " key (a new one cannot open existing data)"
            )
        crypto.generate_master_key(key_path)
        new_key = True
    store = Store(
        config.db_path, custody.load_master_key(config), synchronous=config.store.synchronous
    )
    await store.open()
    try:
        audit = audit_trail(store, config)
        if new_key:
            await audit.record(CONSOLE, "master_key_generated", "key", "master")
        if fresh:
            await audit.record(CONSOLE, "store_created", "store", None)
        tokens = Tokens(store=store, audit=audit, clock=SystemClock())
        if first_token and (fresh or not await tokens.list()):
            token = await tokens.create(CONSOLE, "first", frozenset({"send", "read", "admin"}))
            return token.text
        return None
    finally:
        await store.close()


def cmd_init(args: argparse.Namespace) -> int:
    tls_lines = ""
    if args.self_signed_cert:
        tls_lines = f'tls_cert_file = "{TLS_CERT}"\ntls_key_file = "{TLS_KEY}"\n'
    if args.config:  # an existing file (the Debian package's /etc/smsgw/smsgw.toml)
        conf_path = Path(args.config)
        config = config_mod.load(conf_path)
        Path(config.data_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    else:
        data_dir = Path(args.data_dir).resolve()
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        conf_path = data_dir / "smsgw.toml"
        if not conf_path.exists():
            conf_path.write_text(_CONFIG_TEMPLATE.format(data_dir=data_dir, tls=tls_lines))
            print(f"wrote {conf_path}")
        elif args.self_signed_cert and "tls_cert_file" not in conf_path.read_text():
            print(f"add to [http] in {conf_path}:\n{tls_lines}", end="")
        config = config_mod.load(conf_path)
    token = asyncio.run(_init_store(config, first_token=not args.no_token))
    print(f"master key: {config.master_key_path} (mode 0600; back it up apart from the data)")
    print(f"store:      {config.db_path}")
    if args.self_signed_cert:
        _self_signed(config, args.hostname or tls.default_names())
    if token:
        print("first API token (shown once, stored only as a hash):")
        print(token)
    elif args.no_token:
        print(f"create an API token with:          smsgw token create --config {conf_path}")
    else:
        print(
            "the store already has tokens; create more with:"
            f" smsgw token create --config {conf_path}"
        )
    print(
        f"create the first panel admin with: smsgw user add --config {conf_path} --role admin NAME"
    )
    print(f"start the gateway with:            smsgw run --config {conf_path}")
    return 0


def _self_signed(config: Config, names: list[str]) -> None:
    cert, key = config.resolve(TLS_CERT), config.resolve(TLS_KEY)
    if cert.exists() or key.exists():
        print(f"TLS:        {cert} exists; kept")
        return
    tls.generate_self_signed(cert, key, names)

    async def record() -> None:
        store = await with_store(config)
        try:
            await audit_trail(store, config).record(
                CONSOLE, "tls_key_generated", "key", "tls", names=",".join(names)[:200]
            )
        finally:
            await store.close()

    asyncio.run(record())
    print(f"TLS:        self-signed certificate {cert} for {', '.join(names)} (key {key}, 0600)")


def cmd_run(args: argparse.Namespace) -> int:
    stages = StartStages()
    stages.mark("interpreter_and_imports")
    config = _load(args.config)
    if args.listen:
        config = msgspec.structs.replace(
            config, http=msgspec.structs.replace(config.http, listen=args.listen)
        )
        if problem := config_mod.listen_problem(args.listen):
            raise ConfigError(f"http.listen: {problem} (given with --listen)")
    if problem := config.http.plain_http_problem():
        raise ConfigError(problem)
    if args.hl7_listen:
        config = _hl7_demo_listen(config, args.hl7_listen)
    if args.links_listen:
        config = _links_demo_listen(config, args.links_listen)
    logs.configure(config.log.format, config.log.level)
    stages.mark("config")
    with DataDirLock(config.data_dir):
        token = None
        if config.source is None:
            # The embedded default sets itself up on first start.
            try:
                token = asyncio.run(_init_store(config))
            except (OSError, sqlite3.DatabaseError) as e:
                raise describe_fault(e, config) from None
        try:
            key = custody.load_master_key(config)
        except crypto.MasterKeyError as e:
            raise StartupFault(str(e), exit_code=2) from None
        except OSError as e:
            raise describe_fault(e, config) from None
        stages.mark("master_key")
        _install_uvloop()
        # Armed by the first SIGTERM or SIGINT; it must also cover the interpreter's
        # exit, which waits for every non-daemon thread (`gateway/shutdown.py`).
        deadline = StopDeadline(
            stop_limit(config.http.shutdown_grace, config.outbox.shutdown_grace)
        )
        try:
            return asyncio.run(
                serve_or_explain(config, lambda s: _serve(config, token, key, s, deadline, stages))
            )
        finally:
            deadline.phase("interpreter exit (waiting for threads)")
            deadline.disarm_if_nothing_can_hang()


def _links_demo_listen(config: Config, listen: str) -> Config:
    """The embedded default's short links served (and addressed) at `listen`."""
    if config.source is not None:
        raise ConfigError("--links-listen: only for the embedded default; set links.listen")
    if problem := config_mod.listen_problem(listen):
        raise ConfigError(f"--links-listen: {problem}")
    links = msgspec.structs.replace(config.links, listen=listen, base_url=f"http://{listen}")
    return msgspec.structs.replace(config, links=links)


def _hl7_demo_listen(config: Config, listen: str) -> Config:
    if config.source is not None:
        raise ConfigError("--hl7-listen: only for the embedded default; set hl7.interfaces")
    if problem := config_mod.listen_problem(listen):
        raise ConfigError(f"--hl7-listen: {problem}")
    interfaces = tuple(
        msgspec.structs.replace(i, listen=listen) if i.direction == "in" else i
        for i in config.hl7.interfaces
    )
    return msgspec.structs.replace(
        config, hl7=msgspec.structs.replace(config.hl7, interfaces=interfaces)
    )


def _tune_gc() -> None:
    """Move what start-up built (config, queue cache) out of the collector's way, once
    the whole queue is loaded (after ready: `Gateway.after_ready`).

    A request allocates short-lived objects; with the default thresholds the young
    generation is collected every few requests and full collections walk the whole
    queue cache, which showed as long pauses under load.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _install_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _serve(
    config: Config,
    first_token: str | None,
    master_key: bytes,
    startup: Startup,
    deadline: StopDeadline,
    stages: StartStages,
) -> int:
    from gateway.http_app import build_runner
    from gateway.web.connections import GuardedTCPSite

    host, _, port = config.http.listen.rpartition(":")
    stop = asyncio.Event()
    _on_stop_signals(deadline, stop)
    simulator = None
    modems: list[EmulatedModem] = []
    if config.demo_peers:
        simulator, smsc_password = await _start_embedded_smsc()
        startup.on_fault(simulator.aclose)
        modems = await _start_embedded_modems(startup, Path(config.data_dir))
        # After a config file's own routes: turning the demo on never moves their
        # traffic. The embedded default's routes are the peers' (they replace its loopback).
        own = config.routes if config.source is not None else ()
        embedded = config_mod.embedded_routes(
            simulator.port, smsc_password, [m.path for m in modems]
        )
        config = msgspec.structs.replace(config, routes=own + embedded)
    # The demo's clock may be moved forward, so tomorrow's reminders can be seen now.
    clock = AdjustableClock() if config.demo_peers else None
    stages.mark("http_imports_and_peers")
    gateway = await Gateway.open(config, clock, master_key)
    stages.mark("store_open")
    startup.on_fault(gateway.stop)
    if config.demo_peers:
        # The demo's seeds, as its simulator, are imported only for the demo (a
        # configured start imports no more than it runs: issue 16, start-up).
        from gateway.campaigns import demo as campaigns_demo
        from gateway.links import demo as links_demo
        from gateway.reminders import demo as reminders_demo
        from gateway.surveys import demo as surveys_demo

        gateway.demo = DemoPeers(simulator, modems, clock)
        await reminders_demo.seed(gateway.reminder_rules)  # issue 13: rules to plan with
        await surveys_demo.seed(gateway.surveys)  # issue 15: a survey to send and answer
        await campaigns_demo.seed(gateway.templates)  # issue 15: an A/B campaign text
        await links_demo.seed(gateway.links)  # issue 15: {link:flu-clinic}
    await gateway.start(ready_first=True, stages=stages)
    if (source := custody.unlock_source(config)) is not None:
        # Who unlocked a passphrase-protected key, and how, is evidence like any change.
        await gateway.audit.record("smsgw", "master_key_unlocked", "key", "master", via=source)
    admin_socket = AdminSocket(gateway, master_key)  # console commands (gateway/ops/)
    startup.on_fault(admin_socket.close)
    await admin_socket.start()
    stages.mark("admin_socket")
    runner = build_runner(gateway)
    await runner.setup()
    stages.mark("http_app")
    tls_paths = config.tls_paths
    context = tls.server_context(*tls_paths) if tls_paths else None
    site = GuardedTCPSite(
        runner, host.strip("[]") or "127.0.0.1", int(port), backlog=1024, ssl_context=context
    )
    await site.start()
    kannel_runner = await _start_kannel(gateway)
    links_runner = await _start_links(gateway)
    log.info(
        "listening",
        url=f"{'https' if context else 'http'}://{config.http.listen}",
        data_dir=config.data_dir,
        routes=[r.name for r in config.routes],
    )
    if first_token:
        _print_welcome(config.http.listen, first_token)
    elif config.source is None:
        print(
            f"smsgw is running with the embedded default on http://{config.http.listen}"
            " (state in ./data). API tokens are shown only when created; make another"
            " with: .venv/bin/smsgw token create --scope send,read. Admin panel:"
            f" http://{config.http.listen}/login (first admin: .venv/bin/smsgw user add"
            " --role admin NAME)",
            flush=True,
        )
        print(TRY_EVENTS_HINT, flush=True)
    startup.done()
    systemd.notify("READY=1")
    stages.mark("listen")
    log.info("started", **stages.fields())
    gateway.after_ready(settled=_tune_gc)
    interval = systemd.watchdog_interval()
    beat = asyncio.create_task(systemd.heartbeat(gateway.clock, interval)) if interval else None
    await stop.wait()
    systemd.notify("STOPPING=1")
    if beat is not None:
        beat.cancel()
    log.info("shutting_down")
    deadline.phase("admin socket (running console commands)")
    with contextlib.suppress(Exception):  # bounded by its own drain; never stops the stop
        await asyncio.wait_for(admin_socket.close(), STEP_LIMIT + 1)
    failed = await gateway.stop(
        before_store_close=_cleanup(runner, kannel_runner, links_runner), on_step=deadline.phase
    )
    deadline.phase("simulated peers")
    with contextlib.suppress(Exception):  # the demo's peers: nothing of the gateway's
        await asyncio.wait_for(DemoPeers(simulator, modems).aclose(), STEP_LIMIT)
    deadline.phase("event loop end (tasks still running, executor threads)")
    return EXIT_STOP_INCOMPLETE if failed else 0


def _on_stop_signals(deadline: StopDeadline, stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set `stop` and arm the deadline the whole stop must meet;
    from the start of serving, so a signal during start-up is a clean stop after it."""

    def on_signal() -> None:
        deadline.arm()
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)


async def _start_kannel(gateway: Gateway) -> web.BaseRunner | None:
    """The Kannel-compatible sendsms listener, when `kannel.enabled`."""
    if not gateway.config.kannel.enabled:
        return None
    from gateway.integrations import kannel_server
    from gateway.web.connections import GuardedTCPSite

    try:
        runner = kannel_server.build_runner(gateway)
    except ValueError as e:
        raise StartupFault(str(e), exit_code=2) from None
    await runner.setup()
    host, _, port = gateway.config.kannel.listen.rpartition(":")
    await GuardedTCPSite(runner, host.strip("[]"), int(port), backlog=1024).start()
    log.info("kannel_listening", url=f"http://{gateway.config.kannel.listen}/cgi-bin/sendsms")
    return runner


async def _start_links(gateway: Gateway) -> web.BaseRunner | None:
    """The short links' redirect listener, when `links.enabled` (gateway/links/server.py)."""
    if not gateway.config.links.enabled:
        return None
    from gateway.links import server as links_server
    from gateway.web.connections import GuardedTCPSite

    runner = links_server.build_runner(gateway)
    await runner.setup()
    host, _, port = gateway.config.links.listen.rpartition(":")
    try:
        await GuardedTCPSite(runner, host.strip("[]"), int(port), backlog=1024).start()
    except OSError as e:
        await runner.cleanup()
        if gateway.config.source is None:  # the demo's listener is a nicety, not a reason
            log.warning("links_demo_listener_unavailable", error=e.strerror or str(e))
            return None
        raise StartupFault(f"links.listen: cannot listen: {e.strerror or e}", exit_code=2) from None
    log.info("links_listening", listen=gateway.config.links.listen)
    return runner


def _cleanup(*runners: web.BaseRunner | None) -> Callable[[], Awaitable[None]]:
    async def cleanup() -> None:
        for runner in runners:
            if runner is not None:
                await runner.cleanup()

    return cleanup


async def _start_embedded_smsc() -> tuple[SmscSimulator, str]:
    """The embedded default's carrier: the SMSC simulator, in process, on a free port;
    with the password its route logs in with."""
    from drivers.smpp.simulator import SimulatorConfig, SmscSimulator

    password = secrets.token_hex(4)  # SMPP 3.4 passwords hold at most 8 characters
    simulator = SmscSimulator(
        SimulatorConfig(
            system_id=config_mod.EMBEDDED_SMSC_SYSTEM_ID, password=password, receipt_delay=2.0
        )
    )
    await simulator.start()
    log.info("smsc_simulator_listening", port=simulator.port)
    return simulator, password


async def _start_embedded_modems(startup: Startup, data_dir: Path) -> list[EmulatedModem]:
    """The embedded default's modem bank (gateway/demo.py), started; its ports are links
    in the data folder (see `embedded_modems`)."""
    modems = embedded_modems(data_dir / "demo-modems")
    for modem in modems:
        await modem.start()
        startup.on_fault(modem.aclose)
    log.info("modem_emulators_started", ports=[m.path for m in modems])
    return modems


def _print_welcome(listen: str, token: str) -> None:
    print(
        "\nsmsgw is running with the embedded default: state in ./data, a built-in SMSC\n"
        "simulator reached over real SMPP, a bank of two emulated modems (route\n"
        '"modems": add "route": "modems" to a message to send through it), and a\n'
        "loopback route behind them.\n"
        "Your first API token (shown only now; it is stored as a hash):\n\n"
        f"  {token}\n\nSend a test message:\n\n"
        f"  curl -s -X POST http://{listen}/api/v1/messages \\\n"
        f"    -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\\n"
        '    -d \'{"to": "+12025550123", "body": "Your test results are ready.",'
        ' "purpose": "results"}\'\n\n'
        "Then follow it (queued -> sending -> sent -> delivered; from 20:00 to 08:00 in\n"
        "the recipient's time zone a results message waits, scheduled, for the morning):\n\n"
        f"  curl -s http://{listen}/api/v1/messages/<id> -H 'Authorization: Bearer {token}'\n\n"
        f"Admin panel: http://{listen}/login, after creating the first admin with\n\n"
        "  .venv/bin/smsgw user add --role admin YOUR_NAME\n\n"
        f"{TRY_EVENTS_HINT}\n",
        flush=True,
    )


TRY_EVENTS_HINT = (
    "Webhooks, MQTT and Kannel's sendsms with these simulated peers: README.md,"
    ' section "Try events without hardware".'
)


def cmd_simulate(args: argparse.Namespace) -> int:
    logs.configure("auto", "info")
    if args.peer == "modem":
        return _simulate_modems(args)
    from drivers.smpp.simulator import SimulatorConfig, run_forever

    config = SimulatorConfig(
        host=args.host,
        port=args.port,
        system_id=args.system_id,
        password=args.password,
        receipt_delay=args.receipt_delay,
        undeliverable=args.undeliverable,
        expired=args.expired,
        hex_ids=args.hex_ids,
        seed=args.seed,
    )
    print(
        f"SMSC simulator on {args.host}:{args.port} (system_id {args.system_id!r});"
        " Ctrl-C stops it",
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_forever(config))
    return 0


def _simulate_modems(args: argparse.Namespace) -> int:
    from drivers.modem import emulator

    def ready(bank: emulator.ModemBankEmulator) -> None:
        rows = [(m.profile_name, m.path) for m in bank.modems]
        print("\n".join(table(("PROFILE", "PORT"), rows)), flush=True)
        print(f"{len(bank.modems)} emulated modem(s) ready; Ctrl-C stops them", flush=True)

    profiles = [args.profile] if args.profile else list(emulator.PROFILES)
    link_dir = Path(args.link_dir) if args.link_dir else None
    if link_dir is not None:
        link_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            emulator.run_forever(
                args.count,
                link_dir,
                profiles=profiles,
                send_latency=args.send_latency,
                on_ready=ready,
            )
        )
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from gateway.doctor import diagnose

    try:
        config = _load(args.config)
    except ConfigError as e:
        print(f"config: {e}")
        return 1
    # The report is stdout; the drivers' own log lines would interleave with it.
    logs.configure(config.log.format, "debug" if args.verbose else "critical")
    problems = asyncio.run(diagnose(config, settle=args.wait))
    for line in problems:
        print(line)
    if not problems:
        print("all checks passed")
    return 1 if problems else 0


def _modem_profiles() -> list[str]:
    from drivers.modem.profiles import PROFILES

    return list(PROFILES)


def version() -> str:
    """The installed package's version (the source tree's when not installed)."""
    try:
        return importlib.metadata.version("smsgw")
    except importlib.metadata.PackageNotFoundError:
        return __version__


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smsgw", description=__doc__)
    p.add_argument("--version", action="version", version=f"smsgw {version()}")
    sub = p.add_subparsers(dest="command", required=True)

    init = sub.add_parser("init", help="create config, master key, store and a first token")
    where = init.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--data-dir",
        help="where config, key and store go (created 0750; smsgw.toml kept if it exists)",
    )
    where.add_argument("--config", help="use this existing file and its data_dir instead")
    init.add_argument(
        "--no-token",
        action="store_true",
        help="mint no first API token (create one later with smsgw token create)",
    )
    init.add_argument(
        "--self-signed-cert",
        action="store_true",
        help="also write a self-signed TLS certificate and serve HTTPS",
    )
    init.add_argument(
        "--hostname",
        action="append",
        help="a DNS name or IP for the certificate (repeatable; default: this host)",
    )
    init.set_defaults(func=cmd_init)

    run = sub.add_parser("run", help="run the gateway")
    run.add_argument("--config", help=f"TOML file (default: ${ENV_CONFIG}, else embedded)")
    run.add_argument("--listen", help="HOST:PORT, overrides http.listen")
    run.add_argument("--hl7-listen", help="HOST:PORT of the embedded default's HL7 feed")
    run.add_argument("--links-listen", help="HOST:PORT of the embedded default's short links")
    run.set_defaults(func=cmd_run)

    send_cmd.add_parser(sub, _load, ENV_CONFIG)

    commands.add_parsers(sub, _load)
    custody_cmd.add_parsers(keys_cmd.add_parser(sub), _load)
    undecodable_cmd.add_parser(sub, _load)
    consent_cmd.add_parser(sub, _load)
    contacts_ops.add_parser(sub, _load)  # smsgw import contacts FILE
    add_backup_parsers(sub, _load)
    store_migrate_cmd.add_parser(sub, _load)  # store migrate --to
    retention_cmd.add_parser(sub, _load)  # retention run|status, erase
    analytics_cmd.add_parser(sub, _load)  # analytics (i15-analytics)
    hl7_send.add_parser(sub)
    cluster_demo_cmd.add_parser(sub)  # demo-cluster: two nodes on one machine

    simulate = sub.add_parser("simulate", help="run a simulated peer for demos and tests")
    peers = simulate.add_subparsers(dest="peer", required=True)
    smsc = peers.add_parser("smsc", help="an SMPP 3.4 SMSC that answers and sends receipts")
    smsc.add_argument("--host", default="127.0.0.1", help="address to listen on")
    smsc.add_argument("--port", type=int, default=2775, help="TCP port (default 2775)")
    smsc.add_argument("--system-id", default="smsgw", help="the system_id a bind must give")
    smsc.add_argument("--password", default="secret", help="the password a bind must give")
    smsc.add_argument("--receipt-delay", type=float, default=1.0, help="seconds")
    smsc.add_argument("--undeliverable", type=float, default=0.0, help="fraction 0..1")
    smsc.add_argument("--expired", type=float, default=0.0, help="fraction 0..1")
    smsc.add_argument("--hex-ids", action="store_true", help="message ids in hex")
    smsc.add_argument("--seed", type=int, help="seed the random faults (repeatable runs)")
    modem = peers.add_parser("modem", help="GSM/LTE modems answering AT commands on ptys")
    modem.add_argument("--count", type=int, default=2, help="how many modems")
    modem.add_argument("--link-dir", help="also link each port here as modem-<n>")
    modem.add_argument("--profile", choices=sorted(_modem_profiles()), help="one model for all")
    modem.add_argument("--send-latency", type=float, default=3.0, help="seconds per part")
    simulate.set_defaults(func=cmd_simulate)

    doctor = sub.add_parser("doctor", help="check config, key, store and routes")
    doctor.add_argument("--config", help=f"TOML file (default: ${ENV_CONFIG}, else embedded)")
    doctor.add_argument(
        "--wait", type=float, default=10.0, help="seconds a route gets to come up (default 10)"
    )
    doctor.add_argument(
        "--verbose", action="store_true", help="also the drivers' log lines, on stderr"
    )
    doctor.set_defaults(func=cmd_doctor)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.umask(0o077)  # everything smsgw writes may hold PHI or keys: owner only
    try:
        code: int = args.func(args)
    except ConfigError as e:
        print(f"smsgw: configuration error: {e}", file=sys.stderr)
        return 2
    except (crypto.MasterKeyError, BadScope) as e:
        print(f"smsgw: {e}", file=sys.stderr)
        return 2
    except StartupFault as e:
        print(f"smsgw: {e}", file=sys.stderr)
        systemd.notify(f"STATUS=start-up failed: {e}")  # for `systemctl status`
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    raise SystemExit(main())
