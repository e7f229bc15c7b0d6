"""`smsgw store migrate` and the clinical tables: what is copied, and the samples the
verification decrypts on both sides (cluster migrations 17, 21, 22 and 23: the twins).

Patients, appointments and their trail, the timed notices, reminder rules,
templates, the HL7 message log (cluster migration 21), result events, medication
schedules and appointment replies (22), and the HL7 write-back queue (23) are copied
as they are (ids, ciphertexts and versions kept). The appointments' trail keeps its
seqs, and its numbering goes on after them (`migrate_copy.set_sequences`).
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
    TableCopy("clinical_events", "clinical_events", ("id",)),  # 22
    TableCopy("medication_schedules", "medication_schedules", ("id",)),
    TableCopy("appointment_replies", "appointment_replies", ("id",)),
    TableCopy("hl7_outbound", "hl7_outbound", ("id",)),  # 23
)
# (table, encrypted column, its AAD): the row id is the table's `id`.
SAMPLED = (
    ("patients", "mrn_ct", "mrn"),
    ("appointments", "ext_key_ct", "ext_key"),
    ("appointments", "location_label_ct", "location"),
    ("appointments", "provider_ct", "provider"),
    ("clinical_notices", "variables_ct", "variables"),
    ("hl7_messages", "raw_ct", "raw"),
    ("hl7_outbound", "message_ct", "message"),
    ("medication_schedules", "label_ct", "label"),
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
