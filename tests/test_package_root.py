"""The Debian package installed, started, upgraded, removed and purged in clean Debian
roots: bookworm (Python 3.11) and trixie (3.13) on this machine's CPU, and bookworm arm64
under qemu-user-static when asked for. Each root is bootstrapped once with debootstrap and
cached as a tarball in /var/cache/smsgw-test/, keyed by what made it; the packages are
built from PyPI's wheels; the Debian mirror supplies python3-venv. Minutes per root, so
`make test-package` runs these (SMSGW_PACKAGE_TEST=1) and `make test` skips them.

Not run here: systemd as PID 1 (the unit is checked by systemd-analyze in
tests/test_package.py; the postinst's start is guarded on /run/systemd/system).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import tomllib
from pathlib import Path

import aiohttp
import pytest

from tests.ports import free_port
from tests.test_cli import TOKEN_RE, Daemon
from tests.test_package import REPO, packaging_modules

PACKAGE_TEST = os.environ.get("SMSGW_PACKAGE_TEST") == "1"
ROOT_CACHE = Path(os.environ.get("SMSGW_ROOT_CACHE", "/var/cache/smsgw-test"))
MIRROR = "http://deb.debian.org/debian"
CHROOT_ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "DEBIAN_FRONTEND": "noninteractive",
}
BODY = "Package test: your results are ready."
CONF = "/etc/smsgw/smsgw.toml"
timings: dict[str, float] = {}


def _host(*cmd: str, timeout: float = 600) -> str:
    return subprocess.run(
        cmd, capture_output=True, text=True, check=True, timeout=timeout
    ).stdout.strip()


def _root_tarball(suite: str, arch: str) -> Path:
    """A minbase root of `suite`, bootstrapped once and cached, keyed by what made it."""
    inputs = {
        "suite": suite,
        "arch": arch,
        "variant": "minbase",
        "mirror": MIRROR,
        "debootstrap": _host("dpkg-query", "-W", "-f", "${Version}", "debootstrap"),
    }
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    tarball = ROOT_CACHE / f"debian-{suite}-{arch}-minbase-{key}.tar"
    if tarball.exists():
        return tarball
    ROOT_CACHE.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=ROOT_CACHE) as tmp:
        root = Path(tmp) / "root"
        try:
            _host(
                "/usr/sbin/debootstrap",
                "--variant=minbase",
                f"--arch={arch}",
                suite,
                str(root),
                MIRROR,
                timeout=1800,
            )
        finally:  # debootstrap mounts these while it runs; a failed run may leave them
            for mount in ("proc", "sys"):
                subprocess.run(["umount", "-l", str(root / mount)], capture_output=True)
        part = tarball.with_suffix(".part")
        _host("tar", "--numeric-owner", "--one-file-system", "-C", str(root), "-cf", str(part), ".")
        part.rename(tarball)
    timings[f"root_bootstrap_cold_{suite}_{arch}_s"] = time.monotonic() - started
    return tarball


class Chroot:
    """A Debian root with /proc mounted; commands run inside with `chroot`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Chroot:
        shutil.copy("/etc/resolv.conf", self.path / "etc" / "resolv.conf")
        _host("mount", "-t", "proc", "proc", str(self.path / "proc"))
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["umount", "-l", str(self.path / "proc")], check=False)

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["chroot", str(self.path), *cmd],
            capture_output=True,
            text=True,
            env=CHROOT_ENV,
            timeout=600,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{cmd}: exit {done.returncode}\n{done.stdout}\n{done.stderr}")
        return done

    def out(self, *cmd: str) -> str:
        return self.run(*cmd).stdout.strip()

    def stat(self, path: str) -> str:
        return self.out("stat", "-c", "%a %U:%G", path)

    def ids(self, name: str) -> tuple[int, int]:
        entry = self.out("getent", "passwd", name).split(":")
        return int(entry[2]), int(entry[3])


def _build_debs(work: Path, arch: str, python: str) -> tuple[Path, Path, str, str]:
    """Two real packages from PyPI's wheels: this tree's version, and a later one."""
    build_deb, wheelhouse = packaging_modules()
    first = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    second = f"{first}.post1"
    debs = []
    for version in (first, second):
        houses = wheelhouse.build(work / version, [arch], [python], REPO, version=version)
        debs.append(build_deb.build(arch, houses[arch], work / "dist"))
    return debs[0], debs[1], first, second


def _configure_for_test(root: Path, port: int) -> None:
    """The operator's edits: a free port, a loopback route, consent checks off."""
    conf = root / "etc" / "smsgw" / "smsgw.toml"
    text = conf.read_text().replace('"127.0.0.1:8443"', f'"127.0.0.1:{port}"')
    text += (
        '\n[consent]\nenabled = false\n\n[[routes]]\nname = "demo"\ntype = "loopback"\n'
        "rate = 50\nburst = 10\nwindow = 20\nreceipt_delay = 0.1\n"
    )
    conf.write_text(text)


async def _start(chroot: Chroot, port: int) -> Daemon:
    uid, gid = chroot.ids("smsgw")
    dialout = chroot.out("getent", "group", "dialout").split(":")[2]
    # What the unit's RuntimeDirectory=smsgw makes: the admin socket's directory.
    chroot.run("install", "-d", "-o", "smsgw", "-g", "smsgw", "-m", "0750", "/run/smsgw")
    # chroot --userspec execs the gateway itself (no su in between), so SIGTERM reaches it.
    proc = await asyncio.create_subprocess_exec(
        "chroot",
        f"--userspec={uid}:{gid}",
        f"--groups={gid},{dialout}",
        str(chroot.path),
        "/opt/smsgw/bin/smsgw",
        "run",
        "--config",
        "/etc/smsgw/smsgw.toml",
        env=CHROOT_ENV | {"HOME": "/var/lib/smsgw"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    daemon = Daemon(proc, f"https://127.0.0.1:{port}")
    await daemon.wait_log(lambda e: e.get("event") == "listening", limit=300)  # qemu: slow
    return daemon


async def _stop(daemon: Daemon) -> None:
    daemon.proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        assert await daemon.proc.wait() == 0, await daemon.finished()


def _tls(root: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(root / "var/lib/smsgw/tls/cert.pem"))


async def _healthz(http: aiohttp.ClientSession, daemon: Daemon, tls: ssl.SSLContext) -> None:
    async with http.get(f"{daemon.url}/api/v1/healthz", ssl=tls) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["ready"] is True


async def _read_body(
    http: aiohttp.ClientSession, daemon: Daemon, tls: ssl.SSLContext, token: str, msg_id: str
) -> str:
    async with http.get(
        f"{daemon.url}/api/v1/messages/{msg_id}?include=phi",
        headers={"Authorization": f"Bearer {token}"},
        ssl=tls,
    ) as resp:
        assert resp.status == 200, await resp.text()
        body: str = (await resp.json())["body"]
        return body


def _check_install(chroot: Chroot, version: str) -> None:
    status = chroot.out("dpkg-query", "-W", "-f", "${Status} ${Version}", "smsgw")
    assert status == f"install ok installed {version}-1"
    passwd = chroot.out("getent", "passwd", "smsgw").split(":")
    assert passwd[5:] == ["/var/lib/smsgw", "/usr/sbin/nologin"]
    assert "dialout" in chroot.out("id", "-nG", "smsgw").split()
    assert chroot.stat("/var/lib/smsgw") == "700 smsgw:smsgw"
    assert chroot.stat("/etc/smsgw") == "750 root:smsgw"
    assert chroot.stat("/etc/smsgw/smsgw.toml") == "640 root:smsgw"
    assert chroot.stat("/var/log/smsgw") == "750 smsgw:adm"
    assert chroot.stat("/var/lib/smsgw/master.key") == "600 smsgw:smsgw"
    assert chroot.stat("/var/lib/smsgw/tls/key.pem") == "600 smsgw:smsgw"
    assert chroot.out("find", "/var/lib/smsgw", "!", "-user", "smsgw") == ""
    assert chroot.out("find", "/var/lib/smsgw", "!", "-group", "smsgw") == ""
    got = chroot.out(
        "/opt/smsgw/bin/python", "-c", "import importlib.metadata as m; print(m.version('smsgw'))"
    )
    assert got == version
    assert chroot.run("smsgw", "--help").returncode == 0  # /usr/bin/smsgw, the venv's
    chroot.run("sh", "-c", "cd /usr/lib/smsgw/wheels && sha256sum --check --quiet SHA256SUMS")


def _arm64_runs_here() -> bool:
    """Asked for (make test-package PKG_ARM64=1), and arm64 programs run on this amd64
    machine (qemu-user-static through binfmt_misc)."""
    if os.environ.get("SMSGW_PACKAGE_ARM64") != "1":
        return False
    entry = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    try:
        return entry.read_text().startswith("enabled")
    except OSError:
        return False


ROOTS = [
    pytest.param("bookworm", "3.11", None, id="bookworm"),
    pytest.param("trixie", "3.13", None, id="trixie"),
    pytest.param(
        "bookworm",
        "3.11",
        "arm64",
        id="bookworm-arm64",
        marks=[
            pytest.mark.skipif(
                not _arm64_runs_here(), reason="arm64 under qemu: make test-package PKG_ARM64=1"
            ),
            pytest.mark.timeout(3600),
        ],
    ),
]


@pytest.mark.skipif(not PACKAGE_TEST, reason="in a Debian root: make test-package")
@pytest.mark.timeout(1200)
@pytest.mark.parametrize(("suite", "python", "arch"), ROOTS)
async def test_package_installs_upgrades_and_purges_in_a_clean_debian_root(
    tmp_path: Path, suite: str, python: str, arch: str | None
) -> None:
    arch = arch or _host("dpkg", "--print-architecture")
    timings.clear()
    started = time.monotonic()
    tarball = await asyncio.to_thread(_root_tarball, suite, arch)
    root = tmp_path / "root"
    root.mkdir()
    mark = time.monotonic()
    await asyncio.to_thread(_host, "tar", "--numeric-owner", "-C", str(root), "-xf", str(tarball))
    timings["root_unpack_s"] = time.monotonic() - mark
    mark = time.monotonic()
    first_deb, second_deb, first, second = await asyncio.to_thread(
        _build_debs, tmp_path / "build", arch, python
    )
    timings["wheelhouses_and_debs_s"] = time.monotonic() - mark
    for deb in (first_deb, second_deb):
        shutil.copy(deb, root / "tmp" / deb.name)
    port = free_port()
    try:
        with Chroot(root) as chroot:
            # 1. Install: dpkg stops at the missing dependencies, apt brings them from Debian.
            mark = time.monotonic()
            bare = await asyncio.to_thread(
                chroot.run, "dpkg", "-i", f"/tmp/{first_deb.name}", check=False
            )
            assert bare.returncode != 0 and "python3-venv" in bare.stderr, bare.stderr
            await asyncio.to_thread(chroot.run, "apt-get", "update", "-qq")
            await asyncio.to_thread(
                chroot.run, "apt-get", "install", "-f", "-y", "-qq", "--no-install-recommends"
            )
            timings["install_s"] = time.monotonic() - mark
            await asyncio.to_thread(_check_install, chroot, first)
            code = "import sys; print('%d.%d' % sys.version_info[:2])"
            assert chroot.out("/opt/smsgw/bin/python", "-c", code) == python
            key = (root / "var/lib/smsgw/master.key").read_bytes()

            # 2. First start, as the service would: the smsgw user, the packaged config.
            await asyncio.to_thread(_configure_for_test, root, port)
            conf = (root / "etc/smsgw/smsgw.toml").read_text()
            tls = _tls(root)
            daemon = await _start(chroot, port)
            async with aiohttp.ClientSession() as http:
                try:
                    await _healthz(http, daemon, tls)
                    # The first admin and a token, as root, through the admin socket.
                    (root / "root/admin.pw").write_text("ward7 lantern oxbow quill 4721\n")
                    await asyncio.to_thread(
                        chroot.run, "smsgw", "user", "add", "--config", CONF, "--role", "admin",
                        "--password-file", "/root/admin.pw", "alice",
                    )  # fmt: skip
                    token = await asyncio.to_thread(
                        chroot.out, "smsgw", "token", "create", "--config", CONF,
                        "--scope", "send,read,phi",
                    )  # fmt: skip
                    assert TOKEN_RE.fullmatch(token), token
                    for name in ("user.add", "token.create"):  # run by the service itself
                        await daemon.wait_log(
                            lambda e, n=name: (
                                e.get("event") == "admin_op_finished" and e.get("op") == n
                            ),
                            limit=60,
                        )
                    verify = await asyncio.to_thread(
                        chroot.out, "smsgw", "audit", "verify", "--config", CONF
                    )
                    assert verify.startswith("audit chain intact"), verify
                    async with http.post(
                        f"{daemon.url}/api/v1/messages",
                        json={"to": "+12025550123", "body": BODY, "purpose": "informational"},
                        headers={"Authorization": f"Bearer {token}"},
                        ssl=tls,
                    ) as resp:
                        assert resp.status == 202, await resp.text()
                        msg_id = (await resp.json())["id"]
                    assert await _read_body(http, daemon, tls, token, msg_id) == BODY
                finally:
                    await _stop(daemon)

                # 3. Upgrade: venv rebuilt, data, key and the edited conffile kept.
                mark = time.monotonic()
                await asyncio.to_thread(chroot.run, "dpkg", "-i", f"/tmp/{second_deb.name}")
                timings["upgrade_s"] = time.monotonic() - mark
                await asyncio.to_thread(_check_install, chroot, second)
                assert (root / "var/lib/smsgw/master.key").read_bytes() == key
                assert (root / "etc/smsgw/smsgw.toml").read_text() == conf
                daemon = await _start(chroot, port)
                try:
                    await _healthz(http, daemon, tls)
                    assert await _read_body(http, daemon, tls, token, msg_id) == BODY
                finally:
                    await _stop(daemon)

            # 4. Remove: the venv goes; data and config stay.
            await asyncio.to_thread(chroot.run, "dpkg", "--remove", "smsgw")
            status = chroot.out("dpkg-query", "-W", "-f", "${Status}", "smsgw")
            assert status == "deinstall ok config-files"
            for gone in ("opt/smsgw", "usr/bin/smsgw", "usr/lib/smsgw"):
                assert not (root / gone).exists(), gone
            assert (root / "var/lib/smsgw/smsgw.db").exists()
            assert (root / "etc/smsgw/smsgw.toml").read_text() == conf

            # 5. Purge: config, data (store and key), logs go; the system user stays.
            purge = await asyncio.to_thread(chroot.run, "dpkg", "--purge", "smsgw")
            assert "deleted /var/lib/smsgw" in purge.stderr
            for gone in ("etc/smsgw", "var/lib/smsgw", "var/log/smsgw", "opt/smsgw"):
                assert not (root / gone).exists(), gone
            assert not (root / "usr/lib/systemd/system/smsgw.service").exists()
            listed = chroot.run("dpkg-query", "-W", "smsgw", check=False)
            assert listed.returncode != 0 or "smsgw\t" not in listed.stdout
            assert chroot.out("getent", "passwd", "smsgw").startswith("smsgw:")
    finally:
        await asyncio.to_thread(shutil.rmtree, root, ignore_errors=True)
    timings["total_s"] = time.monotonic() - started
    shown = json.dumps({k: round(v, 1) for k, v in timings.items()})
    print(f"\npackage test timings ({suite}, {arch}, Python {python}): {shown}")
