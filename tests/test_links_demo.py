"""`make run` shows tracked links with no setup: the embedded default has a demo link,
`{link:flu-clinic}`; a message through the real daemon's API carries its own short URL,
and following it through the daemon's redirect listener is counted as one person."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import CANARY_NUMBER, SMSGW
from tests.ports import free_port

TOKEN = re.compile(r"smsgw_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Mobile/15E148 Safari/604.1"

pytestmark = pytest.mark.timeout(90)


async def _cli(cwd: Path, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *SMSGW, *args, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode().strip()


async def test_the_demo_link_goes_out_and_is_followed(tmp_path: Path) -> None:
    api_port, links_port = free_port(), free_port()
    proc = await asyncio.create_subprocess_exec(
        *SMSGW, "run", "--listen", f"127.0.0.1:{api_port}",
        "--hl7-listen", f"127.0.0.1:{free_port()}", "--links-listen", f"127.0.0.1:{links_port}",
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k != "SMSGW_CONFIG"},
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    drain = None
    try:
        token = None
        async with asyncio.timeout(30):
            while token is None:
                line = await proc.stdout.readline()
                assert line, "smsgw run exited before printing its first token"
                if found := TOKEN.search(line.decode()):
                    token = found.group(0)
            while b"links_listening" not in await proc.stderr.readline():
                pass
        drain = asyncio.gather(proc.stdout.read(), proc.stderr.read())
        phi = await _cli(tmp_path, "token", "create", "--scope", "send,read,phi", "--name", "p")
        api = f"http://127.0.0.1:{api_port}/api/v1"
        async with aiohttp.ClientSession() as http:
            sent = await http.post(
                f"{api}/messages",
                json={"to": CANARY_NUMBER, "body": "Flu shots: {link:flu-clinic}",
                      "purpose": "emergency"},
                headers={"Authorization": f"Bearer {phi}"},
            )  # fmt: skip
            assert sent.status == 202, await sent.text()
            mid = (await sent.json())["id"]
            read = await http.get(
                f"{api}/messages/{mid}?include=phi", headers={"Authorization": f"Bearer {phi}"}
            )
            body = (await read.json())["body"]
            short = re.fullmatch(rf"Flu shots: (http://127\.0\.0\.1:{links_port}/\w{{16}})", body)
            assert short is not None
            r = await http.get(short.group(1), headers={"User-Agent": IPHONE},
                               allow_redirects=False)  # fmt: skip
            assert r.status == 302
            assert r.headers["Location"] == "https://www.example-hospital.org/flu-clinic"
            links = await http.get(f"{api}/links", headers={"Authorization": f"Bearer {token}"})
            (link,) = (await links.json())["links"]
            assert link["name"] == "flu-clinic" and link["created_by"] == "system:demo"
            assert link["clicks"] == {"human": 1, "bots": 0, "people": 1}
    finally:
        proc.terminate()
        await proc.wait()
        if drain is not None:
            await drain
