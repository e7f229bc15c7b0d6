"""The manifest written beside each backup, the key fingerprint, and durable file writes."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

FORMAT = "smsgw-backup/1"
MANIFEST_SUFFIX = ".manifest.json"
_FINGERPRINT_LABEL = b"smsgw backup: master key fingerprint v1"
_CHUNK = 1 << 20


class ManifestError(Exception):
    """The manifest is missing, unreadable, or not one this smsgw writes."""


@dataclass(frozen=True)
class Manifest:
    format: str
    created_at: str  # UTC, ISO 8601
    smsgw_version: str
    schema_version: int
    page_count: int
    page_size: int
    sha256: str  # of the .db file
    key_generations: dict[str, list[int]]  # keyring purpose -> generations present
    key_fingerprint: str  # `fingerprint(master key)`

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        try:
            data: Any = json.loads(raw)
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise ManifestError(f"not a {FORMAT} manifest")
            generations = {
                str(purpose): [int(g) for g in gens]
                for purpose, gens in data["key_generations"].items()
            }
            return cls(
                format=FORMAT,
                created_at=str(data["created_at"]),
                smsgw_version=str(data["smsgw_version"]),
                schema_version=int(data["schema_version"]),
                page_count=int(data["page_count"]),
                page_size=int(data["page_size"]),
                sha256=str(data["sha256"]),
                key_generations=generations,
                key_fingerprint=str(data["key_fingerprint"]),
            )
        except ManifestError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ManifestError(f"the manifest is malformed ({type(e).__name__})") from None


def manifest_path(backup: Path) -> Path:
    return backup.with_name(backup.name + MANIFEST_SUFFIX)


def read_manifest(backup: Path) -> Manifest:
    path = manifest_path(backup)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"{path} is missing (an incomplete or foreign backup)") from None
    except OSError as e:
        raise ManifestError(f"{path}: {e.strerror}") from None
    return Manifest.from_json(raw)


def fingerprint(master_key: bytes) -> str:
    """Names the master key without revealing it: an HMAC of a constant under the key."""
    return hmac.new(master_key, _FINGERPRINT_LABEL, hashlib.sha256).hexdigest()[:32]


def sha256_file(path: Path, progress: Callable[[int, int], None] | None = None) -> str:
    digest = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return digest.hexdigest()


def fsync_path(path: Path) -> None:
    """fsync a file, or a directory (so a rename in it is durable)."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to a file that must not exist yet, with `mode`, and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
