"""`smsgw store migrate` and the clinical tables: what is copied, and the samples the
verification decrypts on both sides (cluster migration 17's twins).

Patients, appointments and their trail, the timed notices, reminder rules,
templates and the HL7 message log (cluster migration 21) are copied as they are (ids,
ciphertexts and versions kept; a notice of a part not on the cluster backend, results
or medication, is copied too and skipped by the shared runner, `not_on_cluster`). The
appointments' trail keeps its seqs, and its numbering goes on after them
(`migrate_copy.set_sequences`).
"""

from __future__ import annotations

import sqlite3

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from gateway.cluster.migrate_copy import TableCopy
from gateway.cluster.migrate_samples import sample_column
from gateway.store import crypto

COPIES = (
    TableCopy("templates", "templates", ("id",)),
    TableCopy("template_heads", "template_heads", ("name", "language")),
    TableCopy("reminder_rules", "reminder_rules", ("id", "version")),
    TableCopy("patients", "patients", ("id",)),
    TableCopy("appointments", "appointments", ("id",)),
    TableCopy("appointment_events", "appointment_events", ("seq",)),
    TableCopy("clinical_notices", "clinical_notices", ("id",)),
    TableCopy("hl7_messages", "hl7_messages", ("id",)),  # cluster migration 21
)
# (table, encrypted column, its AAD): the row id is the table's `id`.
SAMPLED = (
    ("patients", "mrn_ct", "mrn"),
    ("appointments", "ext_key_ct", "ext_key"),
    ("appointments", "location_label_ct", "location"),
    ("appointments", "provider_ct", "provider"),
    ("clinical_notices", "variables_ct", "variables"),
    ("hl7_messages", "raw_ct", "raw"),
)


async def check_samples(
    src: sqlite3.Connection,
    conn: AsyncConnection[TupleRow],
    source: crypto.FieldCipher,
    target: crypto.FieldCipher,
    sample: int,
) -> tuple[list[str], list[str]]:
    """(lines, problems): a random sample of each encrypted clinical column, decrypted
    on both sides and compared."""
    lines: list[str] = []
    problems: list[str] = []
    for table, column, aad in SAMPLED:
        line, wrong = await sample_column(
            src, conn, (source, target), sample, table, "id", column, aad
        )
        problems.extend(wrong)
        if not wrong:
            lines.append(line)
    return lines, problems
