"""Patients as the feeds name them: an MRN (never an SSN), the number to text, a language.

`extract` reads a message's PID (and NK1) into `PatientDetails`, purely; `upsert`
stores them in the writer's transaction: the MRN encrypted with a keyed index to find
it again, the chosen mobile number as a consent `contacts` row (so consent, quiet
hours and replies see the same recipient), and the patient's language there too.
Names, addresses and SSNs are never stored: an SMS needs none of them.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
from dataclasses import dataclass

import hl7
import phonenumbers

from gateway.clinical import fields
from gateway.clinical.commands import ERR_REQUIRED_FIELD_MISSING, ApplyContext, MappingError
from gateway.clinical.profile import InterfaceProfile
from gateway.consent import ledger

# Identifier types (table 0203) that are national or insurance numbers, never an MRN
# and never stored: SS (social security), SSN, NI/NH (national), PPN (passport),
# DL (driver's licence), MC/MA (Medicare/Medicaid).
_NEVER_STORED = frozenset({"SS", "SSN", "NI", "NH", "PPN", "DL", "MC", "MA"})
# An identifier shaped like a US SSN is skipped whatever type it claims (feeds put
# SSNs in PID-3 untyped).
_SSN_SHAPE = re.compile(r"\d{3}-?\d{2}-?\d{4}")
# Identifier types taken as the MRN when the profile names no authority, best first:
# MR (medical record number), then PI (patient internal identifier), PT, MRN.
_MRN_TYPES = ("MR", "PI", "PT", "MRN")
# PID-15 as ISO 639-2 or names some systems send; anything else two letters long is
# taken as ISO 639-1.
_LANGUAGES = {
    "eng": "en", "english": "en", "spa": "es", "spanish": "es", "esp": "es",
    "fra": "fr", "fre": "fr", "french": "fr", "por": "pt", "portuguese": "pt",
    "deu": "de", "ger": "de", "german": "de", "zho": "zh", "chi": "zh", "vie": "vi",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class PatientRef:
    """`authority`: the MRN's assigning authority as given (CX-4's first non-empty
    sub-component), or "" if the feed names none."""

    authority: str
    mrn: str


@dataclass(frozen=True, slots=True)
class Phone:
    """A number that may be texted: `e164`; where it came from (`PID-13`), its XTN-2
    use and XTN-3 equipment codes, and its rank in the profile's order (0 first)."""

    e164: str
    source_field: str
    use: str
    equipment: str
    rank: int


@dataclass(frozen=True, slots=True)
class PatientDetails:
    ref: PatientRef
    phones: tuple[Phone, ...] = ()
    language: str | None = None

    @property
    def mobile(self) -> Phone | None:
        return self.phones[0] if self.phones else None


@dataclass(frozen=True, slots=True)
class PatientRow:
    id: str
    contact_idx: bytes | None
    language: str | None
    time_zone: str | None


def extract(message: hl7.Message, profile: InterfaceProfile) -> PatientDetails:
    """The patient of `message`; raises `MappingError` if PID or its MRN is missing."""
    pid = fields.first(message, "PID")
    if pid is None:
        raise MappingError(ERR_REQUIRED_FIELD_MISSING, "the message has no PID segment", "PID")
    return PatientDetails(
        mrn_of(message, pid, profile), phones_of(message, profile), language_of(message, pid)
    )


def mrn_of(message: hl7.Message, pid: hl7.Segment, profile: InterfaceProfile) -> PatientRef:
    """PID-3's identifier from the profile's authority, else the first of the best type
    in `_MRN_TYPES`; national numbers (`_NEVER_STORED` types, SSN-shaped values) are
    skipped whatever they claim."""
    best: tuple[int, PatientRef] | None = None
    for rep in fields.repetitions(message, pid, 3):
        ident = fields.component([rep], 0, 1).strip()
        kind = fields.component([rep], 0, 5).strip().upper()
        if not ident or kind in _NEVER_STORED or _SSN_SHAPE.fullmatch(ident):
            continue
        parts = [p for p in fields.subcomponents(message, fields.component([rep], 0, 4)) if p]
        ref = PatientRef(parts[0] if parts else "", ident)
        if profile.mrn_authority is not None:
            if profile.mrn_authority in parts:
                return ref
        elif kind in _MRN_TYPES:
            rank = _MRN_TYPES.index(kind)
            if best is None or rank < best[0]:
                best = (rank, ref)
    chosen = None if best is None else best[1]
    if chosen is None:
        where = "the profile's authority" if profile.mrn_authority else "a patient-id type"
        raise MappingError(
            ERR_REQUIRED_FIELD_MISSING, f"PID-3 has no identifier of {where}", "PID-3"
        )
    return chosen


def phones_of(message: hl7.Message, profile: InterfaceProfile) -> tuple[Phone, ...]:
    """Every textable number in the profile's phone fields, in its order of preference."""
    found: list[Phone] = []
    seen: set[str] = set()
    for source in profile.phone_fields:
        name, _, number = source.partition("-")
        for segment in fields.segments(message, name)[:1]:
            for rep in fields.repetitions(message, segment, int(number)):
                phone = _phone(rep, source, profile, len(found))
                if phone is not None and phone.e164 not in seen:
                    seen.add(phone.e164)
                    found.append(phone)
    return tuple(found)


def _phone(rep: list[str], source: str, p: InterfaceProfile, rank: int) -> Phone | None:
    use = fields.component([rep], 0, 2).strip().upper()
    equipment = fields.component([rep], 0, 3).strip().upper()
    if use and use not in p.phone_uses:
        return None
    if equipment not in p.phone_equipment and not (equipment == "" and p.accept_untyped_phone):
        return None
    text = fields.component([rep], 0, 12).strip()  # XTN-12 unformatted (v2.5+)
    if not text and fields.component([rep], 0, 7).strip():
        country = fields.component([rep], 0, 5).strip().lstrip("+")
        local = fields.component([rep], 0, 6).strip() + fields.component([rep], 0, 7).strip()
        text = f"+{country}{local}" if country else local
    if not text:
        text = fields.component([rep], 0, 1).strip()
    try:
        parsed = phonenumbers.parse(text, p.region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return Phone(e164, source, use, equipment, rank)


def language_of(message: hl7.Message, pid: hl7.Segment) -> str | None:
    """PID-15 as an ISO 639-1 code (`en`, `es`), or None if absent or unknown."""
    code = fields.value(message, pid, 15).strip().lower().replace("_", "-")
    code = _LANGUAGES.get(code, code.split("-")[0])
    return code if len(code) == 2 and code.isalpha() else None


def mrn_index(ctx: ApplyContext, ref: PatientRef) -> bytes:
    return ctx.cipher.keyed_digest("mrn", ctx.source, ref.authority, ref.mrn)


def find(conn: sqlite3.Connection, ctx: ApplyContext, ref: PatientRef) -> PatientRow | None:
    return _by_index(conn, ctx.source, mrn_index(ctx, ref))


def _by_index(conn: sqlite3.Connection, source: str, index: bytes) -> PatientRow | None:
    r = conn.execute(
        "SELECT p.id, p.contact_idx, c.language, c.time_zone FROM patients p"
        " LEFT JOIN contacts c ON c.idx = p.contact_idx WHERE p.source = ? AND p.mrn_index = ?",
        (source, index),
    ).fetchone()
    return None if r is None else PatientRow(r[0], r[1], r[2], r[3])


def upsert(conn: sqlite3.Connection, ctx: ApplyContext, details: PatientDetails) -> PatientRow:
    """The patient's row, created or updated from `details`, in the writer's transaction.

    A message that lists textable numbers makes its first the patient's number; one
    that lists none keeps the number known. The contact gets the patient's language
    (when the feed gives one) and the interface's time zone (when it has none)."""
    cipher = ctx.cipher
    index = mrn_index(ctx, details.ref)
    row = conn.execute(
        "SELECT id, contact_idx FROM patients WHERE source = ? AND mrn_index = ?",
        (ctx.source, index),
    ).fetchone()
    mobile = details.mobile
    contact_idx: bytes | None = row[1] if row else None
    if mobile is not None:
        contact_idx = ctx.store.blind_index(mobile.e164)
        ledger.ensure_contact(conn, cipher, contact_idx, mobile.e164, ctx.now)
        conn.execute(
            "UPDATE contacts SET language = coalesce(?, language),"
            " time_zone = coalesce(time_zone, ?), updated_at = ? WHERE idx = ?",
            (details.language, ctx.profile.time_zone, ctx.now, contact_idx),
        )
    if row is None:
        patient_id = "pat_" + secrets.token_hex(8)
        conn.execute(
            "INSERT INTO patients (id, source, mrn_index, mrn_ct, contact_idx, phone_source,"
            " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?)",
            (
                patient_id,
                ctx.source,
                index,
                cipher.encrypt(details.ref.mrn, patient_id, "mrn"),
                contact_idx,
                mobile.source_field if mobile else None,
                ctx.now,
                ctx.now,
            ),
        )
    else:
        patient_id = row[0]
        conn.execute(
            "UPDATE patients SET contact_idx = ?, phone_source = coalesce(?, phone_source),"
            " updated_at = ? WHERE id = ?",
            (contact_idx, mobile.source_field if mobile else None, ctx.now, patient_id),
        )
    found = _by_index(conn, ctx.source, index)  # the keyed digest is not worked out again
    assert found is not None
    return found
