"""Take a backup: a consistent copy of a live store with SQLite's online backup API.

Theory of operation. The copy is read from a connection of its own (never the writer's),
opened read-only, which first pins a read transaction: in WAL mode that is a snapshot of
the last commit, which the gateway's writer never waits for, and which stays the same
while the writer goes on committing (so the backup API never has to restart the copy).
Pages are copied `step_pages` at a time, each step reported as progress. The copy is
written to a hidden temporary file in the target directory, switched from WAL to a
rollback journal (so it is one self-contained file), fsynced, hashed; the manifest is
written the same way; then both are renamed into place, the database first, and the
directory fsynced. A backup without its manifest is therefore an unfinished one.

The copy holds what the store holds: personal fields stay AES-GCM ciphertext under data
keys wrapped by the master key, which is not in it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from gateway import __version__
from gateway.backup.manifest import (
    FORMAT,
    Manifest,
    fingerprint,
    fsync_path,
    manifest_path,
    sha256_file,
    write_new,
)
from gateway.store import crypto

DEFAULT_STEP_PAGES = 1024  # 4 MiB a step at SQLite's default page size
Progress = Callable[[int, int, str], None]


def key_generations(conn: sqlite3.Connection) -> dict[str, list[int]]:
    rows = conn.execute("SELECT purpose, generation FROM keyring ORDER BY purpose, generation")
    found: dict[str, list[int]] = {}
    for purpose, generation in rows:
        found.setdefault(str(purpose), []).append(int(generation))
    return found


def backup_name(out_dir: Path, now: float) -> Path:
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
    candidate = out_dir / f"smsgw-{stamp}.db"
    n = 1
    while candidate.exists() or manifest_path(candidate).exists():
        n += 1
        candidate = out_dir / f"smsgw-{stamp}-{n}.db"
    return candidate


def take(
    db_path: Path,
    out_dir: Path,
    master_key: bytes,
    *,
    step_pages: int = DEFAULT_STEP_PAGES,
    progress: Progress | None = None,
) -> tuple[Path, Manifest]:
    """Copy the store at `db_path` into `out_dir`; returns the backup and its manifest."""
    report = progress or (lambda done, total, what: None)
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = time.time()
    final = backup_name(out_dir, now)
    tmp = out_dir / f".{final.name}.tmp"
    tmp_manifest = out_dir / f".{manifest_path(final).name}.tmp"
    write_new(tmp, b"")
    try:
        _copy(db_path, tmp, step_pages, report)
        manifest = _describe(tmp, master_key, now, report)
        write_new(tmp_manifest, manifest.to_json())
        tmp.rename(final)
        tmp_manifest.rename(manifest_path(final))
        fsync_path(out_dir)
    except BaseException:
        for leftover in (tmp, tmp_manifest, *_sidecars(tmp)):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        raise
    return final, manifest


def _copy(db_path: Path, tmp: Path, step_pages: int, report: Progress) -> None:
    if not db_path.exists():
        raise FileNotFoundError(f"no store at {db_path}")
    source = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, isolation_level=None)
    target = sqlite3.connect(tmp, isolation_level=None)
    try:
        source.execute("PRAGMA busy_timeout = 10000")
        source.execute("BEGIN")
        source.execute("SELECT count(*) FROM sqlite_master").fetchone()  # pins the snapshot

        def step(status: int, remaining: int, total: int) -> None:
            report(total - remaining, total, "backup: pages copied")

        source.backup(target, pages=step_pages, progress=step)
        source.execute("COMMIT")
        # One file with no -wal beside it: a rollback journal, written in full now.
        target.execute("PRAGMA journal_mode = DELETE").fetchone()
    finally:
        target.close()
        source.close()
    fsync_path(tmp)


def _describe(tmp: Path, master_key: bytes, now: float, report: Progress) -> Manifest:
    conn = sqlite3.connect(f"file:{tmp}?mode=ro", uri=True)
    try:
        schema_version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        page_count = int(conn.execute("PRAGMA page_count").fetchone()[0])
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        generations = key_generations(conn)
        # The copy must open with the key it is described by.
        for purpose, generation, wrapped in conn.execute(
            "SELECT purpose, generation, wrapped FROM keyring"
        ):
            crypto.unwrap_key(master_key, purpose, generation, wrapped)
    finally:
        conn.close()
    digest = sha256_file(tmp, lambda done, total: report(done, total, "backup: bytes hashed"))
    return Manifest(
        format=FORMAT,
        created_at=datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
        smsgw_version=__version__,
        schema_version=schema_version,
        page_count=page_count,
        page_size=page_size,
        sha256=digest,
        key_generations=generations,
        key_fingerprint=fingerprint(master_key),
    )


def _sidecars(path: Path) -> list[Path]:
    return [path.with_name(path.name + suffix) for suffix in ("-journal", "-wal", "-shm")]
