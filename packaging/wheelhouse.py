"""The offline wheelhouse: smsgw's wheel and every runtime wheel it needs, per CPU.

    python packaging/wheelhouse.py --out dist/wheelhouse --arch amd64 --arch arm64 \\
        --python 3.11 --python 3.12 --python 3.13

For each architecture, `<out>/<arch>/` gets smsgw's own wheel (built here from a copy of
the sources) and, for every Python version, the wheels pip picks for that CPU with
`--only-binary=:all:`: nothing is ever compiled on the target. Platform wheels are taken
for manylinux up to glibc 2.36 (Raspberry Pi OS and Debian bookworm; trixie has 2.41 and
takes them too). `SHA256SUMS` lists every file, as `sha256sum -c` reads it. An offline
install is `pip install --no-index --find-links <out>/<arch> smsgw`.

A dependency published only as a source archive is built here into a wheel: if that
wheel is pure Python (`-none-any`) it serves every CPU and goes into the wheelhouse;
otherwise the build stops and names it, since it could not be installed offline on that
CPU (the "every dependency installable on arm64" check).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

MACHINES = {"amd64": "x86_64", "arm64": "aarch64"}
GLIBC_MAX = 36  # bookworm's glibc 2.36: the oldest system the package targets
SOURCES = ("pyproject.toml", "README.md", "gateway", "drivers", "admin_ui")
IGNORED = shutil.ignore_patterns("node_modules", "__pycache__", "*.pyc", ".*")
UNSATISFIED = re.compile(r"satisfies the requirement (\S+)")
PIP = [sys.executable, "-m", "pip"]


class WheelhouseError(Exception):
    """Why the wheelhouse cannot be built; the message names the dependency."""


def platforms(arch: str) -> list[str]:
    machine = MACHINES[arch]
    tags = [f"manylinux2014_{machine}"]
    tags += [f"manylinux_2_{minor}_{machine}" for minor in range(17, GLIBC_MAX + 1)]
    return tags


def build_own_wheel(project: Path, work: Path, version: str | None) -> Path:
    """smsgw's wheel from a copy of the sources (no build/ or egg-info left in the tree)."""
    src = work / "src"
    src.mkdir()
    for name in SOURCES:
        if (project / name).is_dir():
            shutil.copytree(project / name, src / name, ignore=IGNORED)
        elif (project / name).exists():
            shutil.copy(project / name, src / name)
    if version is not None:
        pyproject = src / "pyproject.toml"
        text, n = re.subn(
            r'(?m)^version = "[^"]*"$', f'version = "{version}"', pyproject.read_text()
        )
        if n != 1:
            raise WheelhouseError(f"{project}/pyproject.toml: no version line to set")
        pyproject.write_text(text)
    out = work / "own"
    _pip("wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src))
    (wheel,) = out.glob("*.whl")
    return wheel


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(  # noqa: S603 - pip of this interpreter, arguments built here
        [*PIP, *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise subprocess.CalledProcessError(done.returncode, args, done.stdout, tail)
    return done


def pure_wheel(requirement: str, work: Path, index: list[str]) -> Path | None:
    """Build `requirement` from its source archive; its wheel if pure Python, else None."""
    sdists = work / "sdist"
    shutil.rmtree(sdists, ignore_errors=True)
    _pip(
        "download", "-q", "--no-deps", "--no-binary=:all:", "--no-build-isolation",
        "-d", str(sdists), *index, requirement,
    )  # fmt: skip
    (sdist,) = sdists.iterdir()
    built = work / "built"
    shutil.rmtree(built, ignore_errors=True)
    _pip("wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(built), str(sdist))
    (wheel,) = built.glob("*.whl")
    return wheel if wheel.name.endswith("-none-any.whl") else None


def download(own: Path, dest: Path, arch: str, python: str, work: Path, index: list[str]) -> None:
    """Every wheel `own` needs on `arch` under `python`, into dest."""
    pure = work / "pure"
    pure.mkdir(exist_ok=True)
    tried: set[str] = set()
    plat = [arg for tag in platforms(arch) for arg in ("--platform", tag)]
    while True:
        try:
            _pip(
                "download", "-q", "--only-binary=:all:", *plat,
                "--python-version", python, "--implementation", "cp",
                "-d", str(dest), "--find-links", str(pure), *index, str(own),
            )  # fmt: skip
            return
        except subprocess.CalledProcessError as e:
            found = UNSATISFIED.search(e.stderr or "")
            if found is None:
                raise WheelhouseError(
                    f"pip could not gather the wheels for {arch} on Python {python}:\n{e.stderr}"
                ) from None
            requirement = found.group(1)
            name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]
            where = f"linux/{arch} ({MACHINES[arch]}) on Python {python}"
            if name in tried:
                raise WheelhouseError(f"{name}: no wheel for {where}") from None
            tried.add(name)
            try:
                wheel = pure_wheel(requirement, work, index)
            except (subprocess.CalledProcessError, ValueError) as built:
                detail = getattr(built, "stderr", None) or str(built)
                raise WheelhouseError(
                    f"{name}: no wheel for {where}, and its source archive did not build"
                    f" here, so it cannot be shown to be pure Python:\n{detail}"
                ) from None
            if wheel is None:
                raise WheelhouseError(
                    f"{name}: no wheel for {where} and it is not pure Python (its source"
                    " builds a platform wheel), so it cannot be installed offline there"
                ) from None
            shutil.move(wheel, pure / wheel.name)
            print(f"wheelhouse: {name} has no wheel; built {wheel.name} (pure Python)")


def write_sums(folder: Path) -> None:
    lines = []
    for path in sorted(folder.iterdir()):
        if path.name != "SHA256SUMS":
            lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n")
    (folder / "SHA256SUMS").write_text("".join(lines))


def build(
    out: Path,
    arches: list[str],
    pythons: list[str],
    project: Path,
    *,
    version: str | None = None,
    index: list[str] | None = None,
) -> dict[str, Path]:
    index = index or []
    with tempfile.TemporaryDirectory(prefix="smsgw-wheelhouse-") as tmp:
        work = Path(tmp)
        own = build_own_wheel(project, work, version)
        folders = {}
        for arch in arches:
            dest = out / arch
            shutil.rmtree(dest, ignore_errors=True)  # never mix in an older build's wheels
            dest.mkdir(parents=True)
            for python in pythons:
                print(f"wheelhouse: {arch} Python {python}", flush=True)
                download(own, dest, arch, python, work, index)
            for wheel in (work / "pure").glob("*.whl"):
                shutil.copy(wheel, dest / wheel.name)
            write_sums(dest)
            folders[arch] = dest
        return folders


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("dist/wheelhouse"))
    p.add_argument("--arch", action="append", choices=sorted(MACHINES), required=True)
    p.add_argument("--python", action="append", required=True, help="e.g. 3.11 (repeatable)")
    p.add_argument("--project", type=Path, default=Path(__file__).resolve().parent.parent)
    p.add_argument("--version", help="build smsgw's wheel with this version instead")
    p.add_argument("--find-links", action="append", default=[], help="also look here")
    p.add_argument("--no-index", action="store_true", help="only --find-links, no index")
    args = p.parse_args(argv)
    index = [arg for d in args.find_links for arg in ("--find-links", str(d))]
    if args.no_index:
        index.append("--no-index")
    try:
        folders = build(args.out, args.arch, args.python, args.project, version=args.version,
                        index=index)  # fmt: skip
    except WheelhouseError as e:
        print(f"wheelhouse: {e}", file=sys.stderr)
        return 1
    for arch, folder in folders.items():
        count = len(list(folder.glob("*.whl")))
        print(f"wheelhouse: {folder} ({arch}): {count} wheels, SHA256SUMS")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
