"""The committed front-end libraries are exactly the pinned npm packages' files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

UI = Path(__file__).resolve().parent.parent / "admin_ui"
VENDOR = UI / "static" / "vendor"
MANIFEST = json.loads((UI / "vendor.json").read_text())["files"]
PINS = json.loads((UI / "package.json").read_text())["dependencies"]
LOCK = json.loads((UI / "package-lock.json").read_text())["packages"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("entry", MANIFEST, ids=[e["file"] for e in MANIFEST])
def test_committed_file_matches_recorded_checksum(entry: dict[str, str]) -> None:
    assert _sha256(VENDOR / entry["file"]) == entry["sha256"]


@pytest.mark.parametrize("entry", MANIFEST, ids=[e["file"] for e in MANIFEST])
def test_recorded_version_is_the_pinned_and_locked_one(entry: dict[str, str]) -> None:
    package = entry["package"]
    assert PINS[package] == entry["version"], "package.json pins an exact version"
    locked = LOCK[f"node_modules/{package}"]
    assert locked["version"] == entry["version"]
    assert locked["integrity"].startswith("sha512-")


def test_every_vendor_file_is_in_the_manifest() -> None:
    on_disk = {p.name for p in VENDOR.iterdir()}
    assert on_disk == {e["file"] for e in MANIFEST}


@pytest.mark.parametrize("entry", MANIFEST, ids=[e["file"] for e in MANIFEST])
def test_committed_file_matches_installed_package(entry: dict[str, str]) -> None:
    """After `make vendor` (npm ci checked the tarballs' sha512): copy == package file."""
    root = UI / "node_modules" / entry["package"]
    if not root.exists():
        pytest.skip("admin_ui/node_modules absent; `make vendor` installs it")
    installed = json.loads((root / "package.json").read_text())["version"]
    assert installed == entry["version"]
    assert _sha256(root / entry["source"]) == entry["sha256"]
