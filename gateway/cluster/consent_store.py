"""The consent ledger on the cluster's PostgreSQL: one list for every node.

As SQLite's (`gateway/consent/ledger.py`): decisions appended, never changed (a trigger
refuses it), each with `consent_state` brought up to date in its transaction;
disclosure and note texts and the contact's number encrypted by `FieldCipher` bound to
the same row ids and columns, contacts found by the same blind index, so rows copied
from SQLite decrypt here. The policy's reads (`state_rows`, `time_zones`) run in the
caller's transaction: the accept's and the claim's.

A check and the decision it allows (`lifts`: an opt-in that needs an opt-out to lift;
an imported chunk's comparison with the ledger) hold the contacts' advisory locks
(`lock_contacts`), as do the accepts that count a
frequency cap for that contact: parallel requests on any nodes take turns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from gateway.cluster import appointment_optout, outbox_store, queue_sql
from gateway.cluster.lease import Pool
from gateway.cluster.nodes import Incarnation
from gateway.consent import import_rule, ledger
from gateway.consent.ledger import ALL_PROGRAMS, Entry, LedgerRow, contact_row_id
from gateway.consent.purposes import SCOPE_ALL, Purpose
from gateway.consent.review_store import ReviewQueue
from gateway.consent.settings import DEFAULT_PROGRAM, ConsentConfig, policy_table
from gateway.models import State
from gateway.store.consent_sql import (
    Contact,
    ContactChanges,
    ExportRow,
    StateRow,
    contact_columns,
)
from gateway.store.crypto import FieldCipher
from gateway.store.transitions import Transition

Conn = AsyncConnection[TupleRow]
_LOCK_SPACE = 0x636E7374  # "cnst": the two-key advisory locks' space of contacts

_INSERT = (
    "INSERT INTO consent_ledger (id, contact_idx, at, decision, scope, program, source,"
    " inbound_id, message_id, actor, disclosure_ct, note_ct, node_id)"
    " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING seq"
)
_UPSERT = (
    "INSERT INTO consent_state (contact_idx, program, scope, opted, seq, since, source,"
    " written_seq) VALUES (%s,%s,%s,%s,%s,%s,%s,%s)"
    " ON CONFLICT (contact_idx, program, scope) DO UPDATE SET opted = excluded.opted,"
    " seq = excluded.seq, since = excluded.since, source = excluded.source,"
    " written_seq = coalesce(excluded.written_seq, consent_state.written_seq)"
)


async def lock_contacts(conn: Conn, idxs: Sequence[bytes]) -> None:
    """Hold each contact's advisory lock until the transaction ends, in one order
    (no deadlock between two transactions locking overlapping sets)."""
    keys = sorted({int.from_bytes(i[:4], "big", signed=True) for i in idxs})
    if keys:
        await conn.execute(
            "SELECT pg_advisory_xact_lock(%s, k) FROM unnest(%s::integer[]) AS k ORDER BY k",
            (_LOCK_SPACE, keys),
        )


async def ensure_contact(
    conn: Conn, cipher: FieldCipher, idx: bytes, number: str, at: float
) -> None:
    """`ledger.ensure_contact` on PostgreSQL: the contact's row, if it has none yet."""
    await conn.execute(
        "INSERT INTO contacts (idx, number_ct, created_at, updated_at) VALUES (%s,%s,%s,%s)"
        " ON CONFLICT (idx) DO NOTHING",
        (idx, cipher.encrypt(number, contact_row_id(idx), "number"), at, at),
    )


async def append(conn: Conn, cipher: FieldCipher, e: Entry, node_id: str) -> tuple[str, int]:
    """`ledger.append` on PostgreSQL, in the caller's transaction, its `consent.changed`
    outbox row too: (ledger id, seq)."""
    await ensure_contact(conn, cipher, e.contact_idx, e.number, e.at)
    entry_id, entry = ledger.entry_row(cipher, e)
    row = await (await conn.execute(_INSERT, (*entry, node_id))).fetchone()
    assert row is not None
    seq = int(row[0])
    await conn.execute(_UPSERT, ledger.standing_row(e, seq))
    await outbox_store.consent_row(conn, entry_id, e.at, e.program, e.scope, e.decision)
    return entry_id, seq


async def import_entries(
    conn: Conn, cipher: FieldCipher, entries: Sequence[tuple[Entry, bool]], node_id: str
) -> list[str]:
    """`consent_sql.import_entries` on PostgreSQL, in the caller's transaction, which
    holds the entries' contacts' locks (so two imports of one list append it once)."""
    return [await _import_one(conn, cipher, e, dated, node_id) for e, dated in entries]


async def _import_one(conn: Conn, cipher: FieldCipher, e: Entry, dated: bool, node_id: str) -> str:
    same = await (await conn.execute(*_pg(import_rule.same_decisions(e, dated)))).fetchall()
    if import_rule.already_recorded(cipher, same, e):
        return import_rule.UNCHANGED
    newer = await (await conn.execute(*_pg(import_rule.newer_standing(e)))).fetchone()
    before = await (await conn.execute(*_pg(import_rule.standing_before(e)))).fetchone()
    await append(conn, cipher, e, node_id)
    if newer is None:
        return import_rule.APPENDED
    await conn.execute(*_pg(import_rule.put_back(e, before)))
    return import_rule.SUPERSEDED


def _pg(query: import_rule.Query) -> import_rule.Query:
    """A rule's query in psycopg's placeholders (its SQL holds no other `?` or `%`)."""
    sql, args = query
    return sql.replace("?", "%s"), args


async def has_opt_out(conn: Conn, idx: bytes, program: str, scope: str) -> bool:
    """`consent_sql.has_opt_out` on PostgreSQL."""
    sql = "SELECT 1 FROM consent_state WHERE contact_idx = %s AND opted = 'out'"
    args: list[Any] = [idx]
    if program != ALL_PROGRAMS:
        sql += " AND program IN (%s, '*')"
        args.append(program)
    if scope != SCOPE_ALL:
        sql += " AND scope = %s"
        args.append(scope)
    return await (await conn.execute(sql + " LIMIT 1", args)).fetchone() is not None


async def state_rows(conn: Conn, idxs: Sequence[bytes]) -> dict[bytes, list[ledger.StateRow]]:
    """`ledger.state_rows` on PostgreSQL: these contacts' `consent_state` rows."""
    found: dict[bytes, list[ledger.StateRow]] = {}
    if not idxs:
        return found
    rows = await (
        await conn.execute(
            "SELECT contact_idx, program, scope, opted, written_seq, seq FROM consent_state"
            " WHERE contact_idx = ANY(%s)",
            (list(set(idxs)),),
        )
    ).fetchall()
    for r in rows:
        idx = bytes(r[0])
        found.setdefault(idx, []).append((idx, r[1], r[2], r[3], r[4], int(r[5])))
    return found


async def time_zones(conn: Conn, idxs: Sequence[bytes]) -> dict[bytes, str | None]:
    if not idxs:
        return {}
    rows = await (
        await conn.execute(
            "SELECT idx, time_zone FROM contacts WHERE idx = ANY(%s)", (list(set(idxs)),)
        )
    ).fetchall()
    return {bytes(r[0]): r[1] for r in rows}


async def merge_migrated(conn: Conn) -> int:
    """SQLite's standing, copied by `smsgw store migrate` into `migrated_consent_state`,
    merged into the shared `consent_state` once (a row decided on the cluster since
    keeps its newer decision); the ledger's numbering moves past the migrated seqs so
    a later decision is newer than every migrated one. Returns the rows merged."""
    async with conn.transaction():
        merged = await conn.execute(
            "WITH m AS (UPDATE migrated_consent_state SET merged_at = clock_timestamp()"
            " WHERE merged_at IS NULL RETURNING contact_idx, program, scope, opted, seq,"
            " since, source, written_seq)"
            " INSERT INTO consent_state SELECT * FROM m"
            " ON CONFLICT (contact_idx, program, scope) DO UPDATE SET opted = excluded.opted,"
            " seq = excluded.seq, since = excluded.since, source = excluded.source,"
            " written_seq = coalesce(excluded.written_seq, consent_state.written_seq)"
            " WHERE consent_state.seq < excluded.seq"
        )
        await conn.execute(
            "SELECT setval(pg_get_serial_sequence('consent_ledger', 'seq'), x.m)"
            " FROM (SELECT max(seq) AS m FROM migrated_consent_state) x,"
            " consent_ledger_seq_seq s WHERE x.m > s.last_value"
        )
    return merged.rowcount


class SharedWithdrawal:
    """`consent/withdraw.Withdrawal` on the shared queue: an opt-out makes the messages
    waiting for that contact which the ledger now refuses `blocked` at once, in its
    transaction (the claim would block them anyway; this tells the caller now). An
    appointment's opt-out also cancels that appointment's pending notices
    (`appointment_optout.py`: its callers hold them before the contact's lock)."""

    def __init__(self, config: ConsentConfig, me: Callable[[], Incarnation]) -> None:
        self._config = config
        self._table = policy_table(config)
        self._me = me

    async def after(self, conn: Conn, entry: Entry) -> list[str]:
        if not self._config.enabled or entry.decision != "opt_out":
            return []
        blocked = await appointment_optout.withdraw(conn, entry, self._me())
        rows = await (
            await conn.execute(
                "SELECT id, purpose, route_hint FROM messages WHERE to_index = %s"
                " AND state IN ('queued', 'scheduled') FOR UPDATE",
                (entry.contact_idx,),
            )
        ).fetchall()
        if not rows:
            return blocked
        standing = (await state_rows(conn, [entry.contact_idx])).get(entry.contact_idx, [])
        for message_id, purpose, hint in rows:
            try:
                policy = self._table[Purpose(purpose)]
            except ValueError:  # none recorded: accepted before purposes existed
                continue
            program = DEFAULT_PROGRAM if hint is None else self._config.program_for_route(hint)
            if entry.program not in (ALL_PROGRAMS, program):
                continue
            reason = ledger.standing_among(standing, program, policy).refusal(policy)
            if reason is not None:
                t = Transition(message_id, State.BLOCKED, error_code=reason)
                await queue_sql.apply(conn, t, entry.at, self._me())
                blocked.append(message_id)
        return blocked


class ClusterLedger:
    """`ConsentLedger` (gateway/consent/ledger_store.py) on the shared PostgreSQL."""

    shared = True

    def __init__(
        self,
        pool: Pool,
        cipher: FieldCipher,
        node_id: str,
        withdrawal: SharedWithdrawal | None = None,
        *,
        reviews: ReviewQueue,  # `consent_reviews.ClusterReviews` (which builds on this module)
    ) -> None:
        self._pool = pool
        self._cipher = cipher
        self._node_id = node_id
        self._withdrawal = withdrawal
        self.reviews = reviews

    async def record(self, entry: Entry, *, lifts: bool = False) -> tuple[str, int] | None:
        async with self._pool.connection() as conn, conn.transaction():
            await appointment_optout.hold_notices(conn, appointment_optout.appointments_of([entry]))
            await lock_contacts(conn, [entry.contact_idx])
            if lifts and not await has_opt_out(conn, entry.contact_idx, entry.program, entry.scope):
                return None
            done = await append(conn, self._cipher, entry, self._node_id)
            if self._withdrawal is not None:
                await self._withdrawal.after(conn, entry)
            return done

    async def import_entries(self, chunk: Sequence[tuple[Entry, bool]]) -> list[str]:
        async with self._pool.connection() as conn, conn.transaction():
            held = appointment_optout.appointments_of(e for e, _ in chunk)
            await appointment_optout.hold_notices(conn, held)
            await lock_contacts(conn, [e.contact_idx for e, _ in chunk])
            outcomes = await import_entries(conn, self._cipher, chunk, self._node_id)
            if self._withdrawal is not None:
                for (entry, _), outcome in zip(chunk, outcomes, strict=True):
                    if outcome != import_rule.UNCHANGED:
                        await self._withdrawal.after(conn, entry)
            return outcomes

    async def contact(self, idx: bytes) -> Contact | None:
        r = await self._one(
            "SELECT number_ct, patient_ref_ct, language, time_zone, created_at, updated_at"
            " FROM contacts WHERE idx = %s",
            (idx,),
        )
        if r is None:
            return None
        c, row_id = self._cipher, contact_row_id(idx)
        return Contact(
            c.decrypt(bytes(r[0]), row_id, "number"),
            None if r[1] is None else c.decrypt(bytes(r[1]), row_id, "patient_ref"),
            r[2],
            r[3],
            r[4],
            r[5],
        )

    async def put_contact(
        self, idx: bytes, number: str, changes: ContactChanges, now: float
    ) -> None:
        columns = contact_columns(self._cipher, idx, changes)
        sets = ", ".join(["updated_at = %s", *(f"{c} = %s" for c in columns)])
        async with self._pool.connection() as conn, conn.transaction():
            await ensure_contact(conn, self._cipher, idx, number, now)
            await conn.execute(
                f"UPDATE contacts SET {sets} WHERE idx = %s".encode(),  # noqa: S608 - fixed columns
                (now, *columns.values(), idx),
            )

    async def states(self, idx: bytes) -> list[StateRow]:
        rows = await self._all(
            "SELECT program, scope, opted, since, source, written_seq FROM consent_state"
            " WHERE contact_idx = %s ORDER BY program, scope",
            (idx,),
        )
        return [StateRow(r[0], r[1], r[2], r[3], r[4], r[5] is not None) for r in rows]

    async def history(self, idx: bytes) -> list[LedgerRow]:
        rows = await self._all(
            f"SELECT {ledger.LEDGER_COLUMNS} FROM consent_ledger"  # noqa: S608 - a constant
            " WHERE contact_idx = %s ORDER BY seq",
            (idx,),
        )
        return [ledger.row_of(self._cipher, _plain(r)) for r in rows]

    async def export_page(self, after_seq: int, limit: int) -> list[ExportRow]:
        rows = await self._all(
            "SELECT l.id, l.seq, l.at, l.decision, l.scope, l.program, l.source,"
            " l.inbound_id, l.message_id, l.actor, l.disclosure_ct, l.note_ct, c.number_ct,"
            " l.contact_idx FROM consent_ledger l LEFT JOIN contacts c ON c.idx = l.contact_idx"
            " WHERE l.seq > %s ORDER BY l.seq LIMIT %s",
            (after_seq, limit),
        )
        c = self._cipher
        out = []
        for r in rows:
            e = ledger.row_of(c, _plain(r))
            idx = bytes(r[13])
            number = (
                None if r[12] is None else c.decrypt(bytes(r[12]), contact_row_id(idx), "number")
            )
            out.append(
                ExportRow(
                    e.seq,
                    e.id,
                    idx.hex(),
                    number,
                    e.at,
                    e.decision,
                    e.scope,
                    e.program,
                    e.source,
                    e.actor,
                    e.inbound_id,
                    e.message_id,
                    e.disclosure,
                    e.note,
                )
            )
        return out

    async def _one(self, sql: str, params: Sequence[Any]) -> Any:
        async with self._pool.connection() as conn:
            return await (await conn.execute(sql.encode(), params)).fetchone()

    async def _all(self, sql: str, params: Sequence[Any]) -> list[Any]:
        async with self._pool.connection() as conn:
            return await (await conn.execute(sql.encode(), params)).fetchall()


def _plain(r: Sequence[Any]) -> list[Any]:
    """A row as SQLite gives it: seq an int, ciphertexts bytes."""
    return [bytes(v) if isinstance(v, memoryview) else v for v in r]
