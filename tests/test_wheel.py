"""The installed wheel serves the panel: built from a copy of the sources, installed into
a fresh environment outside the repository, then `smsgw init` and `smsgw run` from there
answer `/login` and a static file.

Offline by design: the wheel is built without build isolation (setuptools comes with the
dev dependencies) and installed without its dependencies, which the fresh environment
borrows from this one through a path file. That path file adds this environment's
site-packages without running its `.pth` files, so the editable install of the checkout
stays out of sight; the test checks that `gateway` is imported from the wheel.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import aiohttp
import pytest

from tests.ports import free_port
from tests.test_cli import TOKEN_RE, Daemon

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "gateway", "drivers", "admin_ui")
PIP = [sys.executable, "-m", "pip"]
IGNORED = shutil.ignore_patterns("node_modules", "__pycache__", "*.pyc", ".*")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def _build_wheel(work: Path) -> Path:
    src = work / "src"
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=IGNORED)
        else:
            shutil.copy(REPO / name, src / name)
    subprocess.run(
        [
            *PIP,
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(work / "dist"),
            str(src),
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    (wheel,) = (work / "dist").glob("smsgw-*.whl")
    return wheel


def _fresh_env(work: Path, wheel: Path) -> Path:
    env = work / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    subprocess.run(
        [*PIP, "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    borrowed = "\n".join(p for p in site.getsitepackages() if Path(p).is_dir())
    (Path(purelib) / "zz_borrowed_dependencies.pth").write_text(borrowed + "\n")
    return env / "bin"


def _clean_env() -> dict[str, str]:
    drop = {"PYTHONPATH", "SMSGW_CONFIG", "VIRTUAL_ENV", "PYTHONHOME"}
    return {k: v for k, v in os.environ.items() if k not in drop} | {"PYTHONUNBUFFERED": "1"}


def test_wheel_holds_the_panel(tmp_path: Path) -> None:
    names = zipfile.ZipFile(_build_wheel(tmp_path)).namelist()
    assert "admin_ui/templates/login.html" in names
    assert "admin_ui/static/app.css" in names
    assert "admin_ui/static/vendor/htmx.min.js" in names
    assert not [n for n in names if "node_modules" in n]


async def test_installed_wheel_serves_login_and_static_files(tmp_path: Path) -> None:
    wheel = await asyncio.to_thread(_build_wheel, tmp_path)
    bin_dir = await asyncio.to_thread(_fresh_env, tmp_path, wheel)
    outside = tmp_path / "site"
    outside.mkdir()
    where = await asyncio.to_thread(
        subprocess.run,
        [str(bin_dir / "python"), "-c", "import gateway, admin_ui; print(gateway.__file__)"],
        cwd=outside,
        env=_clean_env(),
        check=True,
        capture_output=True,
        text=True,
    )
    assert where.stdout.startswith(str(tmp_path / "env")), where.stdout

    init = await asyncio.to_thread(
        subprocess.run,
        [str(bin_dir / "smsgw"), "init", "--data-dir", str(outside / "data")],
        cwd=outside,
        env=_clean_env(),
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert TOKEN_RE.search(init.stdout)
    conf = outside / "data" / "smsgw.toml"
    port = free_port()
    text = await asyncio.to_thread(conf.read_text)
    await asyncio.to_thread(conf.write_text, re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{port}", text))

    proc = await asyncio.create_subprocess_exec(
        str(bin_dir / "smsgw"),
        "run",
        "--config",
        str(conf),
        cwd=outside,
        env=_clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    d = Daemon(proc, f"http://127.0.0.1:{port}")
    try:
        await d.wait_log(lambda e: e.get("event") == "listening", limit=60)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{d.url}/login", headers={"Accept": "text/html"}) as resp:
                page = await resp.text()
                assert resp.status == 200, page
                assert "<form" in page
            async with http.get(f"{d.url}/static/app.css") as resp:
                assert resp.status == 200
                assert resp.content_type == "text/css"
    finally:
        proc.kill()
        await proc.wait()
