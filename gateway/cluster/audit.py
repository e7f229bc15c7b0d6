"""The audit trail in the shared store: one hash chain per node, plus anchors.

Each node appends to its own chain (`audit_log` rows keyed by `(node_id, seq)`), with
exactly SQLite's entry serialisation and HMAC (`gateway/store/audit_log.py`): nodes
never contend for one head, and a SQLite trail copied by `smsgw store migrate` as the
chain of one node still verifies. An anchor (`audit_anchors`, a chain of its own under
the same key) records the head `(seq, hash)` of every node's chain at the time it was
written. So the set is verifiable across nodes: a row changed, deleted or inserted in
any chain breaks that chain; a chain cut back below an anchored head, or removed
whole, no longer holds the entry the anchor names. What neither can show is entries
after the newest anchor being cut off; `verify` reports every head so it can be
compared with one recorded elsewhere.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass, field

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from gateway.store.audit_log import GENESIS, AuditEntry, canonical, chain_hash, encode_detail
from gateway.store.audit_log import DetailValue as DetailValue

ANCHOR_LOCK = 0x736D7367_77001802  # pg_advisory_xact_lock key of the anchor chain
_CHAIN_LOCK_CLASS = 0x736D7305  # two-key advisory lock: (class, hashtext(node_id))
PAGE = 1000


@dataclass(frozen=True, slots=True)
class ChainHead:
    node_id: str
    entries: int
    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class ClusterVerification:
    ok: bool
    heads: list[ChainHead] = field(default_factory=list)
    anchors: int = 0
    problems: list[str] = field(default_factory=list)


async def append(
    conn: AsyncConnection[TupleRow],
    key: bytes,
    node_id: str,
    at: float,
    actor: str,
    action: str,
    target_kind: str | None = None,
    target_id: str | None = None,
    **ids: DetailValue,
) -> int:
    """Chain one entry onto `node_id`'s head, in its own transaction; its seq."""
    detail = encode_detail(ids)
    async with conn.transaction():
        await lock_chain(conn, node_id)
        cur = await conn.execute(
            "SELECT seq, hash FROM audit_log WHERE node_id = %s ORDER BY seq DESC LIMIT 1",
            (node_id,),
        )
        head = await cur.fetchone()
        seq, prev = (int(head[0]) + 1, str(head[1])) if head else (1, GENESIS)
        entry = canonical(seq, at, actor, action, target_kind, target_id, detail)
        await conn.execute(
            "INSERT INTO audit_log (node_id, seq, at, actor, action, target_kind, target_id,"
            " detail, prev_hash, hash) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            (node_id, seq, at, actor, action, target_kind, target_id, detail, prev,
             chain_hash(key, prev, entry)),
        )  # fmt: skip
    return seq


async def lock_chain(conn: AsyncConnection[TupleRow], node_id: str) -> None:
    """Hold `node_id`'s chain until the transaction ends: one writer at its head."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_CHAIN_LOCK_CLASS, node_id)
    )


def _anchor_entry(seq: int, at: float, node_id: str, heads: str) -> bytes:
    return json.dumps(["anchor", seq, at, node_id, heads], separators=(",", ":")).encode()


async def anchor(
    conn: AsyncConnection[TupleRow],
    key: bytes,
    node_id: str,
    at: float,
    *,
    only_if_moved: bool = False,
) -> int | None:
    """Record every node's chain head now, as the next anchor (written by `node_id`);
    its seq. With `only_if_moved` (a node's periodic anchor), None and nothing written
    when no head moved since the last anchor: an idle cluster does not grow the trail."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (ANCHOR_LOCK,))
        cur = await conn.execute(
            "SELECT DISTINCT ON (node_id) node_id, seq, hash FROM audit_log"
            " ORDER BY node_id, seq DESC"
        )
        heads = json.dumps(
            {str(n): [int(s), str(h)] for n, s, h in await cur.fetchall()},
            sort_keys=True,
            separators=(",", ":"),
        )
        cur = await conn.execute("SELECT seq, hash FROM audit_anchors ORDER BY seq DESC LIMIT 1")
        last = await cur.fetchone()
        seq, prev = (int(last[0]) + 1, str(last[1])) if last else (1, GENESIS)
        if only_if_moved and last is not None:
            cur = await conn.execute("SELECT heads FROM audit_anchors WHERE seq = %s", (last[0],))
            before = await cur.fetchone()
            if before is not None and before[0] == heads:
                return None
        digest = chain_hash(key, prev, _anchor_entry(seq, at, node_id, heads))
        await conn.execute(
            "INSERT INTO audit_anchors (seq, at, node_id, heads, prev_hash, hash)"
            " VALUES (%s,%s,%s,%s,%s,%s)",
            (seq, at, node_id, heads, prev, digest),
        )
    return seq


async def verify(conn: AsyncConnection[TupleRow], key: bytes) -> ClusterVerification:
    """Every node's chain from its first entry, then every anchor against the chains."""
    problems: list[str] = []
    heads: list[ChainHead] = []
    hashes: dict[str, dict[int, str]] = {}  # only the entries anchors name are looked up
    named = await _anchored(conn)
    cur = await conn.execute("SELECT DISTINCT node_id FROM audit_log ORDER BY node_id")
    for (node,) in await cur.fetchall():
        head, problem, seen = await _walk(conn, key, str(node), named.get(str(node), set()))
        heads.append(head)
        hashes[str(node)] = seen
        if problem is not None:
            problems.append(problem)
    anchors = await _check_anchors(conn, key, hashes, problems)
    return ClusterVerification(not problems, heads, anchors, problems)


async def _anchored(conn: AsyncConnection[TupleRow]) -> dict[str, set[int]]:
    """Per node, the seqs some anchor names."""
    named: dict[str, set[int]] = {}
    cur = await conn.execute("SELECT heads FROM audit_anchors")
    for (heads,) in await cur.fetchall():
        try:
            for node, (seq, _) in json.loads(heads).items():
                named.setdefault(node, set()).add(int(seq))
        except (ValueError, TypeError):
            continue  # reported by the anchor chain's own check
    return named


async def _walk(
    conn: AsyncConnection[TupleRow], key: bytes, node: str, named: set[int]
) -> tuple[ChainHead, str | None, dict[int, str]]:
    expected, prev, count = 1, GENESIS, 0
    seen: dict[int, str] = {}
    while rows := await (
        await conn.execute(
            "SELECT seq, at, actor, action, target_kind, target_id, detail, prev_hash, hash"
            " FROM audit_log WHERE node_id = %s AND seq >= %s ORDER BY seq LIMIT %s",
            (node, expected, PAGE),
        )
    ).fetchall():
        for row in rows:
            e = AuditEntry(*row)
            count += 1
            problem = _problem(key, e, expected, prev)
            if problem is not None:
                return ChainHead(node, count, expected - 1, prev), f"node {node}: {problem}", seen
            if e.seq in named:
                seen[e.seq] = e.hash
            expected, prev = e.seq + 1, e.hash
    return ChainHead(node, count, expected - 1, prev), None, seen


def _problem(key: bytes, e: AuditEntry, expected: int, prev: str) -> str | None:
    if e.seq != expected:
        return f"entry {expected} is missing (next found is {e.seq})"
    if e.prev_hash != prev:
        return f"entry {e.seq} does not follow entry {e.seq - 1}"
    entry = canonical(e.seq, e.at, e.actor, e.action, e.target_kind, e.target_id, e.detail)
    if not hmac.compare_digest(chain_hash(key, prev, entry), e.hash):
        return f"entry {e.seq} was changed after it was written"
    return None


async def _check_anchors(
    conn: AsyncConnection[TupleRow],
    key: bytes,
    hashes: dict[str, dict[int, str]],
    problems: list[str],
) -> int:
    expected, prev, count = 1, GENESIS, 0
    cur = await conn.execute(
        "SELECT seq, at, node_id, heads, prev_hash, hash FROM audit_anchors ORDER BY seq"
    )
    for seq, at, writer, heads, prev_hash, digest in await cur.fetchall():
        count += 1
        entry = _anchor_entry(int(seq), float(at), str(writer), str(heads))
        if seq != expected or prev_hash != prev:
            problems.append(f"anchor {expected} is missing or out of place")
            return count
        if not hmac.compare_digest(chain_hash(key, prev, entry), str(digest)):
            problems.append(f"anchor {seq} was changed after it was written")
            return count
        for node, (head_seq, head_hash) in json.loads(heads).items():
            if hashes.get(node, {}).get(int(head_seq)) != head_hash:
                problems.append(
                    f"anchor {seq}: node {node}'s entry {head_seq} is missing or changed"
                )
        expected, prev = int(seq) + 1, str(digest)
    return count
