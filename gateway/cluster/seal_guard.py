"""The database refuses a value sealed under a retired field key generation.

Theory of operation. A node cut off from PostgreSQL through a whole rotation and
retirement (its lease lapsed, so the retirement did not wait for it) still holds the
retired key when it comes back, and may seal a message under it before its first
heartbeat takes the keyring up. Checking on the node (the lease, the keyring) before the
insert leaves a window: the check passes, then the insert reaches the server after the
retirement committed. So the check is the insert's own: a BEFORE trigger on every
encrypted table (cluster migration 26) looks the first three bytes of each ciphertext
(`crypto.generation_prefix`) up in `retired_field_generations`, which the retirement
fills in the transaction that deletes the wrapped keys (`key_retire.py`), and raises a
`check_violation` named `CONSTRAINT`. Nothing of that transaction is kept.

Why this is airtight under concurrency: the retirement's transaction holds every
encrypted table in SHARE mode from before its last count until it commits, and an insert
or update holds ROW EXCLUSIVE on its table from before its trigger runs until it
commits; the two conflict. Either the writer held its lock first (the retirement's
count under its lock sees the row and refuses), or the retirement did (the writer waits
for it, and its trigger, a VOLATILE function reading in READ COMMITTED with a snapshot
taken after the lock was granted, sees the retired generation). A REPEATABLE READ
writer's snapshot may predate the retirement, so a sealed value is refused outside READ
COMMITTED (no writer of the gateway seals in another level).

Every write path meets the refusal in one place: the node's pool (`GuardedPool`) turns
it, raised out of any `pool.connection()` block, into `KeyRetired`, after taking the
keyring up at once (`refused`). An API write then answers `503 key_retired` with
`Retry-After` (`api/shaping.error_answer`; the send path in its use case), and the
client's retry is sealed under the current generation. A background writer whose
transaction seals its values inside it (inbound, HL7 and clinical jobs, reminders, a
campaign's pass) runs it once more at once (`retried`), sealed under the key just taken
up. Cost: one index probe of an (almost always empty) table per row written with a
sealed column.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
import structlog
from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from gateway import request_scope
from gateway.cluster.db_breaker import Breaker
from gateway.logs import exception_summary
from gateway.store_failure import KeyRetired

if TYPE_CHECKING:
    from gateway.cluster.shared_keys import KeyringWatch

log = structlog.get_logger("smsgw.cluster")

T = TypeVar("T")

CONSTRAINT = "sealed_under_retired_key"
TABLE = "retired_field_generations"

# What migration 26 guards: every encrypted table and column of the shared store then
# (`keyring.SEALED`), frozen here: a table sealed later adds its trigger in its own
# migration through `guard_sql` (`tests/pg/test_seal_guard.py` fails until it does).
GUARDED_26: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("messages", ("to_ct", "body_ct", "reference_ct", "callback_ct")),
    ("inbound", ("sender_ct", "recipient_ct", "body_ct")),
    ("inbound_parts", ("sender_ct", "recipient_ct", "body_ct")),
    ("kannel_dlr", ("url_ct", "receiver_ct")),
    ("contacts", ("number_ct", "patient_ref_ct")),
    ("consent_ledger", ("disclosure_ct", "note_ct")),
    ("consent_reviews", ("body_ct",)),
    ("panel_users", ("totp_secret_ct",)),
    ("patients", ("mrn_ct",)),
    ("appointments", ("ext_key_ct", "location_label_ct", "provider_ct")),
    ("clinical_notices", ("variables_ct",)),
    ("hl7_messages", ("raw_ct",)),
    ("hl7_outbound", ("message_ct",)),
    ("medication_schedules", ("label_ct",)),
    ("campaigns", ("content_ct",)),
)


def trigger_name(table: str) -> str:
    return f"{table}_sealed_generation"


def guard_sql(table: str, columns: Sequence[str]) -> str:
    """The trigger function and trigger refusing a row of `table` with any of `columns`
    sealed under a retired generation (or sealed outside READ COMMITTED)."""
    name = trigger_name(table)
    heads = ", ".join(f"substring(NEW.{c} FROM 1 FOR 3)" for c in columns)
    return f"""
    CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql VOLATILE AS $$
    DECLARE
        heads bytea[] := ARRAY[{heads}];
    BEGIN
        IF EXISTS (SELECT 1 FROM {TABLE} WHERE prefix = ANY(heads)) THEN
            RAISE EXCEPTION 'a value of {table} is sealed under a retired field key generation'
                USING ERRCODE = 'check_violation', CONSTRAINT = '{CONSTRAINT}',
                      TABLE = '{table}';
        END IF;
        IF current_setting('transaction_isolation') <> 'read committed'
                AND array_remove(heads, NULL) <> '{{}}' THEN
            RAISE EXCEPTION 'a value of {table} is sealed outside READ COMMITTED'
                USING ERRCODE = 'check_violation', CONSTRAINT = '{CONSTRAINT}',
                      TABLE = '{table}';
        END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER {name} BEFORE INSERT OR UPDATE OF {", ".join(columns)} ON {table}
        FOR EACH ROW EXECUTE FUNCTION {name}();
    """  # noqa: S608 - fixed names


def migration_26() -> str:
    """The table of retired generations (filled with those a retirement before this
    migration deleted: a field generation below the newest one that is gone from the
    keyring) and the guard of every encrypted table."""
    head = f"""
    CREATE TABLE {TABLE} (
        generation integer PRIMARY KEY,
        prefix     bytea NOT NULL UNIQUE,
        retired_at timestamptz NOT NULL DEFAULT clock_timestamp()
    );
    INSERT INTO {TABLE} (generation, prefix)
        SELECT g, '\\x01'::bytea || int2send(g::smallint)
        FROM generate_series(1, (SELECT coalesce(max(generation), 1) - 1 FROM keyring
                                 WHERE purpose = 'field')) AS g
        WHERE NOT EXISTS (SELECT 1 FROM keyring WHERE purpose = 'field' AND generation = g);
    """  # noqa: S608 - fixed names
    return head + "".join(guard_sql(t, cs) for t, cs in GUARDED_26)


def is_refusal(e: BaseException) -> bool:
    """Whether `e` (or what it was raised from) is the guard's refusal (a `KeyRetired`
    is raised from it)."""
    seen: BaseException | None = e
    for _ in range(4):  # the refusal, wrapped by a savepoint's or the use case's error
        if seen is None:
            return False
        diag = getattr(seen, "diag", None)
        if getattr(diag, "constraint_name", None) == CONSTRAINT:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def refused(e: BaseException, keys: KeyringWatch | None) -> None:
    """If `e` is the guard's refusal: take the shared keyring up now (not at the next
    heartbeat) and raise `KeyRetired` from it; else return."""
    if not is_refusal(e):
        return
    log.warning("sealed_under_retired_key_refused")
    await _take_up(keys)
    raise KeyRetired("this node sealed under a retired key; it has taken the current one up") from e


async def retried(keys: KeyringWatch | None, write: Callable[[], Awaitable[T]]) -> T:
    """`write()`, run once more if the guard refused it, after the keyring was taken up
    (a background writer that seals inside `write`: its retry is sealed under the
    current generation); `KeyRetired` if the retry is refused too."""
    try:
        return await write()
    except Exception as e:
        if not is_refusal(e):
            raise
        if not isinstance(e, KeyRetired):  # not yet taken up by the pool
            log.warning("sealed_under_retired_key_refused")
            await _take_up(keys)
    log.info("sealed_under_retired_key_retried")
    try:
        return await write()
    except KeyRetired:
        raise
    except Exception as e:
        await refused(e, keys)
        raise


async def _take_up(keys: KeyringWatch | None) -> None:
    if keys is not None:
        with contextlib.suppress(psycopg.Error):  # the heartbeat's check takes it up then
            await keys.check()


class GuardedPool(AsyncConnectionPool[AsyncConnection[TupleRow]]):
    """The node's pool: the guard's refusal, raised out of a `connection()` block, is
    raised again as `KeyRetired` once `keys` (set when the keyring is loaded) took the
    current generation up: every write path of the node meets it so. It also keeps the
    node's `Breaker` (`db_breaker.py`): a request waits at most `request_timeout` for a
    connection, and none while the database is known to be away."""

    keys: KeyringWatch | None = None

    def __init__(
        self, conninfo: str, *, node_id: str, request_timeout: float, **options: Any
    ) -> None:
        super().__init__(conninfo, configure=self._connected, **options)
        self.breaker = Breaker(node_id)
        self.request_timeout = request_timeout
        self._checking: asyncio.Task[None] | None = None

    def connection(  # type: ignore[override]  # the same use, one frame cheaper
        self,
        timeout: float | None = None,
    ) -> _Guarded:
        if request_scope.answering():
            self.breaker.admit()
            limit = self.request_timeout
            timeout = limit if timeout is None else min(timeout, limit)
        return _Guarded(super().connection(timeout), self)

    async def _connected(self, conn: AsyncConnection[TupleRow]) -> None:
        self.breaker.answered()  # a new connection: the database answers again

    def lost(self, why: str) -> None:
        """The database did not answer (`why`: the kind of failure): requests are
        refused until it does, and the idle connections are checked now (a dead one
        replaced), so that the first requests after it is back do not meet them."""
        if self.breaker.away:
            return
        self.breaker.failed(why)
        if self._checking is None:
            self._checking = asyncio.create_task(self._check_idle(), name="cluster-pool-check")

    async def _check_idle(self) -> None:
        try:
            await self.check()
        except Exception as e:  # the pool closing: nothing left to check
            log.warning("pool_check_failed", error=exception_summary(e))
        finally:
            self._checking = None

    async def close(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - the pool's own
        if self._checking is not None:
            self._checking.cancel()
            await asyncio.gather(self._checking, return_exceptions=True)
        await super().close(timeout)


class _Guarded:
    """`pool.connection()`'s block with the refusal turned into `KeyRetired`, and the
    database's answer (or its silence) told to the pool's breaker (a class, not a
    generator: every statement of the node passes here, the accept's too)."""

    __slots__ = ("_conn", "_inner", "_pool")

    def __init__(
        self,
        inner: contextlib.AbstractAsyncContextManager[AsyncConnection[TupleRow]],
        pool: GuardedPool,
    ) -> None:
        self._inner = inner
        self._pool = pool

    async def __aenter__(self) -> AsyncConnection[TupleRow]:
        try:
            self._conn = await self._inner.__aenter__()
        except PoolTimeout:
            self._pool.lost("PoolTimeout")
            raise
        return self._conn

    async def __aexit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        if e is None:
            if self._pool.breaker.away:
                self._pool.breaker.answered()
        elif self._conn.broken:  # lost under a statement or before its COMMIT
            self._pool.lost(type(e).__name__)
        try:
            done = await self._inner.__aexit__(kind, e, tb)  # rolled back, given back
        except psycopg.errors.CheckViolation as raised:  # what the guard raises
            await refused(raised, self._pool.keys)
            raise
        if isinstance(e, psycopg.errors.CheckViolation) and not done:
            await refused(e, self._pool.keys)
        return done
