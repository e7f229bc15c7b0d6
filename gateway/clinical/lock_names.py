"""The rows a keyed clinical job locks, named so that a message and a stored row name
the same one.

A message names its patient by (source, authority, MRN) and the patient's number by
E.164; the stored patient row keeps only keyed digests of them (`mrn_index`,
`contact_idx`). An appointment moved to another patient must also lock the patient it
leaves, known only from the stored row: so every patient and number key is reduced to
the digest the row holds (`canonical`) before it becomes a lock number, and the stored
patient's keys (`stored_patient`) are written in that form directly.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection

from gateway.clinical.commands import LockKey
from gateway.store.crypto import FieldCipher

PATIENT_ROW = "patient_row"
CONTACT_ROW = "contact_row"


def canonical(cipher: FieldCipher, key: LockKey) -> LockKey:
    """`key` as the row it locks: a patient by its MRN's keyed index, a number by its
    blind index (the values `patients.mrn_index` and `patients.contact_idx` hold)."""
    if key[0] == "patient" and len(key) == 4:
        _, source, authority, mrn = key
        return (PATIENT_ROW, source, cipher.keyed_digest("mrn", source, authority, mrn).hex())
    if key[0] == "contact" and len(key) == 2:
        return (CONTACT_ROW, cipher.blind_index(key[1]).hex())
    return key


def canonical_set(cipher: FieldCipher, keys: Collection[LockKey]) -> frozenset[LockKey]:
    return frozenset(canonical(cipher, key) for key in keys)


def stored_patient(conn: sqlite3.Connection, patient_id: str) -> list[LockKey]:
    """The keys of a stored patient and its number (none if the row is gone)."""
    row = conn.execute(
        "SELECT source, mrn_index, contact_idx FROM patients WHERE id = ?", (patient_id,)
    ).fetchone()
    if row is None:
        return []
    keys: list[LockKey] = [(PATIENT_ROW, str(row[0]), bytes(row[1]).hex())]
    if row[2] is not None:
        keys.append((CONTACT_ROW, bytes(row[2]).hex()))
    return keys
