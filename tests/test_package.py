"""The Debian package and the offline wheelhouse (packaging/).

Fast, offline checks run in the suite: `smsgw init --config` as the package's postinst
runs it, the wheelhouse builder on a local index of made-up packages (a pure sdist is
turned into a wheel; a native package with no arm64 wheel is named and refused), and the
.deb for amd64 and arm64 read back with dpkg-deb (control fields, conffile, unit, modes,
maintainer scripts). The install, upgrade, remove and purge in clean Debian roots are in
tests/test_package_root.py (`make test-package`).
"""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from tests.test_cli import TOKEN_RE

REPO = Path(__file__).resolve().parent.parent


def packaging_modules() -> tuple[Any, Any]:
    """packaging/build_deb.py and packaging/wheelhouse.py (scripts, not a package)."""
    sys.path.insert(0, str(REPO / "packaging"))
    try:
        import build_deb
        import wheelhouse
    finally:
        sys.path.pop(0)
    return build_deb, wheelhouse


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
    build_deb, wheelhouse = packaging_modules()
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
