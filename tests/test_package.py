"""The Debian package and the offline wheelhouse (packaging/).

Fast, offline checks run in the suite: `smsgw init --config` as the package's postinst
runs it, the wheelhouse builder on a local index of made-up packages (a pure sdist is
turned into a wheel; a native package with no arm64 wheel is named and refused), and the
.deb for amd64 and arm64 read back with dpkg-deb (control fields, conffile, unit, modes,
maintainer scripts). The install, upgrade and purge in a clean Debian root are in
tests/test_package_root.py (`make test-package`).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import shutil
import signal
import sqlite3
import ssl
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zipfile
from pathlib import Path

import aiohttp
import pytest

from gateway.cli import main
from tests.ports import free_port
from tests.test_cli import TOKEN_RE, Daemon

REPO = Path(__file__).resolve().parent.parent


def _packaged_config(tmp_path: Path) -> Path:
    """The package's config skeleton, its data_dir moved into tmp_path."""
    text = (REPO / "packaging" / "smsgw.toml").read_text()
    etc = tmp_path / "etc"
    etc.mkdir()
    conf = etc / "smsgw.toml"
    conf.write_text(text.replace('"/var/lib/smsgw"', f'"{tmp_path / "state"}"'))
    return conf


def test_init_from_the_packaged_config_writes_no_second_config_and_no_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = _packaged_config(tmp_path)
    assert main(["init", "--config", str(conf), "--no-token", "--self-signed-cert"]) == 0
    out = capsys.readouterr().out
    state = tmp_path / "state"
    assert not TOKEN_RE.search(out), "the postinst's output lands in apt's logs"
    assert not (state / "smsgw.toml").exists()
    assert (state / "master.key").stat().st_mode & 0o777 == 0o600
    assert (state / "tls" / "cert.pem").exists() and (state / "tls" / "key.pem").exists()
    conn = sqlite3.connect(state / "smsgw.db")
    assert conn.execute("SELECT count(*) FROM api_tokens").fetchone() == (0,)
    conn.close()
    assert f"smsgw token create --config {conf}" in out
    assert f"smsgw user add --config {conf}" in out


def test_init_takes_a_data_dir_or_a_config_not_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = _packaged_config(tmp_path)
    with pytest.raises(SystemExit) as both:
        main(["init", "--config", str(conf), "--data-dir", str(tmp_path / "x")])
    assert both.value.code == 2
    with pytest.raises(SystemExit) as neither:
        main(["init"])
    assert neither.value.code == 2
    assert "--data-dir" in capsys.readouterr().err


# -- the wheelhouse, on a local index of made-up packages ---------------------------------


def _wheel(folder: Path, name: str, tag: str) -> None:
    """A wheel file pip can read the name, version and tags of (no code in it)."""
    dist = name.replace("-", "_")
    info = f"{dist}-1.0.dist-info"
    with zipfile.ZipFile(folder / f"{dist}-1.0-{tag}.whl", "w") as z:
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        z.writestr(f"{info}/WHEEL", f"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: {tag}\n")
        z.writestr(f"{info}/RECORD", "")


def _sdist(folder: Path, name: str, *, native: bool) -> None:
    """A source archive; `native` makes its wheel platform-specific, as a C extension would."""
    dist = name.replace("-", "_")
    setup = "from setuptools import setup, Distribution\n"
    if native:
        setup += (
            "class Native(Distribution):\n    def has_ext_modules(self):\n        return True\n"
        )
    setup += f"setup(name={name!r}, version='1.0', py_modules=[]"
    setup += ", distclass=Native)\n" if native else ")\n"
    data = setup.encode()
    with tarfile.open(folder / f"{dist}-1.0.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo(f"{dist}-1.0/setup.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def _project(tmp_path: Path, depends: list[str]) -> Path:
    project = tmp_path / "project"
    (project / "gateway").mkdir(parents=True)
    (project / "gateway" / "__init__.py").write_text("")
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=77"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "app"\nversion = "2.0"\ndependencies = {json.dumps(depends)}\n'
        '[tool.setuptools]\npackages = ["gateway"]\n'
    )
    return project


@pytest.fixture
def index(tmp_path: Path) -> Path:
    index = tmp_path / "index"
    index.mkdir()
    _wheel(index, "native-thing", "cp311-cp311-manylinux_2_17_x86_64")
    _sdist(index, "native-thing", native=True)
    _sdist(index, "pure-thing", native=False)
    return index


def _wheelhouse(tmp_path: Path, index: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "packaging" / "wheelhouse.py"),
            "--out",
            str(tmp_path / "out"),
            "--python",
            "3.11",
            "--find-links",
            str(index),
            "--no-index",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.timeout(120)
def test_wheelhouse_builds_a_pure_source_only_dependency_and_lists_checksums(
    tmp_path: Path, index: Path
) -> None:
    project = _project(tmp_path, ["pure-thing"])
    done = _wheelhouse(tmp_path, index, "--project", str(project), "--arch", "arm64")
    assert done.returncode == 0, done.stderr
    arm = tmp_path / "out" / "arm64"
    assert sorted(p.name for p in arm.iterdir()) == [
        "SHA256SUMS",
        "app-2.0-py3-none-any.whl",
        "pure_thing-1.0-py3-none-any.whl",
    ]
    sums = subprocess.run(
        ["sha256sum", "--check", "--strict", "SHA256SUMS"], cwd=arm, capture_output=True
    )
    assert sums.returncode == 0, sums.stdout


@pytest.mark.timeout(120)
def test_wheelhouse_names_a_native_dependency_with_no_arm64_wheel(
    tmp_path: Path, index: Path
) -> None:
    project = _project(tmp_path, ["native-thing"])
    amd = _wheelhouse(tmp_path, index, "--project", str(project), "--arch", "amd64")
    assert amd.returncode == 0, amd.stderr  # it has an x86_64 wheel
    arm = _wheelhouse(tmp_path, index, "--project", str(project), "--arch", "arm64")
    assert arm.returncode == 1
    assert (
        "native-thing: no wheel for linux/arm64 (aarch64) on Python 3.11 and it is not pure"
        " Python" in arm.stderr
    ), arm.stderr


# -- the .deb, read back with dpkg-deb -----------------------------------------------------


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The .deb for each CPU, from a wheelhouse of smsgw's own wheel (built offline)."""
    work = tmp_path_factory.mktemp("deb")
    sys.path.insert(0, str(REPO / "packaging"))
    try:
        import build_deb
        import wheelhouse
    finally:
        sys.path.pop(0)
    own = wheelhouse.build_own_wheel(REPO, work, None)
    built = {}
    for arch in ("amd64", "arm64"):
        house = work / "wheelhouse" / arch
        house.mkdir(parents=True)
        shutil.copy(own, house / own.name)
        wheelhouse.write_sums(house)
        built[arch] = build_deb.build(arch, house, work / "dist")
    return built


def _dpkg_deb(*args: str) -> str:
    return subprocess.run(
        ["dpkg-deb", *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout


@pytest.mark.timeout(180)
@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_deb_control_fields_and_maintainer_scripts(
    debs: dict[str, Path], arch: str, tmp_path: Path
) -> None:
    deb = debs[arch]
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert deb.name == f"smsgw_{version}-1_{arch}.deb"
    fields = dict(
        line.split(": ", 1)
        for line in _dpkg_deb("--field", str(deb)).splitlines()
        if ": " in line and not line.startswith(" ")
    )
    assert fields["Package"] == "smsgw"
    assert fields["Architecture"] == arch
    assert fields["Version"] == f"{version}-1"
    depends = [d.strip() for d in fields["Depends"].split(",")]
    assert "python3 (>= 3.11)" in depends and "python3-venv" in depends
    control = tmp_path / "control"
    _dpkg_deb("--control", str(deb), str(control))
    assert (control / "conffiles").read_text().split() == ["/etc/smsgw/smsgw.toml"]
    for script in ("postinst", "prerm", "postrm"):
        path = control / script
        assert path.stat().st_mode & 0o111, script
        assert subprocess.run(["sh", "-n", str(path)]).returncode == 0, script
    postinst = (control / "postinst").read_text()
    assert "WHEELS=/usr/lib/smsgw/wheels" in postinst
    assert '--no-index --find-links "$WHEELS" smsgw' in postinst
    assert 'init --config "$CONF" --no-token' in postinst
    assert "[ -d /run/systemd/system ]" in postinst  # started only where systemd runs


@pytest.mark.timeout(180)
@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_deb_contents_modes_and_unit(debs: dict[str, Path], arch: str, tmp_path: Path) -> None:
    deb = debs[arch]
    listing = {}
    for line in _dpkg_deb("--contents", str(deb)).splitlines():
        perms, owner, *_, path = line.split(None, 5)
        listing[path.split(" -> ")[0].removeprefix(".")] = (perms, owner, path)
    assert listing["/etc/smsgw/"][:2] == ("drwxr-x---", "root/root")
    assert listing["/etc/smsgw/smsgw.toml"][:2] == ("-rw-r-----", "root/root")
    assert listing["/usr/bin/smsgw"][2].endswith("-> /opt/smsgw/bin/smsgw")
    wheels = [p for p in listing if p.startswith("/usr/lib/smsgw/wheels/smsgw-")]
    assert len(wheels) == 1 and wheels[0].endswith("-py3-none-any.whl")
    assert "/usr/lib/smsgw/wheels/SHA256SUMS" in listing
    for doc in ("install.md", "README.md", "copyright", "smsgw.example.toml"):
        assert f"/usr/share/doc/smsgw/{doc}" in listing
    assert not [p for p in listing if p.startswith(("/opt/", "/var/"))]  # made by postinst

    root = tmp_path / "root"
    _dpkg_deb("--extract", str(deb), str(root))
    unit = (root / "usr/lib/systemd/system/smsgw.service").read_text()
    directives = [line for line in unit.splitlines() if line and not line.startswith("#")]
    assert "ExecStart=/opt/smsgw/bin/smsgw run --config /etc/smsgw/smsgw.toml" in directives
    for line in (
        "User=smsgw",
        "RuntimeDirectory=smsgw",
        "RuntimeDirectoryMode=0750",
        "StateDirectory=smsgw",
        "StateDirectoryMode=0700",
        "ProtectSystem=strict",
        "NoNewPrivileges=true",
        "CapabilityBoundingSet=",
    ):
        assert line in directives, line
    # Only in the drop-in the operator enables: a missing credential stops the unit.
    assert not [d for d in directives if d.startswith("LoadCredential")]
    dropin = (root / "usr/share/smsgw/systemd/tpm-credential.conf").read_text()
    assert (
        "LoadCredentialEncrypted=smsgw-master-key:/etc/credstore.encrypted/smsgw-master-key"
        in dropin.splitlines()
    )
    conf = tomllib.loads((root / "etc/smsgw/smsgw.toml").read_text())
    assert conf["data_dir"] == "/var/lib/smsgw"


def test_unit_and_tpm_dropin_pass_systemd_analyze(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / "smsgw.service"
    text = (REPO / "systemd" / "smsgw.service").read_text()
    fake = tmp_path / "bin" / "smsgw"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    unit.write_text(text.replace("/opt/smsgw/bin/smsgw", str(fake)))
    dropin = tmp_path / "smsgw.service.d"
    dropin.mkdir()
    shutil.copy(REPO / "packaging" / "tpm-credential.conf", dropin)
    done = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert not done.stderr.strip(), done.stderr  # an unknown or misspelt key is only a warning


# -- install, upgrade, remove and purge in a clean Debian root (make test-package) ---------

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
    sys.path.insert(0, str(REPO / "packaging"))
    try:
        import build_deb
        import wheelhouse
    finally:
        sys.path.pop(0)
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
    await daemon.wait_log(lambda e: e.get("event") == "listening", limit=60)
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
    """Whether arm64 programs run on this amd64 machine (qemu-user-static via binfmt)."""
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
                not _arm64_runs_here(), reason="no arm64 emulation (qemu-user-static, binfmt)"
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
            token = await asyncio.to_thread(
                chroot.out, "runuser", "-u", "smsgw", "--", "smsgw", "token", "create",
                "--config", "/etc/smsgw/smsgw.toml", "--scope", "send,read,phi",
            )  # fmt: skip
            assert TOKEN_RE.fullmatch(token), token
            tls = _tls(root)
            daemon = await _start(chroot, port)
            async with aiohttp.ClientSession() as http:
                try:
                    await _healthz(http, daemon, tls)
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
