"""What a mapped message asks for, and the context it is applied in.

A mapper (`gateway.clinical.mappers`) is a pure function from a parsed HL7 message
and its interface's profile to a sequence of commands; the JSON API builds the same
commands from a request. A command is applied by calling its `apply` inside the
store writer's transaction, together with the row recording the message it came
from: all of it commits, or none of it (research §H.7).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from gateway.clinical.profile import InterfaceProfile

if TYPE_CHECKING:
    from gateway.store.crypto import FieldCipher
    from gateway.store.store import Store

# HL7 table 0357 (message error condition codes) as hl7apy lists them.
ERR_SEGMENT_SEQUENCE = 100
ERR_REQUIRED_FIELD_MISSING = 101
ERR_DATA_TYPE = 102
ERR_TABLE_VALUE_NOT_FOUND = 103
ERR_UNSUPPORTED_MESSAGE_TYPE = 200
ERR_UNSUPPORTED_EVENT_CODE = 201
ERR_UNSUPPORTED_PROCESSING_ID = 202
ERR_UNSUPPORTED_VERSION_ID = 203
ERR_UNKNOWN_KEY = 204
ERR_DUPLICATE_KEY = 205
ERR_APPLICATION_RECORD_LOCKED = 206
ERR_APPLICATION_INTERNAL = 207


class MappingError(Exception):
    """A message this interface cannot map: answered AE with an ERR segment (or
    quarantined under AA, as the profile says), stored for reprocessing.

    `code` is from table 0357; `text` says what is wrong and never quotes a value
    from the message (it may be PHI); `location` is the field, e.g. `PID-3` or
    `SCH-11.4`."""

    def __init__(self, code: int, text: str, location: str | None = None) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.location = location


# A name for what a clinical job changes ("appointment", source, key): on a cluster the
# job locks these instead of every clinical write (`ClinicalDb.run`'s `keys`).
LockKey = tuple[str, ...]

AppointmentHook = Callable[[sqlite3.Connection, "ApplyContext", str], None]


@dataclass(slots=True)
class ClinicalHooks:
    """What other parts do when the clinical state changes, inside the same
    transaction. `appointment_changed(conn, ctx, appointment_id)` runs after every
    change of an appointment (booked, moved, modified, cancelled, deleted, no-show,
    confirmed): the reminder planner re-plans its notices there."""

    appointment_changed: list[AppointmentHook] = field(default_factory=list)

    def changed(self, conn: sqlite3.Connection, ctx: ApplyContext, appointment_id: str) -> None:
        for hook in self.appointment_changed:
            hook(conn, ctx, appointment_id)


@dataclass(frozen=True, slots=True)
class ApplyContext:
    """Where and when a command is applied.

    `now`: the gateway clock's time (tests fast-forward it). `source`: the interface
    name, or `api` (`profile.API_SOURCE`). `message_ref`: the stored HL7 message's id
    (None for the API), for the events' trail. `actor`: who acts, for the audit
    (`hl7:<interface>`, `token:<id>`, `user:<id>`). `profile`: the interface's
    profile (the API's default one for JSON requests)."""

    now: float
    source: str
    actor: str
    profile: InterfaceProfile
    store: Store
    hooks: ClinicalHooks
    message_ref: str | None = None
    # The cipher of the clinical rows where it is not the store's: on a cluster, the
    # shared keyring's (the store's own keys match it until a rotation).
    sealer: FieldCipher | None = None
    # The keys a keyed job holds (`lock_names.canonical` form); None: it holds every
    # clinical write (the whole lock, or SQLite's one writer).
    held: frozenset[LockKey] | None = None

    @property
    def cipher(self) -> FieldCipher:
        if self.sealer is not None:
            return self.sealer
        from gateway.store.consent_sql import cipher_of

        return cipher_of(self.store)


class Command(Protocol):
    """One change a message asks for. `apply` runs in the writer's transaction and
    raises `MappingError` for a message that maps but cannot be applied (an unknown
    key the profile refuses, say); anything else it raises rolls the whole message
    back and is answered AR (retry later)."""

    def apply(self, conn: sqlite3.Connection, ctx: ApplyContext) -> None: ...


class MoreKeys(Exception):
    """A keyed job found that it changes rows of keys it does not hold (an appointment
    moved to another patient: the patient it leaves, and that patient's number). Raised
    before the job writes; the job is rolled back and run again holding these too, all
    of them taken in the one order (no lock is ever taken out of it)."""

    def __init__(self, keys: Sequence[LockKey]) -> None:
        super().__init__("the job needs more keys")
        self.keys = tuple(keys)


@runtime_checkable
class Keyed(Protocol):
    """A command that says what it changes: every row it reads to decide and every row
    it writes belong to the keys it names (None: it cannot say, the job takes the
    clinical lock whole). Two jobs naming no key in common may run at once."""

    def lock_keys(self, source: str) -> Sequence[LockKey] | None: ...


@dataclass(frozen=True, slots=True)
class Ignore:
    """A well-formed message this gateway has no use for (an A60, an S17 after its
    appointment is gone, an update older than the one applied): acknowledged AA and
    stored as `ignored` with `reason` (no PHI)."""

    reason: str

    def apply(self, conn: sqlite3.Connection, ctx: ApplyContext) -> None:
        return None

    def lock_keys(self, source: str) -> Sequence[LockKey] | None:
        return ()
