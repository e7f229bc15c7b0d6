"""One inbound interface's pipeline: a frame's bytes in, the ACKs to answer out
(research §H.3-§H.8).

Theory of operation. Decode (never fails), read MSH, check it (AR/CR for what the
sender must fix), map with the registered mapper (pure, on the loop), then ONE writer
job: look the (interface, sending app, facility, control id) up — a message already
stored gets its stored ACK again and changes nothing — else store the encrypted
message with its state and its ACK and apply every command in a savepoint. A
`MappingError` from a command rolls back the commands, not the row: the message is
quarantined. Any other exception rolls the whole job back, nothing is stored, and the
sender is answered AR (retry later). Only after the commit does the ACK leave.

On a cluster the job locks what it names (`lock_keys`: the dedupe key and each
command's keys) rather than every clinical write, so messages for other patients are
applied at once on any node; a command that cannot name its rows takes the lock whole.
An appointment the message moves from another patient names that patient only once its
row is read: the job asks for those keys too (`MoreKeys`, before it writes), is rolled
back and runs again holding all of them, in the one order every job takes (so two moves
in opposite directions never deadlock); after `MAX_KEY_ROUNDS` it takes the lock whole.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

import hl7
import structlog

from drivers.clock import Clock
from gateway.clinical import mappers
from gateway.clinical.commands import (
    ERR_APPLICATION_INTERNAL,
    ERR_SEGMENT_SEQUENCE,
    ERR_UNSUPPORTED_EVENT_CODE,
    ApplyContext,
    ClinicalHooks,
    Command,
    Ignore,
    Keyed,
    LockKey,
    MappingError,
    MoreKeys,
)
from gateway.clinical.db import ClinicalDb, LocalClinicalDb
from gateway.clinical.lock_names import canonical_set
from gateway.clinical.profile import InterfaceProfile
from gateway.hl7 import ack, charset, header
from gateway.hl7 import messages_sql as sql
from gateway.hl7.settings import Hl7Interface
from gateway.logs import exception_summary
from gateway.store.store import Store

log = structlog.get_logger("smsgw.hl7")

# Rounds of a keyed job that found more keys to hold (each a move seen under the
# previous round's locks) before it takes the clinical lock whole.
MAX_KEY_ROUNDS = 3


@dataclass(frozen=True, slots=True)
class Answer:
    """What a frame is answered with: ACK texts in order (none when the sender asked
    for none), the message's state (`duplicate` for a resend, `failed` when nothing
    was stored) and whether it was committed (MLLP R2: commit ACK or NAK)."""

    acks: list[str]
    state: str
    committed: bool
    codec: str = "utf-8"


Mapped = list[Command] | MappingError


def map_text(text: str, h: header.Header, profile: InterfaceProfile) -> Mapped:
    """The commands a message maps to, or the `MappingError` that quarantines it.
    Anything else a mapper raises is a defect: it propagates (answered AR)."""
    mapper = mappers.mapper_for(h.message_type, h.event)
    reads = mappers.segments_for(h.message_type, h.event) if mapper is not None else None
    if reads is not None:
        text = scoped(text, with_phones(reads, profile), h.field_sep)
    try:
        message = hl7.parse(text)
    except (hl7.HL7Exception, ValueError, IndexError):
        return MappingError(ERR_SEGMENT_SEQUENCE, "the message cannot be parsed", "MSH")
    if mapper is None:
        return MappingError(ERR_UNSUPPORTED_EVENT_CODE, "unsupported event", "MSH-9.2")
    try:
        return list(mapper(message, profile))
    except MappingError as e:
        return e


def with_phones(reads: mappers.Reads, profile: InterfaceProfile) -> mappers.Reads:
    """`reads` and the profile's phone fields (`patients.extract` reads those)."""
    out = dict(reads)
    for source in profile.phone_fields:
        name, _, number = source.partition("-")
        known = out.get(name, frozenset())
        if known is not None and number.isdigit():
            out[name] = known | {int(number)}
    return out


def scoped(text: str, reads: mappers.Reads, field_sep: str) -> str:
    """MSH and what `reads` names, in place (other fields emptied, trailing empty ones
    dropped, other segments dropped): python-hl7 builds a container for every field
    and component it is given. MSH is kept whole unless `reads` names its fields."""
    kept = []
    for seg in text.split("\r"):
        name = seg.partition(field_sep)[0]
        if name not in reads:
            if name == "MSH":
                kept.append(seg)
            continue
        wanted = reads[name]
        if wanted is None:
            kept.append(seg)
            continue
        # MSH-1 is the separator itself: there the n-th split piece is field n + 1.
        shift, keep = (1, 2) if name == "MSH" else (0, 1)
        f = seg.split(field_sep)
        out = [v if i < keep or i + shift in wanted else "" for i, v in enumerate(f)]
        kept.append(field_sep.join(out).rstrip(field_sep))
    return "\r".join(kept) + "\r"


def lock_keys(interface: str, h: header.Header, mapped: Mapped) -> list[LockKey] | None:
    """What the message's job changes (`ClinicalDb.run`'s `keys`): its dedupe key, and
    what its commands name; None when one of them cannot say."""
    keys: list[LockKey] = [
        ("hl7_message", interface, h.sending_app, h.sending_facility, h.control_id)
    ]
    for command in mapped if isinstance(mapped, list) else ():
        named = command.lock_keys(interface) if isinstance(command, Keyed) else None
        if named is None:
            return None
        keys += named
    return keys


def known_types() -> set[str]:
    return {t for t, _ in mappers.supported()}


def apply(
    conn: sqlite3.Connection, commands: Sequence[Command], ctx: ApplyContext
) -> tuple[str, MappingError | None, str | None]:
    """Apply `commands` in a savepoint: (state, error, ignore reason)."""
    conn.execute("SAVEPOINT hl7_apply")
    try:
        for cmd in commands:
            cmd.apply(conn, ctx)
    except MappingError as e:
        conn.execute("ROLLBACK TO hl7_apply")
        conn.execute("RELEASE hl7_apply")
        return "quarantined", e, None
    except BaseException:
        conn.execute("ROLLBACK TO hl7_apply")
        conn.execute("RELEASE hl7_apply")
        raise
    conn.execute("RELEASE hl7_apply")
    if commands and all(isinstance(c, Ignore) for c in commands):
        return "ignored", None, next(c.reason for c in commands if isinstance(c, Ignore))
    return "mapped", None, None


class Hl7Inbound:
    def __init__(
        self,
        iface: Hl7Interface,
        store: Store,
        clock: Clock,
        hooks: ClinicalHooks,
        db: ClinicalDb | None = None,
    ) -> None:
        """`db`: where the messages and what they map to live (a cluster's shared
        tables: a resend to another node finds the row, under the same serial lock as
        the appointments' jobs); the store's own by default. `store` gives the blind
        index of numbers either way."""
        self.iface = iface
        self.profile = iface.profile()
        self.store = store
        self.db = db or LocalClinicalDb(store)
        self.clock = clock
        self.hooks = hooks
        self._override = (
            None if iface.ack_mode_override is None else ack.AckMode(iface.ack_mode_override)
        )

    def context(
        self, now: float, message_ref: str, held: frozenset[LockKey] | None = None
    ) -> ApplyContext:
        return ApplyContext(
            now,
            self.iface.name,
            f"hl7:{self.iface.name}",
            self.profile,
            self.store,
            self.hooks,
            message_ref,
            sealer=self.db.cipher,
            held=held,
        )

    def map(self, text: str, h: header.Header) -> Mapped:
        return map_text(text, h, self.profile)

    async def receive(self, payload: bytes) -> Answer:
        now = self.clock.time()
        decoded = charset.decode(payload, self.iface.codec)
        text = decoded.text
        rejected: header.Rejected | None = None
        if "\n" in text:
            if self.iface.lenient:
                text = text.replace("\r\n", "\r").replace("\n", "\r")
            else:
                rejected = header.Rejected(
                    ERR_SEGMENT_SEQUENCE, "segments end with LF; MLLP needs CR", "MSH"
                )
        try:
            h = header.parse(text)
        except header.Rejected as r:  # no MSH: nothing to store it under
            log.warning("hl7_rejected", interface=self.iface.name, code=r.code, reason=r.text)
            err = ack.Error(r.code, r.text, r.location)
            return Answer(self._acks(header.EMPTY, ack.Outcome.REJECT, now, err), "rejected", True)
        if rejected is None:
            try:
                header.check(h, known_types=known_types(), processing_ids=self.iface.processing_ids)
            except header.Rejected as r:
                rejected = r
        mapped: Mapped = [] if rejected is not None else self.map(text, h)
        row_id = "hl7_" + secrets.token_hex(8)
        cipher = self.db.cipher

        def job(conn: sqlite3.Connection) -> Answer:
            old = sql.find(conn, self.iface.name, h.sending_app, h.sending_facility, h.control_id)
            if old is not None and old.state != "rejected":
                sql.count_duplicate(conn, old.id, now)
                return Answer(old.ack.split("\n") if old.ack else [], "duplicate", True)
            reason: str | None = None
            error: ack.Error | None
            if rejected is not None:
                state, error = (
                    "rejected",
                    ack.Error(rejected.code, rejected.text, rejected.location),
                )
                outcome = ack.Outcome.REJECT
            else:
                failure: MappingError | None = None
                if isinstance(mapped, MappingError):
                    state, failure = "quarantined", mapped
                else:
                    ctx = self.context(now, row_id, held)
                    state, failure, reason = apply(conn, mapped, ctx)
                error = (
                    None
                    if failure is None
                    else ack.Error(failure.code, failure.text, failure.location)
                )
                outcome = ack.Outcome.ACCEPT
                if error is not None and self.iface.on_mapping_error != "accept_quarantine":
                    outcome = ack.Outcome.ERROR
            acks = self._acks(
                h, outcome, now, error if outcome is not ack.Outcome.ACCEPT else None, row_id
            )
            sql.put(
                conn,
                cipher,
                sql.Row(
                    row_id,
                    self.iface.name,
                    h.sending_app,
                    h.sending_facility,
                    h.control_id,
                    h.message_type,
                    h.event,
                    h.version_id,
                    h.message_time,
                    decoded.codec,
                    decoded.flag,
                    text,
                    state,
                    None if error is None else error.code,
                    reason if error is None else error.text,
                    None if error is None else error.location,
                    outcome.value,
                    "\n".join(acks),
                ),
                now,
                replaces=old is not None,
            )
            return Answer(acks, state, True)

        held: frozenset[LockKey] | None = None  # what the job's locks cover, as it runs
        try:
            keys = lock_keys(self.iface.name, h, mapped)
            for _ in range(MAX_KEY_ROUNDS):
                if keys is not None and self.db.shared:
                    held = canonical_set(cipher, keys)
                try:
                    answer: Answer = await self.db.run(job, keys=keys)
                    break
                except MoreKeys as more:  # rolled back: again, holding those too
                    assert keys is not None
                    keys = [*keys, *more.keys]
            else:  # moved on each round (another move in between): take the lock whole
                keys, held = None, None
                answer = await self.db.run(job, keys=None)
        except Exception as e:  # rolled back: the sender retries later
            log.error("hl7_store_failed", interface=self.iface.name, error=exception_summary(e))
            err = ack.Error(ERR_APPLICATION_INTERNAL, "internal error; resend later")
            return Answer(self._acks(h, ack.Outcome.REJECT, now, err), "failed", False)
        self._log(h, answer, decoded.flag)
        return Answer(answer.acks, answer.state, True, decoded.codec)

    def _acks(
        self,
        h: header.Header,
        outcome: ack.Outcome,
        now: float,
        error: ack.Error | None,
        row_id: str | None = None,
    ) -> list[str]:
        control = "A" + (row_id or "hl7_" + secrets.token_hex(8))[4:]
        return ack.acks(h, outcome, control, now, error, self._override)

    def _log(self, h: header.Header, answer: Answer, flag: str | None) -> None:
        if answer.state == "quarantined":
            log.warning(
                "hl7_quarantined",
                interface=self.iface.name,
                type=h.message_type,
                trigger=h.event,
                alert=self.iface.on_mapping_error == "accept_quarantine",
            )
        log.debug(  # one per message: at info level a busy feed would flood the log
            "hl7_received",
            interface=self.iface.name,
            type=h.message_type,
            trigger=h.event,
            state=answer.state,
            charset_flag=flag,
        )

    async def reprocess(self, row_id: str) -> str | None:
        """Map a quarantined message again (after a profile or mapper fix): its new
        state, or None if it is not (or no longer) quarantined."""
        now = self.clock.time()
        cipher = self.db.cipher

        def read(conn: sqlite3.Connection) -> tuple[str, str] | None:
            return sql.raw_text(conn, cipher, row_id)

        found = await self.db.run(read, serial=False)
        if found is None or found[0] != self.iface.name:
            return None
        text = found[1]
        h = header.parse(text)
        mapped = self.map(text, h)

        def job(conn: sqlite3.Connection) -> str | None:
            if not sql.claim_quarantined(conn, row_id, now):
                return None
            failure: MappingError | None = None
            if isinstance(mapped, MappingError):
                state, failure, reason = "quarantined", mapped, None
            else:
                state, failure, reason = apply(conn, mapped, self.context(now, row_id))
            error = (
                (None, reason, None)
                if failure is None
                else (failure.code, failure.text, failure.location)
            )
            sql.set_state(conn, row_id, state, error, now)
            return state

        state: str | None = await self.db.run(job)
        if state is not None:
            log.info("hl7_reprocessed", interface=self.iface.name, message=row_id, state=state)
        return state
