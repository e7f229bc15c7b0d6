"""Check a backup before trusting it: `smsgw backup --verify FILE`, and the first step of
every restore.

Checks, in order: the manifest is there and ours; the file's SHA-256 is the manifest's;
SQLite's `integrity_check` passes; its schema version is the manifest's and not newer
than this smsgw's; and, when the master key is at hand, that it is the key the backup
was made with (fingerprint), that it unwraps every data key in the keyring, and that the
audit chain verifies under it. The file is opened read-only and immutable: verifying
writes nothing, not even a -shm beside it.
"""

from __future__ import annotations

import hmac
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.backup.manifest import Manifest, ManifestError, fingerprint, read_manifest, sha256_file
from gateway.backup.snapshot import key_generations
from gateway.store import crypto
from gateway.store.audit_log import GENESIS, audit_key, canonical, chain_hash
from gateway.store.schema import MIGRATIONS

# Exit codes of `smsgw backup --verify` (and reasons a restore is refused).
OK = 0
BAD = 1  # the backup failed a check: do not restore it
UNREADABLE = 2  # no such file, or no manifest: nothing could be checked
WRONG_KEY = 3  # the backup is sound but the master key at hand is not its key

Progress = Callable[[int, int, str], None]


@dataclass
class Verdict:
    code: int = OK
    lines: list[str] = field(default_factory=list)
    manifest: Manifest | None = None

    def fail(self, code: int, line: str) -> None:
        self.lines.append(line)
        if self.code == OK:
            self.code = code


def verify(
    backup: Path,
    master_key: bytes | None,
    *,
    progress: Progress | None = None,
) -> Verdict:
    report = progress or (lambda done, total, what: None)
    verdict = Verdict()
    if not backup.is_file():
        verdict.fail(UNREADABLE, f"backup: {backup} is not a file")
        return verdict
    try:
        manifest = read_manifest(backup)
    except ManifestError as e:
        verdict.fail(UNREADABLE, f"manifest: {e}")
        return verdict
    verdict.manifest = manifest
    verdict.lines.append(
        f"manifest: made {manifest.created_at} by smsgw {manifest.smsgw_version},"
        f" schema {manifest.schema_version}, {manifest.page_count} pages"
    )
    digest = sha256_file(backup, lambda done, total: report(done, total, "verify: bytes hashed"))
    if not hmac.compare_digest(digest, manifest.sha256):
        verdict.fail(BAD, "checksum: MISMATCH (the file was changed or damaged after the backup)")
        return verdict
    verdict.lines.append(f"checksum: ok (sha256 {digest})")
    if master_key is not None and fingerprint(master_key) != manifest.key_fingerprint:
        verdict.fail(
            WRONG_KEY,
            f"master key: does NOT fit this backup (its fingerprint {fingerprint(master_key)},"
            f" the backup's {manifest.key_fingerprint}); find the key it was made with",
        )
        return verdict
    try:
        conn = sqlite3.connect(f"file:{backup}?mode=ro&immutable=1", uri=True)
    except sqlite3.Error as e:
        verdict.fail(BAD, f"database: cannot open ({e})")
        return verdict
    try:
        _check_database(conn, manifest, master_key, verdict)
    except sqlite3.DatabaseError as e:
        verdict.fail(BAD, f"database: unreadable ({e})")
    finally:
        conn.close()
    return verdict


def _check_database(
    conn: sqlite3.Connection, manifest: Manifest, master_key: bytes | None, verdict: Verdict
) -> None:
    problems = [row[0] for row in conn.execute("PRAGMA integrity_check(20)")]
    if problems != ["ok"]:
        verdict.fail(BAD, f"integrity_check: FAILED ({'; '.join(problems[:3])})")
        return
    verdict.lines.append("integrity_check: ok")
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version != manifest.schema_version:
        verdict.fail(BAD, f"schema: version {version}, the manifest says {manifest.schema_version}")
        return
    if version > len(MIGRATIONS):
        verdict.fail(
            BAD,
            f"schema: version {version} is newer than this smsgw ({len(MIGRATIONS)});"
            f" restore it with smsgw {manifest.smsgw_version} or later",
        )
        return
    verdict.lines.append(f"schema: version {version} (this smsgw: {len(MIGRATIONS)})")
    if key_generations(conn) != manifest.key_generations:
        verdict.fail(BAD, "keyring: its generations differ from the manifest's")
        return
    if master_key is None:
        verdict.lines.append("master key: not at hand; keyring and audit chain not checked")
        return
    try:
        for purpose, generation, wrapped in conn.execute(
            "SELECT purpose, generation, wrapped FROM keyring"
        ):
            crypto.unwrap_key(master_key, purpose, generation, wrapped)
    except crypto.MasterKeyError:
        verdict.fail(WRONG_KEY, "master key: fits the fingerprint but not the keyring")
        return
    generations = ", ".join(f"{p} {g}" for p, g in sorted(manifest.key_generations.items()))
    verdict.lines.append(f"master key: fits; keyring opens ({generations})")
    problem, entries = audit_chain(conn, master_key)
    if problem is not None:
        verdict.fail(BAD, f"audit chain: BROKEN: {problem}")
    else:
        verdict.lines.append(f"audit chain: intact ({entries} entries)")


def audit_chain(conn: sqlite3.Connection, master_key: bytes) -> tuple[str | None, int]:
    """The first problem in the copy's audit chain (None if intact), and its length."""
    has_table = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_log'"
    ).fetchone()
    if has_table is None:
        return None, 0
    key = audit_key(master_key)
    expected, prev, count = 1, GENESIS, 0
    rows = conn.execute(
        "SELECT seq, at, actor, action, target_kind, target_id, detail, prev_hash, hash"
        " FROM audit_log ORDER BY seq"
    )
    for seq, at, actor, action, kind, target, detail, prev_hash, digest in rows:
        count += 1
        if seq != expected:
            return f"entry {expected} is missing (next found is {seq})", count
        if prev_hash != prev:
            return f"entry {seq} does not follow entry {seq - 1}", count
        entry = canonical(seq, at, actor, action, kind, target, detail)
        if not hmac.compare_digest(chain_hash(key, prev, entry), digest):
            return f"entry {seq} was changed after it was written", count
        expected, prev = seq + 1, digest
    return None, count
