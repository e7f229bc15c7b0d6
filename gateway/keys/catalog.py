"""Every encrypted column: its table, the key the re-encryption walks in order, the
row id its ciphertexts are bound to (AAD) and the column name they are sealed under.

A ciphertext opens only with the row id and column name it was sealed with
(`crypto.FieldCipher`), so re-encrypting one means knowing both. A new encrypted column
must be added here, or a rotation would leave it under a key that is then retired;
`tests/test_keys_catalog.py` fails when one is missing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Sealed:
    table: str
    key: str  # a unique column, walked in order by the re-encryption job
    row_id: str  # SQL expression: the row id the ciphertexts are bound to
    columns: tuple[tuple[str, str], ...]  # (table column, column name in the AAD)


CATALOG: tuple[Sealed, ...] = (
    Sealed(
        "messages",
        "id",
        "id",
        (
            ("to_ct", "to"),
            ("body_ct", "body"),
            ("reference_ct", "reference"),
            ("callback_ct", "callback"),
        ),
    ),
    Sealed(
        "inbound",
        "id",
        "id",
        (("sender_ct", "sender"), ("recipient_ct", "recipient"), ("body_ct", "body")),
    ),
    Sealed(
        "inbound_parts",
        "id",
        "id",
        (("sender_ct", "sender"), ("recipient_ct", "recipient"), ("body_ct", "body")),
    ),
    Sealed("inbound_undecodable", "id", "id", (("record_ct", "record"),)),
    Sealed("users", "id", "id", (("totp_secret_ct", "totp_secret"),)),
    Sealed(
        "kannel_dlr",
        "message_id",
        "message_id",
        (("url_ct", "kannel_dlr_url"), ("receiver_ct", "kannel_dlr_receiver")),
    ),
    # `consent.ledger.contact_row_id`
    Sealed(
        "contacts",
        "idx",
        "'contact:' || lower(hex(idx))",
        (("number_ct", "number"), ("patient_ref_ct", "patient_ref")),
    ),
    Sealed("consent_ledger", "seq", "id", (("disclosure_ct", "disclosure"), ("note_ct", "note"))),
    Sealed("patients", "id", "id", (("mrn_ct", "mrn"),)),
    Sealed(
        "appointments",
        "id",
        "id",
        (("ext_key_ct", "ext_key"), ("location_label_ct", "location"), ("provider_ct", "provider")),
    ),
    Sealed("clinical_notices", "id", "id", (("variables_ct", "variables"),)),
    Sealed("hl7_outbound", "id", "id", (("message_ct", "message"),)),
    Sealed("hl7_messages", "id", "id", (("raw_ct", "raw"),)),
    Sealed("medication_schedules", "id", "id", (("label_ct", "label"),)),
    Sealed("campaigns", "id", "id", (("content_ct", "content"),)),  # i15-campaigns
)

BY_TABLE = {s.table: s for s in CATALOG}
