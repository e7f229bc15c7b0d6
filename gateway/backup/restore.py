"""Restore a backup into an empty data directory (`smsgw restore`), offline only.

Order, so that a refusal writes nothing: take the data directory's lock (the one `smsgw
run` holds, so a running gateway refuses the restore and no gateway starts during it),
refuse a directory that holds a store already, read the master key, verify the backup
with it (checksum, integrity, schema, key fingerprint, keyring, audit chain), and only
then copy: into a temporary file beside the store, hashed again on the way (the file
copied is the file checked), fsynced, renamed into place, the directory fsynced. The
restore is then recorded in the restored store's own audit trail (which also brings an
older schema up to date). When run as root, every file written takes the data
directory's owner and group, so the service user can open them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
from collections.abc import Callable
from pathlib import Path

from drivers.clock import SystemClock
from gateway.backup.manifest import Manifest, fsync_path
from gateway.backup.verify import OK, verify
from gateway.startup import LOCK_FILE, DataDirLock, StartupFault
from gateway.store import crypto
from gateway.store.audit_log import AuditTrail, audit_key
from gateway.store.store import Store

REFUSED = 4  # exit code: the data directory is live, holds a store, or has no key
_CHUNK = 1 << 20
_SIDECARS = ("-wal", "-shm", "-journal")

Out = Callable[[str], None]
Progress = Callable[[int, int, str], None]


def restore(
    backup: Path,
    data_dir: Path,
    db_path: Path,
    key_path: Path,
    *,
    out: Out,
    progress: Progress,
    actor: str,
) -> int:
    """Restore `backup` as `db_path` of `data_dir`; the exit status (0, or why not)."""
    lock = DataDirLock(data_dir)
    try:
        lock.acquire()
    except StartupFault as e:
        out(f"restore: refused: {e}")
        return REFUSED
    try:
        code = _restore_locked(backup, db_path, key_path, out, progress, actor)
        _own_like_dir(data_dir, [data_dir / LOCK_FILE])
        return code
    finally:
        lock.release()


def _restore_locked(
    backup: Path, db_path: Path, key_path: Path, out: Out, progress: Progress, actor: str
) -> int:
    present = [p.name for p in _store_files(db_path) if p.exists()]
    if present:
        out(
            f"restore: refused: {db_path.parent} already holds a store ({', '.join(present)});"
            " restore only into an empty data directory (move the old one aside first)"
        )
        return REFUSED
    try:
        if not key_path.exists():
            raise crypto.MasterKeyError(f"no master key at {key_path}")
        key = crypto.read_master_key(key_path)
    except crypto.MasterKeyError as e:
        out(
            f"restore: refused: {e}. Put the master key this backup was made with there"
            " first (it is kept apart from backups), or name it with --key"
        )
        return REFUSED
    verdict = verify(backup, key, progress=progress)
    for line in verdict.lines:
        out(line)
    if verdict.code != OK or verdict.manifest is None:
        out("restore: refused: the backup did not verify; nothing was written")
        return verdict.code
    try:
        _copy(backup, db_path, verdict.manifest, progress)
    except OSError as e:  # no room, or the backup changed under us: nothing left behind
        out(f"restore: failed: {e.strerror or e}; nothing was restored")
        return 1
    _own_like_dir(db_path.parent, _store_files(db_path))
    asyncio.run(_record(db_path, key, actor, verdict.manifest))
    _own_like_dir(db_path.parent, _store_files(db_path))
    out(f"restored: {db_path} from {backup.name} (made {verdict.manifest.created_at})")
    return OK


def _store_files(db_path: Path) -> list[Path]:
    return [db_path, *(db_path.with_name(db_path.name + s) for s in _SIDECARS)]


def _copy(backup: Path, db_path: Path, manifest: Manifest, progress: Progress) -> None:
    tmp = db_path.with_name(f".{db_path.name}.restore.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # left by a restore that was killed: never a live store
    total = backup.stat().st_size
    digest = hashlib.sha256()
    done = 0
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as dst, backup.open("rb") as src:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                dst.write(chunk)
                done += len(chunk)
                progress(done, total, "restore: bytes copied")
            dst.flush()
            os.fsync(dst.fileno())
        if not hmac.compare_digest(digest.hexdigest(), manifest.sha256):
            raise OSError(f"{backup} changed while it was being restored")
        tmp.rename(db_path)
        fsync_path(db_path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


async def _record(db_path: Path, key: bytes, actor: str, manifest: Manifest) -> None:
    store = Store(db_path, key)
    await store.open()
    try:
        trail = AuditTrail(store, audit_key(key), SystemClock())
        await trail.record(
            actor,
            "store_restored",
            "backup",
            manifest.sha256[:32],
            made_at=manifest.created_at,
            schema_version=manifest.schema_version,
        )
    finally:
        await store.close()


def _own_like_dir(directory: Path, paths: list[Path]) -> None:
    """As root, hand what the restore wrote to the directory's owner (the service user);
    anyone else writes files they own already."""
    if os.geteuid() != 0:
        return
    st = directory.stat()
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.chown(path, st.st_uid, st.st_gid)
