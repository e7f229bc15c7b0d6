"""The console as an operator meets it: `--version`, help on every option of every
command, and `smsgw send --wait` against a real `smsgw run`, whose exit status says
what became of the message."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import tomllib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from gateway.cli import build_parser, main
from tests.conftest import CANARY_BODY, CANARY_DIGITS, CANARY_NUMBER, SMSGW, smsgw_process
from tests.test_cli import Daemon, _init

ROOT = Path(__file__).resolve().parent.parent
SHARED_LOOP = pytest.mark.asyncio(loop_scope="module")  # the loop of the module's gateway
# Loopback routes that answer one way each: refuse every number, fail every try (so a
# message waits until it expires), and send without a receipt for an hour.
ROUTES = """
[[routes]]
name = "refuse"
type = "loopback"
reject_prefixes = ["+"]

[[routes]]
name = "busy"
type = "loopback"
transient_prefixes = ["+"]

[[routes]]
name = "silent"
type = "loopback"
receipt_delay = 3600
"""


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert capsys.readouterr().out == f"smsgw {expected}\n"


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ("smsgw",)
) -> Iterator[tuple[str, argparse.Action, str | None]]:
    """Every argument of every (sub)command with its help; subcommands as `<name>`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield " ".join(path), action, helps.get(name) and f"<{name}>"
                yield from commands(sub, (*path, name))
        elif not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            yield " ".join(path), action, action.help


def test_every_option_argument_and_subcommand_has_help() -> None:
    seen = list(commands(build_parser()))
    assert len(seen) > 60
    missing = [
        f"{where}: {'/'.join(a.option_strings) or a.dest}" for where, a, text in seen if not text
    ]
    assert not missing, "no help text: " + "; ".join(missing)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Daemon, Path, str]]:
    """One `smsgw run` for the module: each test sends its own message and follows only
    that message (by its id), so what the others sent does not change what it sees."""
    root = tmp_path_factory.mktemp("console")
    conf, token = await asyncio.to_thread(_init, root, None)
    conf.write_text(conf.read_text() + ROUTES + '\n[log]\nlevel = "debug"\n')
    listen = re.search(r'listen = "([^"]+)"', conf.read_text())
    assert listen is not None
    proc = await smsgw_process("run", "--config", str(conf))
    d = Daemon(proc, f"http://{listen.group(1)}")
    await d.wait_log(lambda e: e.get("event") == "listening")
    try:
        yield d, conf, token
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def send(conf: Path, token: str, *args: str) -> tuple[int, list[str], str]:
    """`smsgw send` as a child: exit status, stdout lines, stderr."""
    proc = await asyncio.create_subprocess_exec(
        *SMSGW,
        "send",
        "--config",
        str(conf),
        "--to",
        CANARY_NUMBER,
        "--body",
        CANARY_BODY,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "SMSGW_TOKEN": token},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 40)
    assert proc.returncode is not None
    return proc.returncode, out.decode().splitlines(), err.decode()


def states(lines: list[str]) -> tuple[str, list[str]]:
    """The message id (from the accepted JSON) and the states `--wait` printed."""
    message_id = json.loads(lines[0])["id"]
    assert all(line.startswith(message_id + " ") for line in lines[1:]), lines
    return message_id, [line.split()[1] for line in lines[1:]]


@SHARED_LOOP
async def test_send_wait_exits_0_once_delivered(gateway: tuple[Daemon, Path, str]) -> None:
    _, conf, token = gateway
    code, out, err = await send(conf, token, "--wait", "--timeout", "30")
    assert code == 0, err
    _, seen = states(out)
    assert seen[-1] == "delivered"
    assert CANARY_DIGITS not in "\n".join(out) + err


@SHARED_LOOP
async def test_send_wait_exits_1_when_the_route_refuses_it(
    gateway: tuple[Daemon, Path, str],
) -> None:
    _, conf, token = gateway
    code, out, err = await send(conf, token, "--route", "refuse", "--wait", "--timeout", "30")
    assert code == 1, err
    message_id, seen = states(out)
    assert seen[-1] == "failed"
    assert out[-1] == f"{message_id} failed loopback:reject"


@SHARED_LOOP
async def test_send_wait_exits_3_when_it_expires(gateway: tuple[Daemon, Path, str]) -> None:
    _, conf, token = gateway
    code, out, err = await send(
        conf, token, "--route", "busy", "--expires-in", "3", "--wait", "--timeout", "30"
    )
    assert code == 3, err
    assert states(out)[1][-1] == "expired"


@SHARED_LOOP
async def test_send_wait_gives_up_at_the_timeout_with_4(
    gateway: tuple[Daemon, Path, str],
) -> None:
    _, conf, token = gateway
    code, out, err = await send(conf, token, "--route", "silent", "--wait", "--timeout", "1")
    assert code == 4
    assert "no final state within 1 s" in err
    assert states(out)[1][-1] in ("queued", "sending", "sent")


@SHARED_LOOP
async def test_send_to_an_unknown_route_is_refused_without_echo(
    gateway: tuple[Daemon, Path, str],
) -> None:
    _, conf, token = gateway
    code, out, err = await send(conf, token, "--route", "nowhere-xyz", "--wait")
    assert (code, out) == (1, [])
    error = json.loads(err)["error"]
    assert (error["code"], error["field"]) == ("unknown_route", "route")
    assert "nowhere-xyz" not in err and CANARY_DIGITS not in err
