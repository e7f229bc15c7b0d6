"""The audit trail: append-only, hash-chained, keyed (the `audit_log` table).

Theory of operation. Every entry is one row of `audit_log`: `seq` (1, 2, 3, ... with no
gaps), `at` (UTC seconds), `actor` (`user:<id>`, `token:<id>`, `console`,
`anonymous`, `system`), `action`, an optional target (kind and id) and `detail`, a JSON
object of ids and codes only, never PHI. Its `hash` is

    HMAC-SHA256(audit key, prev_hash || "\\n" || canonical JSON of the entry)

where `prev_hash` is the previous entry's hash (64 zeros for the first). The audit key
is derived from the master key, which never lives in the database: someone holding only
the database file can edit, delete, insert or reorder rows, but cannot recompute the
chain after doing so, so `verify()` finds the first entry that no longer fits. (A plain
SHA-256 chain would be recomputable by that same person.) What a chain alone cannot
show is the newest entries being cut off the end; `verify()` reports the head (last seq
and hash) so it can be compared with one recorded elsewhere, e.g. a log line.

Entries are written through the store's single writer, each inside the writer's
transaction, so seq order is commit order, and an awaited `record()` is durable. Front ends read
and verify it through `gateway/usecases/audit_log.py`.
SQLite triggers refuse UPDATE and DELETE on the table as a second line of defence.

Repeats. What an unauthenticated client can repeat at will (failed and throttled
sign-ins) would otherwise grow the trail, and the disk, without bound. Such entries go
through `record_repeated`: the first one is appended as usual and opens a window (a row
of `audit_repeats`, keyed by a hash of actor, action, target and detail); identical ones
within the window only add to its count; when the window is over (at the next identical
entry, or at housekeeping, `close_repeats`) an entry `repeated` is appended whose target
is the first entry's seq and whose detail holds the total count. So a client costs at
most two entries per window for each distinct thing it does, every count ends up in the
chain, and successes, lock-outs and every other decision are still one entry each. The
open count lives in `audit_repeats` until then, outside the chain.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers.clock import Clock
from gateway.store.store import Store

GENESIS = "0" * 64
_KEY_LABEL = b"smsgw audit chain v1"
_NAME = re.compile(r"^[a-z][a-z0-9_.:-]{0,63}$")
_MAX_VALUE = 200
DetailValue = str | int | bool | None
# The action of the entry that closes a window of repeats (`record_repeated`).
REPEATED = "repeated"


def audit_key(master_key: bytes) -> bytes:
    """The chain's HMAC key: derived from, and only as secret as, the master key."""
    return hmac.new(master_key, _KEY_LABEL, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    at: float
    actor: str
    action: str
    target_kind: str | None
    target_id: str | None
    detail: str
    prev_hash: str
    hash: str

    def detail_map(self) -> dict[str, DetailValue]:
        loaded: dict[str, DetailValue] = json.loads(self.detail)
        return loaded


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    reason: str | None = None
    head_seq: int = 0
    head_hash: str = GENESIS


def canonical(
    seq: int,
    at: float,
    actor: str,
    action: str,
    target_kind: str | None,
    target_id: str | None,
    detail: str,
) -> bytes:
    return json.dumps(
        [seq, at, actor, action, target_kind, target_id, detail],
        ensure_ascii=True,
        separators=(",", ":"),
    ).encode()


def chain_hash(key: bytes, prev_hash: str, entry: bytes) -> str:
    return hmac.new(key, prev_hash.encode() + b"\n" + entry, hashlib.sha256).hexdigest()


def encode_detail(ids: Mapping[str, DetailValue]) -> str:
    """Detail as canonical JSON; only short scalar values under plain names."""
    for name, value in ids.items():
        if not _NAME.match(name):
            raise ValueError(f"audit detail key {name!r} is not a plain name")
        if not isinstance(value, str | int | bool) and value is not None:
            raise TypeError(f"audit detail {name} must be an id, a number or a flag")
        if isinstance(value, str) and len(value) > _MAX_VALUE:
            raise ValueError(f"audit detail {name} is too long for an id")
    return json.dumps(dict(ids), sort_keys=True, ensure_ascii=True, separators=(",", ":"))


def _checked(action: str, ids: Mapping[str, DetailValue]) -> str:
    if not _NAME.match(action):
        raise ValueError(f"audit action {action!r} is not a plain name")
    return encode_detail(ids)


class AuditTrail:
    def __init__(self, store: Store, key: bytes, clock: Clock) -> None:
        self._store = store
        self._key = key
        self._clock = clock

    async def record(
        self,
        actor: str,
        action: str,
        target_kind: str | None = None,
        target_id: str | None = None,
        **ids: DetailValue,
    ) -> int:
        """Append one entry and wait until it is committed; returns its seq."""
        detail = _checked(action, ids)
        at = self._clock.time()
        return await self._store.writer.run(
            lambda conn: self._append(conn, at, actor, action, target_kind, target_id, detail)
        )

    def append_in(
        self,
        conn: sqlite3.Connection,
        at: float,
        actor: str,
        action: str,
        target_kind: str | None = None,
        target_id: str | None = None,
        **ids: DetailValue,
    ) -> int:
        """Append one entry inside the caller's writer transaction (it commits, or
        not, with the change it records)."""
        return self._append(conn, at, actor, action, target_kind, target_id, _checked(action, ids))

    async def record_each(
        self, actor: str, action: str, target_kind: str, target_ids: Sequence[str]
    ) -> None:
        """One entry per target (a page of PHI reads), in one transaction."""
        detail = _checked(action, {})
        at = self._clock.time()

        def job(conn: sqlite3.Connection) -> None:
            for target_id in target_ids:
                self._append(conn, at, actor, action, target_kind, target_id, detail)

        await self._store.writer.run(job)

    async def record_repeated(
        self,
        window: float,
        actor: str,
        action: str,
        target_kind: str | None = None,
        target_id: str | None = None,
        **ids: DetailValue,
    ) -> int | None:
        """Like `record`, for what an attacker can repeat at will (failed sign-ins): the
        first entry opens a window of `window` seconds in which identical entries (same
        actor, action, target and detail) are only counted; the count is appended as a
        `repeated` entry when the window closes. Returns the seq if an entry was written."""
        detail = _checked(action, ids)
        at = self._clock.time()
        key = hashlib.sha256(
            json.dumps([actor, action, target_kind, target_id, detail]).encode()
        ).hexdigest()

        def job(conn: sqlite3.Connection) -> int | None:
            counted = conn.execute(
                "UPDATE audit_repeats SET count = count + 1, last_at = ?"
                " WHERE key = ? AND closes_at > ?",
                (at, key, at),
            ).rowcount
            if counted:
                return None
            self._close(conn, at, key)
            seq = self._append(conn, at, actor, action, target_kind, target_id, detail)
            conn.execute(
                "INSERT INTO audit_repeats VALUES (?,?,?,?,?)", (key, seq, at + window, 1, at)
            )
            return seq

        return await self._store.writer.run(job)

    async def close_repeats(self) -> int:
        """Append the count of every repeat window that is over; returns how many closed."""
        now = self._clock.time()
        return await self._store.writer.run(lambda conn: self._close(conn, now))

    def _close(self, conn: sqlite3.Connection, at: float, key: str | None = None) -> int:
        """Close the windows over at `at` (only `key`'s, if given): each with more than
        the opening entry gets its `repeated` entry, and every one is forgotten."""
        rows = conn.execute(
            "SELECT r.key, r.first_seq, r.count, r.last_at, a.actor, a.action"
            " FROM audit_repeats r JOIN audit_log a ON a.seq = r.first_seq"
            " WHERE r.closes_at <= ? AND (? IS NULL OR r.key = ?) ORDER BY r.first_seq",
            (at, key, key),
        ).fetchall()
        for row_key, first_seq, count, last_at, actor, action in rows:
            if count > 1:
                detail = encode_detail({"action": action, "count": count, "last_at": int(last_at)})
                self._append(conn, at, actor, REPEATED, "audit_log", str(first_seq), detail)
            conn.execute("DELETE FROM audit_repeats WHERE key = ?", (row_key,))
        return len(rows)

    def _append(
        self,
        conn: sqlite3.Connection,
        at: float,
        actor: str,
        action: str,
        target_kind: str | None,
        target_id: str | None,
        detail: str,
    ) -> int:
        """Chain one entry onto the head, inside the writer's transaction."""
        head = conn.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS)
        entry = canonical(seq, at, actor, action, target_kind, target_id, detail)
        conn.execute(
            "INSERT INTO audit_log VALUES (?,?,?,?,?,?,?,?,?)",
            (
                seq,
                at,
                actor,
                action,
                target_kind,
                target_id,
                detail,
                prev,
                chain_hash(self._key, prev, entry),
            ),
        )
        return int(seq)

    async def entries(self, *, before: int | None = None, limit: int = 100) -> list[AuditEntry]:
        """Newest first; `before` is a seq for paging."""
        sql = "SELECT * FROM audit_log"
        params: tuple[int, ...] = ()
        if before is not None:
            sql += " WHERE seq < ?"
            params = (before,)
        cur = await self._store.reader.execute(sql + " ORDER BY seq DESC LIMIT ?", (*params, limit))
        return [AuditEntry(*row) for row in await cur.fetchall()]

    async def verify(self) -> Verification:
        """Walk the chain from the first entry; the first one that does not fit is reported."""
        walk = _ChainWalk()
        # A page at a time by seq: each read is fetched whole, so the trail is never all
        # in memory at once; entries are only ever appended, so pages cannot shift.
        while rows := await (
            await self._store.reader.execute(PAGE_SQL, (walk.expected_seq,))
        ).fetchall():
            if (verdict := walk.take(self._problem, rows)) is not None:
                return verdict
        return walk.intact()

    async def verify_apart(self) -> Verification:
        """`verify` on a read-only connection of its own, in a worker thread: the walk of
        a long trail (about 1.6 s of CPU at 200,000 entries) takes no turn of the event
        loop, and the start's check need not run before the gateway serves."""
        return await asyncio.to_thread(self._verify_file, self._store.path)

    def _verify_file(self, path: Path) -> Verification:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            walk = _ChainWalk()
            while rows := conn.execute(PAGE_SQL, (walk.expected_seq,)).fetchall():
                if (verdict := walk.take(self._problem, rows)) is not None:
                    return verdict
            return walk.intact()
        finally:
            conn.close()

    def _problem(self, e: AuditEntry, expected_seq: int, prev: str) -> str | None:
        if e.seq != expected_seq:
            return f"entry {expected_seq} is missing (next found is {e.seq})"
        if e.prev_hash != prev:
            return f"entry {e.seq} does not follow entry {e.seq - 1}"
        entry = canonical(e.seq, e.at, e.actor, e.action, e.target_kind, e.target_id, e.detail)
        if not hmac.compare_digest(chain_hash(self._key, prev, entry), e.hash):
            return f"entry {e.seq} was changed after it was written"
        return None


PAGE_SQL = "SELECT * FROM audit_log WHERE seq >= ? ORDER BY seq LIMIT 1000"


class _ChainWalk:
    """Where a walk of the chain is: the next seq it expects and the hash it must follow."""

    def __init__(self) -> None:
        self.expected_seq, self.prev, self.count = 1, GENESIS, 0

    def take(
        self, problem_of: Callable[[AuditEntry, int, str], str | None], rows: Sequence[Any]
    ) -> Verification | None:
        """Check a page of rows in seq order; the verdict if one does not fit."""
        for row in rows:
            e = AuditEntry(*row)
            self.count += 1
            problem = problem_of(e, self.expected_seq, self.prev)
            if problem is not None:
                return Verification(False, self.count, min(e.seq, self.expected_seq), problem)
            self.expected_seq, self.prev = e.seq + 1, e.hash
        return None

    def intact(self) -> Verification:
        return Verification(True, self.count, head_seq=self.expected_seq - 1, head_hash=self.prev)
