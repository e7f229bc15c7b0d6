"""Schema migrations, applied in order and counted by `PRAGMA user_version`.

Personal fields are `*_ct` columns (AES-GCM ciphertext, see `crypto.py`) and
`to_index` (the keyed blind index). Nothing else in the schema may hold a phone
number or a message body. The `messages` table is the queue: the scheduler's memory
is only a cache of its `queued` and `scheduled` rows, rebuilt at start.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: tuple[str, ...] = (
    # 1: messages, their events, carrier ids, receipts waiting for their submit,
    #    inbound messages, API tokens, idempotency keys, the keyring.
    """
    CREATE TABLE keyring (
        purpose     TEXT NOT NULL,
        generation  INTEGER NOT NULL,
        wrapped     BLOB NOT NULL,
        created_at  REAL NOT NULL,
        PRIMARY KEY (purpose, generation)
    );
    CREATE TABLE messages (
        id                 TEXT PRIMARY KEY,
        token_id           TEXT,
        priority           INTEGER NOT NULL,
        state              TEXT NOT NULL,
        to_ct              BLOB NOT NULL,
        to_index           BLOB NOT NULL,
        body_ct            BLOB NOT NULL,
        reference_ct       BLOB,
        callback_ct        BLOB,
        encoding           TEXT NOT NULL,
        segments           INTEGER NOT NULL,
        route_hint         TEXT,
        route              TEXT,
        category           TEXT,
        created_at         REAL NOT NULL,
        updated_at         REAL NOT NULL,
        send_at            REAL,
        expires_at         REAL NOT NULL,
        due_at             REAL NOT NULL,
        attempts           INTEGER NOT NULL DEFAULT 0,
        possible_duplicate INTEGER NOT NULL DEFAULT 0,
        error_code         TEXT
    ) WITHOUT ROWID;
    CREATE INDEX messages_to ON messages (to_index);
    CREATE INDEX messages_state ON messages (state, id);
    -- One row per transition: the creation (queued or scheduled at created_at) is
    -- implied by the message row itself, which keeps an accept to three index writes.
    CREATE TABLE message_events (
        seq         INTEGER PRIMARY KEY,
        message_id  TEXT NOT NULL,
        at          REAL NOT NULL,
        state       TEXT NOT NULL,
        route       TEXT,
        carrier_id  TEXT,
        error_code  TEXT,
        attempt     INTEGER
    );
    CREATE INDEX message_events_message ON message_events (message_id, seq);
    CREATE TABLE carrier_ids (
        route       TEXT NOT NULL,
        carrier_id  TEXT NOT NULL,
        message_id  TEXT NOT NULL,
        part        INTEGER NOT NULL,
        state       TEXT NOT NULL DEFAULT 'sent',
        error_code  TEXT,
        PRIMARY KEY (route, carrier_id)
    ) WITHOUT ROWID;
    CREATE INDEX carrier_ids_message ON carrier_ids (message_id);
    CREATE TABLE early_receipts (
        route       TEXT NOT NULL,
        carrier_id  TEXT NOT NULL,
        state       TEXT NOT NULL,
        error_code  TEXT,
        at          REAL NOT NULL,
        PRIMARY KEY (route, carrier_id)
    ) WITHOUT ROWID;
    CREATE TABLE inbound (
        id           TEXT PRIMARY KEY,
        route        TEXT NOT NULL,
        sender_ct    BLOB NOT NULL,
        sender_index BLOB NOT NULL,
        recipient_ct BLOB,
        body_ct      BLOB NOT NULL,
        carrier_id   TEXT,
        received_at  REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX inbound_sender ON inbound (sender_index);
    CREATE TABLE api_tokens (
        id           TEXT PRIMARY KEY,
        name         TEXT NOT NULL,
        secret_hash  BLOB NOT NULL,
        scopes       TEXT NOT NULL,
        created_at   REAL NOT NULL,
        revoked_at   REAL
    );
    CREATE TABLE idempotency (
        token_id      TEXT NOT NULL,
        key_hash      BLOB NOT NULL,
        request_hash  BLOB NOT NULL,
        status        INTEGER NOT NULL,
        response      BLOB NOT NULL,
        created_at    REAL NOT NULL,
        PRIMARY KEY (token_id, key_hash)
    ) WITHOUT ROWID;
    """,
    # 2: parts of concatenated inbound messages held until their set is whole (so a
    #    part acknowledged to the carrier survives a crash), digests of the parts of
    #    sets already joined (a redelivered part is recognised, not held again), and
    #    the flag on inbound messages stored with parts missing.
    #    `set_key` is a keyed blind index over route, sender, recipient, reference,
    #    its width and the part count: it holds no number in the clear.
    """
    CREATE TABLE inbound_parts (
        id           TEXT PRIMARY KEY,
        route        TEXT NOT NULL,
        set_key      BLOB NOT NULL,
        seq          INTEGER NOT NULL,
        total        INTEGER NOT NULL,
        sender_ct    BLOB NOT NULL,
        recipient_ct BLOB,
        body_ct      BLOB NOT NULL,
        carrier_id   TEXT,
        received_at  REAL NOT NULL,
        UNIQUE (set_key, seq)
    ) WITHOUT ROWID;
    CREATE INDEX inbound_parts_received ON inbound_parts (received_at);
    CREATE TABLE inbound_sets_done (
        set_key      BLOB NOT NULL,
        seq          INTEGER NOT NULL,
        digest       BLOB NOT NULL,
        done_at      REAL NOT NULL,
        PRIMARY KEY (set_key, seq)
    ) WITHOUT ROWID;
    CREATE INDEX inbound_sets_done_at ON inbound_sets_done (done_at);
    ALTER TABLE inbound ADD COLUMN incomplete INTEGER NOT NULL DEFAULT 0;
    """,
    # 3: the admin panel: users, their sessions, login failures, per-role policies and
    #    the audit trail. Only hashes of session ids and passwords are stored; the TOTP
    #    secret is a `*_ct` column. The triggers make the audit trail append-only for
    #    anyone who does not drop them; `gateway/store/audit_log.py` detects who did.
    """
    CREATE TABLE users (
        id                  TEXT PRIMARY KEY,
        username            TEXT NOT NULL UNIQUE COLLATE NOCASE,
        role                TEXT NOT NULL,
        password_hash       TEXT NOT NULL,
        password_changed_at REAL NOT NULL,
        totp_secret_ct      BLOB,
        totp_enabled        INTEGER NOT NULL DEFAULT 0,
        totp_last_step      INTEGER NOT NULL DEFAULT 0,
        created_at          REAL NOT NULL,
        disabled_at         REAL
    );
    CREATE TABLE sessions (
        id_hash     BLOB PRIMARY KEY,
        user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        stage       TEXT NOT NULL,
        csrf_token  TEXT NOT NULL,
        created_at  REAL NOT NULL,
        last_seen   REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX sessions_user ON sessions (user_id);
    CREATE TABLE login_failures (
        key           TEXT PRIMARY KEY,
        failures      INTEGER NOT NULL,
        last_failure  REAL NOT NULL,
        locked_until  REAL
    ) WITHOUT ROWID;
    CREATE TABLE role_policies (
        role           TEXT PRIMARY KEY,
        totp_required  INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE audit_log (
        seq          INTEGER PRIMARY KEY,
        at           REAL NOT NULL,
        actor        TEXT NOT NULL,
        action       TEXT NOT NULL,
        target_kind  TEXT,
        target_id    TEXT,
        detail       TEXT NOT NULL,
        prev_hash    TEXT NOT NULL,
        hash         TEXT NOT NULL
    );
    CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
    CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
    """,
    # 4 (i10-auth): windows of repeated audit entries (failed sign-ins): the entry that
    #    opened each, its count so far and when it closes (`gateway/store/audit_log.py`).
    """
    CREATE TABLE audit_repeats (
        key        TEXT PRIMARY KEY,
        first_seq  INTEGER NOT NULL,
        closes_at  REAL NOT NULL,
        count      INTEGER NOT NULL,
        last_at    REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX audit_repeats_closes ON audit_repeats (closes_at);
    """,
    # 5 (i10-store): the receipt deadline. `receipt_overdue` is 1 for a `sent` message
    #    whose receipt did not come within `[queue] receipt_deadline` (it stays 1 once
    #    the receipt does come), 2 for one past the deadline in a class that asks for
    #    no receipt (nothing to report). The partial index holds only the sent messages
    #    still at 0, by the time they became `sent`: the sweep reads just the due ones.
    #    `route_parks`: routes parked because the carrier refused their credentials,
    #    with an HMAC of those credentials (never the secret), so a restart with the
    #    same ones stays parked instead of trying them again.
    """
    ALTER TABLE messages ADD COLUMN receipt_overdue INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX messages_awaiting_receipt ON messages (updated_at)
        WHERE state = 'sent' AND receipt_overdue = 0;
    CREATE TABLE route_parks (
        route            TEXT PRIMARY KEY,
        code             TEXT NOT NULL,
        credentials_mac  BLOB NOT NULL,
        parked_at        REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    # 6 (i10-modem): inbound records a driver could not decode (a modem's SIM record),
    #    held for an operator before the device's copy is deleted. `record_ct` is the
    #    raw record, encrypted; `digest` a keyed digest of route, source and record, so
    #    a record read again is held once. `source` is the modem's configured name.
    """
    CREATE TABLE inbound_undecodable (
        id           TEXT PRIMARY KEY,
        route        TEXT NOT NULL,
        source       TEXT NOT NULL,
        record_ct    BLOB NOT NULL,
        digest       BLOB NOT NULL UNIQUE,
        received_at  REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    # 7 (i11-app): `inbound.seq`, the order inbound messages were committed in: the
    #    cursor of `GET /api/v1/inbound?order=oldest`. Ids are made before their commit, so two
    #    may commit out of order, and a poller paging by id would skip the later one.
    #    Rows stored before this are numbered in id order.
    """
    ALTER TABLE inbound ADD COLUMN seq INTEGER;
    UPDATE inbound SET seq = r.n
        FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM inbound) AS r
        WHERE inbound.id = r.id;
    CREATE UNIQUE INDEX inbound_seq ON inbound (seq);
    """,
    # 8 (i11-kannel): what a Kannel sendsms asked to hear back: its dlr-url (may carry
    #    PHI in its query, so encrypted), dlr-mask, and the receiver and sender as the
    #    client wrote them (for %P and %p; the receiver encrypted), by message id.
    """
    CREATE TABLE kannel_dlr (
        message_id   TEXT PRIMARY KEY,
        url_ct       BLOB NOT NULL,
        mask         INTEGER NOT NULL,
        receiver_ct  BLOB NOT NULL,
        sender       TEXT NOT NULL,
        username     TEXT NOT NULL,
        created_at   REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    # 9 (i11-webhooks): the outbox. One row per reported change (a message's state,
    #    an inbound message, a route's health), written in the transaction that makes
    #    the change; ids and codes only, never a number or a text (a consumer that
    #    wants those reads them, decrypted, when it delivers). Pruning never removes
    #    the newest row, so `seq` (max + 1) never goes back: consumers keep their
    #    position by it. `outbox_consumers` holds each consumer's position (all below
    #    it are delivered or dead); `outbox_deliveries` the attempt state per event and
    #    consumer: pending (retrying), delivered, dead, or redeliver (an admin asked).
    """
    CREATE TABLE outbox (
        seq         INTEGER PRIMARY KEY,
        id          TEXT NOT NULL DEFAULT ('evt_' || lower(hex(randomblob(12)))),
        type        TEXT NOT NULL,
        at          REAL NOT NULL,
        message_id  TEXT,
        route       TEXT,
        state       TEXT,
        code        TEXT,
        attempt     INTEGER
    );
    CREATE TABLE outbox_consumers (
        name        TEXT PRIMARY KEY,
        position    INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE outbox_deliveries (
        consumer    TEXT NOT NULL,
        seq         INTEGER NOT NULL,
        state       TEXT NOT NULL,
        attempts    INTEGER NOT NULL,
        first_at    REAL NOT NULL,
        last_at     REAL NOT NULL,
        next_at     REAL,
        reason      TEXT,
        PRIMARY KEY (consumer, seq)
    ) WITHOUT ROWID;
    CREATE INDEX outbox_deliveries_recent ON outbox_deliveries (last_at);
    """,
    # 10 (consent): each message's purpose; contacts by blind index (number and
    #    patient reference encrypted; language and time zone for replies and quiet
    #    hours); the consent ledger, append-only (a trigger refuses any change but the
    #    erasure of its encrypted texts), with `consent_state`, the latest decision
    #    per contact, program and scope, kept in the ledger row's transaction; free-text
    #    revocations waiting for staff review; and a token's default purpose.
    """
    ALTER TABLE messages ADD COLUMN purpose TEXT;
    CREATE TABLE contacts (
        idx            BLOB PRIMARY KEY,
        number_ct      BLOB NOT NULL,
        patient_ref_ct BLOB,
        language       TEXT,
        time_zone      TEXT,
        created_at     REAL NOT NULL,
        updated_at     REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE consent_ledger (
        seq            INTEGER PRIMARY KEY,
        id             TEXT NOT NULL UNIQUE,
        contact_idx    BLOB NOT NULL,
        at             REAL NOT NULL,
        decision       TEXT NOT NULL CHECK (decision IN ('opt_in', 'opt_out')),
        scope          TEXT NOT NULL,
        program        TEXT NOT NULL,
        source         TEXT NOT NULL,
        inbound_id     TEXT,
        message_id     TEXT,
        actor          TEXT,
        disclosure_ct  BLOB,
        note_ct        BLOB
    );
    CREATE INDEX consent_ledger_contact ON consent_ledger (contact_idx, seq);
    CREATE TRIGGER consent_ledger_no_delete BEFORE DELETE ON consent_ledger
    BEGIN
        SELECT RAISE(ABORT, 'consent_ledger is append-only');
    END;
    CREATE TRIGGER consent_ledger_no_update BEFORE UPDATE ON consent_ledger
    WHEN NEW.seq IS NOT OLD.seq OR NEW.id IS NOT OLD.id
        OR NEW.contact_idx IS NOT OLD.contact_idx OR NEW.at IS NOT OLD.at
        OR NEW.decision IS NOT OLD.decision OR NEW.scope IS NOT OLD.scope
        OR NEW.program IS NOT OLD.program OR NEW.source IS NOT OLD.source
        OR NEW.inbound_id IS NOT OLD.inbound_id OR NEW.message_id IS NOT OLD.message_id
        OR NEW.actor IS NOT OLD.actor
        OR (NEW.disclosure_ct IS NOT NULL AND NEW.disclosure_ct IS NOT OLD.disclosure_ct)
        OR (NEW.note_ct IS NOT NULL AND NEW.note_ct IS NOT OLD.note_ct)
    BEGIN
        SELECT RAISE(ABORT, 'consent_ledger is append-only');
    END;
    CREATE TABLE consent_state (
        contact_idx    BLOB NOT NULL,
        program        TEXT NOT NULL,
        scope          TEXT NOT NULL,
        opted          TEXT NOT NULL CHECK (opted IN ('in', 'out')),
        seq            INTEGER NOT NULL,
        since          REAL NOT NULL,
        source         TEXT NOT NULL,
        written_seq    INTEGER,
        PRIMARY KEY (contact_idx, program, scope)
    ) WITHOUT ROWID;
    CREATE TABLE consent_review (
        id             TEXT PRIMARY KEY,
        inbound_id     TEXT NOT NULL,
        contact_idx    BLOB NOT NULL,
        program        TEXT NOT NULL,
        reason         TEXT NOT NULL,
        created_at     REAL NOT NULL,
        resolved_at    REAL,
        resolution     TEXT,
        actor          TEXT
    ) WITHOUT ROWID;
    CREATE INDEX consent_review_open ON consent_review (resolved_at, created_at);
    CREATE TABLE token_purposes (
        token_id        TEXT PRIMARY KEY,
        default_purpose TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
    # 11 (i12-policy): a message sent outside quiet hours by an audited override, so the
    #    claim's own check of the sending window lets it go.
    """
    ALTER TABLE messages ADD COLUMN quiet_override INTEGER NOT NULL DEFAULT 0;
    """,
    # 12: the index by recipient covers what the send policy reads of a recipient's
    #    messages at every accept (its frequency caps count them by purpose, state and
    #    time) and what an opt-out looks for (those still waiting), so neither reads the
    #    rows themselves. It replaces the index on `to_index` alone, which it extends.
    """
    DROP INDEX messages_to;
    CREATE INDEX messages_to ON messages (to_index, purpose, state, created_at, send_at);
    """,
    # 13 (clinical contract): patients by a keyed index of their MRN (encrypted), with
    #    the consent contact they are texted at; appointments from HL7 feeds and the API
    #    (external key indexed and encrypted, provider encrypted) and their change trail
    #    (no PHI); timed notices (reminders, moved/cancelled, results, medication) with
    #    encrypted template variables, one pending per appointment and rule; HL7
    #    messages queued for an EHR (write-back), encrypted.
    """
    CREATE TABLE patients (
        id             TEXT PRIMARY KEY,
        source         TEXT NOT NULL,
        mrn_index      BLOB NOT NULL,
        mrn_ct         BLOB NOT NULL,
        contact_idx    BLOB,
        phone_source   TEXT,
        created_at     REAL NOT NULL,
        updated_at     REAL NOT NULL,
        UNIQUE (source, mrn_index)
    );
    CREATE INDEX patients_contact ON patients (contact_idx);
    CREATE TABLE appointments (
        id                  TEXT PRIMARY KEY,
        source              TEXT NOT NULL,
        ext_index           BLOB NOT NULL,
        ext_key_ct          BLOB NOT NULL,
        patient_id          TEXT NOT NULL REFERENCES patients (id),
        status              TEXT NOT NULL,
        start_at            REAL,
        end_at              REAL,
        time_zone           TEXT,
        service             TEXT,
        location_code       TEXT,
        location_label_ct   BLOB,
        provider_ct         BLOB,
        short_code          TEXT NOT NULL,
        version             INTEGER NOT NULL DEFAULT 1,
        last_event          TEXT,
        last_msg_at         REAL,
        created_from_update INTEGER NOT NULL DEFAULT 0,
        confirmed_at        REAL,
        confirmed_via       TEXT,
        created_at          REAL NOT NULL,
        updated_at          REAL NOT NULL,
        UNIQUE (source, ext_index)
    );
    CREATE INDEX appointments_patient ON appointments (patient_id, start_at);
    CREATE INDEX appointments_start ON appointments (start_at);
    CREATE TABLE appointment_events (
        seq            INTEGER PRIMARY KEY,
        appointment_id TEXT NOT NULL,
        at             REAL NOT NULL,
        event          TEXT NOT NULL,
        source_ref     TEXT,
        old_status     TEXT,
        new_status     TEXT,
        old_start      REAL,
        new_start      REAL,
        version        INTEGER NOT NULL
    );
    CREATE INDEX appointment_events_appt ON appointment_events (appointment_id, seq);
    CREATE TABLE clinical_notices (
        id             TEXT PRIMARY KEY,
        kind           TEXT NOT NULL,
        contact_idx    BLOB NOT NULL,
        template       TEXT NOT NULL,
        purpose        TEXT NOT NULL,
        due_at         REAL NOT NULL,
        variables_ct   BLOB,
        language       TEXT,
        expires_at     REAL,
        patient_id     TEXT,
        appointment_id TEXT,
        appt_version   INTEGER,
        rule_id        TEXT,
        rule_version   INTEGER,
        variant        TEXT,
        ref            TEXT,
        priority       TEXT,
        state          TEXT NOT NULL CHECK (state IN
                           ('pending', 'queued', 'skipped', 'cancelled', 'superseded')),
        reason         TEXT,
        message_id     TEXT,
        created_at     REAL NOT NULL,
        updated_at     REAL NOT NULL
    );
    CREATE INDEX clinical_notices_due ON clinical_notices (due_at) WHERE state = 'pending';
    CREATE UNIQUE INDEX clinical_notices_one_pending ON clinical_notices
        (appointment_id, rule_id) WHERE state = 'pending' AND rule_id IS NOT NULL;
    CREATE INDEX clinical_notices_appointment ON clinical_notices (appointment_id, state);
    CREATE INDEX clinical_notices_contact ON clinical_notices (contact_idx, kind, updated_at);
    CREATE INDEX clinical_notices_message ON clinical_notices (message_id);
    CREATE TABLE hl7_outbound (
        id              TEXT PRIMARY KEY,
        interface       TEXT NOT NULL,
        control_id      TEXT NOT NULL,
        kind            TEXT NOT NULL,
        ref             TEXT,
        message_ct      BLOB NOT NULL,
        state           TEXT NOT NULL CHECK (state IN
                            ('pending', 'acked', 'parked', 'cancelled')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL,
        ack_code        TEXT,
        last_error      TEXT,
        created_at      REAL NOT NULL,
        updated_at      REAL NOT NULL
    );
    CREATE INDEX hl7_outbound_due ON hl7_outbound (next_attempt_at) WHERE state = 'pending';
    """,
    # 14 (i13-appointments): the rebooking window in force for an appointment (seconds),
    #    so the send-time recheck of a held "cancelled" notice judges a rebooking by the
    #    interface's own setting; the appointment list's filter by status and start.
    """
    ALTER TABLE appointments ADD COLUMN rebook_window REAL;
    CREATE INDEX appointments_status_start ON appointments (status, start_at);
    """,
    # 15 (i13-mllp): HL7 messages received over MLLP, one row per interface, sending
    #    application and facility and control id (a resend is a duplicate, answered with
    #    the stored ACK, which holds MSH ids only); the message itself encrypted; its
    #    state, and for a quarantined or rejected one a reason without PHI.
    """
    CREATE TABLE hl7_messages (
        id               TEXT PRIMARY KEY,
        interface        TEXT NOT NULL,
        sending_app      TEXT NOT NULL,
        sending_facility TEXT NOT NULL,
        control_id       TEXT NOT NULL,
        msg_type         TEXT NOT NULL,
        event            TEXT NOT NULL,
        version          TEXT NOT NULL,
        msg_time         TEXT NOT NULL,
        charset          TEXT NOT NULL,
        charset_flag     TEXT,
        raw_ct           BLOB NOT NULL,
        state            TEXT NOT NULL CHECK (state IN
                             ('mapped', 'ignored', 'quarantined', 'rejected')),
        error_code       INTEGER,
        error_text       TEXT,
        error_location   TEXT,
        ack_code         TEXT,
        ack              TEXT NOT NULL,
        duplicates       INTEGER NOT NULL DEFAULT 0,
        reprocessed      INTEGER NOT NULL DEFAULT 0,
        received_at      REAL NOT NULL,
        updated_at       REAL NOT NULL,
        UNIQUE (interface, sending_app, sending_facility, control_id)
    );
    CREATE INDEX hl7_messages_state ON hl7_messages (interface, state, received_at);
    """,
    # 16 (i13-templates): message templates. Each save is a new, immutable row (a
    #     version of one name in one language, with its purpose, typed variables and
    #     A/B variants as JSON); `template_heads` names the active version of each
    #     name and language (NULL once deleted: the versions stay, and a built-in
    #     default deleted by a site is not seeded again).
    """
    CREATE TABLE templates (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        language    TEXT NOT NULL,
        version     INTEGER NOT NULL,
        purpose     TEXT NOT NULL,
        kind        TEXT,
        variables   TEXT NOT NULL,
        variants    TEXT NOT NULL,
        builtin     INTEGER NOT NULL DEFAULT 0,
        created_at  REAL NOT NULL,
        created_by  TEXT NOT NULL,
        UNIQUE (name, language, version)
    );
    CREATE TABLE template_heads (
        name        TEXT NOT NULL,
        language    TEXT NOT NULL,
        active      INTEGER,
        updated_at  REAL NOT NULL,
        PRIMARY KEY (name, language)
    );
    """,
    # 17 (i13-reminders): reminder rules, one row per version; a version is never changed
    #    (an edit inserts the next one and only clears the old one's `current` flag), so a
    #    notice's (rule_id, rule_version) always names what planned it. Offsets and
    #    durations are kept as written ("-24h", "-1d"); filters and variants as JSON. An
    #    appointment's type (SCH-8 or the API's), which rules may filter on.
    """
    CREATE TABLE reminder_rules (
        id             TEXT NOT NULL,
        version        INTEGER NOT NULL,
        name           TEXT NOT NULL,
        lead           TEXT NOT NULL,
        delivery_time  TEXT,
        services       TEXT NOT NULL,
        locations      TEXT NOT NULL,
        appt_types     TEXT NOT NULL,
        skip_booked    TEXT,
        purpose        TEXT NOT NULL,
        priority       TEXT,
        template       TEXT NOT NULL,
        variants       TEXT NOT NULL,
        active         INTEGER NOT NULL,
        current        INTEGER NOT NULL,
        actor          TEXT NOT NULL,
        created_at     REAL NOT NULL,
        PRIMARY KEY (id, version)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX reminder_rules_current ON reminder_rules (id) WHERE current = 1;
    CREATE TRIGGER reminder_rules_immutable BEFORE UPDATE OF id, version, name, lead,
        delivery_time, services, locations, appt_types, skip_booked, purpose, priority,
        template, variants, active, actor, created_at ON reminder_rules
    BEGIN
        SELECT RAISE(ABORT, 'reminder rule versions are immutable');
    END;
    CREATE TRIGGER reminder_rules_retire BEFORE UPDATE OF current ON reminder_rules
    WHEN NOT (OLD.current = 1 AND NEW.current = 0)
    BEGIN
        SELECT RAISE(ABORT, 'a reminder rule version is only ever retired');
    END;
    CREATE TRIGGER reminder_rules_kept BEFORE DELETE ON reminder_rules
    BEGIN
        SELECT RAISE(ABORT, 'reminder rule versions are kept');
    END;
    ALTER TABLE appointments ADD COLUMN appt_type TEXT;
    """,
    # 18 (i13-results): results-available and medication-ready events, one per order
    #    (keyed index, no PHI) and status, so a repeated final result notifies once, and
    #    when an order's results were withdrawn (OBR-25 X) before their notice went;
    #    medication schedules (times of day in a zone, start and end dates, the drug's
    #    label encrypted and only if the site allows drug names) with how far ahead their
    #    dose notices are planned; at most one live dose notice per schedule and time.
    """
    CREATE TABLE clinical_events (
        id          TEXT PRIMARY KEY,
        kind        TEXT NOT NULL CHECK (kind IN ('result_available', 'medication_ready')),
        source      TEXT NOT NULL,
        order_ref   TEXT NOT NULL,
        status      TEXT NOT NULL,
        patient_id  TEXT,
        contact_idx BLOB,
        notice_id   TEXT,
        outcome     TEXT NOT NULL CHECK (outcome IN ('notice', 'joined', 'no_contact')),
        message_ref TEXT,
        withdrawn_at REAL,
        created_at  REAL NOT NULL,
        UNIQUE (kind, source, order_ref, status)
    );
    CREATE INDEX clinical_events_patient ON clinical_events (patient_id, created_at);
    CREATE TABLE medication_schedules (
        id            TEXT PRIMARY KEY,
        source        TEXT NOT NULL,
        ext_index     BLOB,
        patient_id    TEXT,
        contact_idx   BLOB NOT NULL,
        times         TEXT NOT NULL,
        time_zone     TEXT NOT NULL,
        start_date    TEXT NOT NULL,
        end_date      TEXT,
        label_ct      BLOB,
        language      TEXT,
        state         TEXT NOT NULL CHECK (state IN ('active', 'stopped', 'ended')),
        version       INTEGER NOT NULL DEFAULT 1,
        planned_until REAL NOT NULL,
        stopped_at    REAL,
        stop_reason   TEXT,
        created_by    TEXT NOT NULL,
        created_at    REAL NOT NULL,
        updated_at    REAL NOT NULL,
        UNIQUE (source, ext_index)
    );
    CREATE INDEX medication_schedules_active ON medication_schedules (planned_until)
        WHERE state = 'active';
    CREATE UNIQUE INDEX clinical_notices_one_dose ON clinical_notices (ref, due_at)
        WHERE kind = 'medication_dose' AND state IN ('pending', 'queued');
    """,
    # 19 (i13-replies): patients' replies to appointment texts (C / R / N / STOP 1234):
    #    one row per inbound reply, what it meant and did, and the staff worklist
    #    (`state` open -> resolved, once). An appointment-scoped opt-out (a consent
    #    ledger scope `appointment:<id>`, from `STOP 1234`) cancels every notice
    #    planned for that appointment afterwards, whoever plans it (the trigger),
    #    until an opt-in of everything (START) is newer.
    """
    CREATE TABLE appointment_replies (
        id             TEXT PRIMARY KEY,
        inbound_id     TEXT NOT NULL UNIQUE,
        contact_idx    BLOB NOT NULL,
        appointment_id TEXT,
        intent         TEXT NOT NULL,
        by_code        INTEGER NOT NULL DEFAULT 0,
        outcome        TEXT NOT NULL,
        writeback_id   TEXT,
        state          TEXT NOT NULL CHECK (state IN ('done', 'open', 'resolved')),
        created_at     REAL NOT NULL,
        resolved_at    REAL,
        resolved_by    TEXT,
        resolution     TEXT
    );
    CREATE INDEX appointment_replies_state ON appointment_replies (state, created_at);
    CREATE INDEX appointment_replies_appointment ON appointment_replies (appointment_id);
    CREATE TRIGGER clinical_notices_appointment_optout AFTER INSERT ON clinical_notices
    WHEN NEW.appointment_id IS NOT NULL AND NEW.state = 'pending' AND EXISTS (
        SELECT 1 FROM consent_state s WHERE s.contact_idx = NEW.contact_idx
        AND s.scope = 'appointment:' || NEW.appointment_id AND s.opted = 'out'
        AND s.seq > (SELECT coalesce(max(a.seq), 0) FROM consent_state a
                     WHERE a.contact_idx = NEW.contact_idx AND a.scope = 'all'
                     AND a.opted = 'in'))
    BEGIN
        UPDATE clinical_notices SET state = 'cancelled', reason = 'opted_out'
        WHERE id = NEW.id;
    END;
    """,
    # 20 (i12-bench): why the send policy held a message at accept (`quiet_hours`,
    #    `frequency_cap`), kept on its row: its creation event is implied by the row, as
    #    a queued one's is, rather than written as a row of `message_events` on every
    #    accept the policy holds. One blocked at accept needs nothing new: it is
    #    `blocked` with its reason in `error_code` and, blocked being final, no events.
    #    Rows from before keep their event row, which the history reads as before.
    """
    ALTER TABLE messages ADD COLUMN held_for TEXT;
    """,
    # 21 (i13-hl7bench): a patient's pending notices by index. A booking looks for a held
    #    cancellation or a moved notice of its patient to fold into one "moved" notice;
    #    without this it walked every pending notice of the site.
    """
    CREATE INDEX clinical_notices_patient_pending ON clinical_notices (patient_id)
        WHERE state = 'pending';
    """,
    # 22 (i14-keys): the re-encryption after a key rotation (`gateway/keys/rekey.py`):
    #    one row per table with encrypted columns, the generation its rows are brought
    #    to, the key of the last row done (a kill resumes after it), the last key the
    #    walk goes to (the table's end when it was reached: rows added later are under
    #    the new key already), the rows it re-encrypted and could not open, and whether
    #    the table is through. The consent ledger's trigger now also lets a re-encryption replace
    #    an encrypted text by one of a newer key generation (the header's bytes compare
    #    as the generation does); any other change is refused as before.
    """
    CREATE TABLE key_rekey (
        table_name  TEXT PRIMARY KEY,
        target      INTEGER NOT NULL,
        after       BLOB,
        until       BLOB,
        rewritten   INTEGER NOT NULL DEFAULT 0,
        unreadable  INTEGER NOT NULL DEFAULT 0,
        done        INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    DROP TRIGGER consent_ledger_no_update;
    CREATE TRIGGER consent_ledger_no_update BEFORE UPDATE ON consent_ledger
    WHEN NEW.seq IS NOT OLD.seq OR NEW.id IS NOT OLD.id
        OR NEW.contact_idx IS NOT OLD.contact_idx OR NEW.at IS NOT OLD.at
        OR NEW.decision IS NOT OLD.decision OR NEW.scope IS NOT OLD.scope
        OR NEW.program IS NOT OLD.program OR NEW.source IS NOT OLD.source
        OR NEW.inbound_id IS NOT OLD.inbound_id OR NEW.message_id IS NOT OLD.message_id
        OR NEW.actor IS NOT OLD.actor
        OR (NEW.disclosure_ct IS NOT NULL AND NEW.disclosure_ct IS NOT OLD.disclosure_ct
            AND (OLD.disclosure_ct IS NULL
                 OR substr(NEW.disclosure_ct, 1, 3) <= substr(OLD.disclosure_ct, 1, 3)))
        OR (NEW.note_ct IS NOT NULL AND NEW.note_ct IS NOT OLD.note_ct
            AND (OLD.note_ct IS NULL OR substr(NEW.note_ct, 1, 3) <= substr(OLD.note_ct, 1, 3)))
    BEGIN
        SELECT RAISE(ABORT, 'consent_ledger is append-only');
    END;
    """,
    # 23 (i14-retention): retention and erasure (MSG-11, MSG-12). `redacted` on messages
    #    and inbound: 1 once the text is removed, 2 once the number is too (the row and
    #    its metadata stay). One partial index per step, by creation time, holds only the
    #    rows still waiting for it, so a run reads what is due, not years of rows;
    #    transitions change neither column, so a message costs one index write.
    #    `erased_at`: when a stored HL7 message's or write-back's raw text was removed.
    #    Notices whose variables are still kept, by last change. `store_probe`: the row
    #    the store writes to learn that a full disk has room again.
    """
    ALTER TABLE messages ADD COLUMN redacted INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX messages_text_kept ON messages (created_at) WHERE redacted = 0;
    CREATE INDEX messages_number_kept ON messages (created_at) WHERE redacted = 1;
    ALTER TABLE inbound ADD COLUMN redacted INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX inbound_text_kept ON inbound (received_at) WHERE redacted = 0;
    CREATE INDEX inbound_number_kept ON inbound (received_at) WHERE redacted = 1;
    ALTER TABLE hl7_messages ADD COLUMN erased_at REAL;
    CREATE INDEX hl7_messages_retention ON hl7_messages (received_at) WHERE erased_at IS NULL;
    ALTER TABLE hl7_outbound ADD COLUMN erased_at REAL;
    CREATE INDEX clinical_notices_retention ON clinical_notices (updated_at)
        WHERE variables_ct IS NOT NULL AND state <> 'pending';
    CREATE TABLE store_probe (id INTEGER PRIMARY KEY, at REAL NOT NULL);
    """,
    # 24 (i15 contract): contacts as an audience. Attributes to choose audiences by
    #    (age band, clinic, preferences as a JSON array of keys; language and time zone
    #    are the consent issue's); groups with their members and free tags, all by the
    #    contact's blind index (numbers stay encrypted in `contacts`). A message made by
    #    a campaign names it and its template variant, for progress and analytics. A
    #    click on a tracked link, one row each, classified (`human` 1: a person; 0: a
    #    preview bot, a link scanner, a HEAD or a prefetch).
    """
    ALTER TABLE contacts ADD COLUMN age_band TEXT;
    ALTER TABLE contacts ADD COLUMN clinic TEXT;
    ALTER TABLE contacts ADD COLUMN preferences TEXT;
    CREATE TABLE contact_groups (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,
        description TEXT,
        created_at  REAL NOT NULL,
        updated_at  REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE contact_group_members (
        group_id    TEXT NOT NULL,
        contact_idx BLOB NOT NULL,
        added_at    REAL NOT NULL,
        PRIMARY KEY (group_id, contact_idx)
    ) WITHOUT ROWID;
    CREATE INDEX contact_group_members_contact ON contact_group_members (contact_idx);
    CREATE TABLE contact_tags (
        tag         TEXT NOT NULL,
        contact_idx BLOB NOT NULL,
        PRIMARY KEY (tag, contact_idx)
    ) WITHOUT ROWID;
    CREATE INDEX contact_tags_contact ON contact_tags (contact_idx);
    ALTER TABLE messages ADD COLUMN campaign_id TEXT;
    ALTER TABLE messages ADD COLUMN variant TEXT;
    CREATE INDEX messages_campaign ON messages (campaign_id, variant, state)
        WHERE campaign_id IS NOT NULL;
    CREATE TABLE link_clicks (
        seq         INTEGER PRIMARY KEY,
        link_id     TEXT NOT NULL,
        message_id  TEXT,
        at          REAL NOT NULL,
        human       INTEGER NOT NULL,
        agent_class TEXT NOT NULL
    );
    CREATE INDEX link_clicks_message ON link_clicks (message_id);
    """,
    # 25 (i15-contacts): saved audiences ("saved queries"): a named AudienceSpec kept as
    #    its JSON, so a campaign or a group send can name one and count it live.
    """
    CREATE TABLE contact_audiences (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,
        spec        TEXT NOT NULL,
        created_at  REAL NOT NULL,
        updated_at  REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    # 26 (i15-campaigns): campaigns and their recipients. A campaign's settings that
    #    hold no PHI are JSON in `spec`; its free text and variable values are encrypted
    #    in `content_ct`. `cursor`: the last contact index (the audience's order) the
    #    runner handled. One `campaign_recipients` row per contact handled, committed
    #    with its message (or the reason it got none): its key is what makes a restart
    #    or a second pass unable to send one recipient two messages. The partial indexes
    #    serve the runner's "which campaigns are live" read and the skipped counts; the
    #    one by contact, an erasure (which deletes the person's rows).
    """
    CREATE TABLE campaigns (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL,
        state         TEXT NOT NULL,
        spec          TEXT NOT NULL,
        content_ct    BLOB,
        cursor        BLOB NOT NULL DEFAULT x'',
        audience_size INTEGER,
        created_by    TEXT NOT NULL,
        created_at    REAL NOT NULL,
        updated_at    REAL NOT NULL,
        started_at    REAL,
        done_at       REAL
    ) WITHOUT ROWID;
    CREATE INDEX campaigns_live ON campaigns (state) WHERE state IN ('scheduled', 'running');
    CREATE TABLE campaign_recipients (
        campaign_id TEXT NOT NULL,
        contact_idx BLOB NOT NULL,
        message_id  TEXT,
        outcome     TEXT NOT NULL,
        at          REAL NOT NULL,
        PRIMARY KEY (campaign_id, contact_idx)
    ) WITHOUT ROWID;
    CREATE INDEX campaign_recipients_skipped ON campaign_recipients (campaign_id, outcome)
        WHERE message_id IS NULL;
    CREATE INDEX campaign_recipients_contact ON campaign_recipients (contact_idx);
    """,
    # 27 (i15-surveys): SMS surveys (gateway/surveys/). A survey's versions are
    #    immutable (a session is pinned to the version it started with); one open
    #    session per number is a partial unique index, so two parallel starts cannot
    #    both open one. An answer keeps the canonical value of a choice, number or
    #    scale (an option key, a number) for the counts; the text the patient sent
    #    stays only in `inbound.body_ct`, encrypted, named by `inbound_id`.
    """
    CREATE TABLE surveys (
        id          TEXT NOT NULL,
        version     INTEGER NOT NULL,
        current     INTEGER NOT NULL,
        name        TEXT NOT NULL,
        spec        TEXT NOT NULL,
        created_at  REAL NOT NULL,
        created_by  TEXT NOT NULL,
        PRIMARY KEY (id, version)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX surveys_current ON surveys (id) WHERE current = 1;
    CREATE TABLE survey_sessions (
        id           TEXT PRIMARY KEY,
        survey_id    TEXT NOT NULL,
        version      INTEGER NOT NULL,
        contact_idx  BLOB NOT NULL,
        language     TEXT NOT NULL,
        state        TEXT NOT NULL CHECK (state IN
                     ('open', 'completed', 'timed_out', 'stopped', 'blocked', 'failed')),
        question     INTEGER NOT NULL,
        asks         INTEGER NOT NULL DEFAULT 0,
        deadline     REAL,
        message_id   TEXT,
        actor        TEXT NOT NULL,
        started_at   REAL NOT NULL,
        updated_at   REAL NOT NULL,
        closed_at    REAL
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX survey_sessions_open ON survey_sessions (contact_idx)
        WHERE state = 'open';
    CREATE INDEX survey_sessions_deadline ON survey_sessions (deadline) WHERE state = 'open';
    CREATE INDEX survey_sessions_survey ON survey_sessions (survey_id, version, state);
    CREATE TABLE survey_answers (
        seq         INTEGER PRIMARY KEY,
        session_id  TEXT NOT NULL,
        survey_id   TEXT NOT NULL,
        version     INTEGER NOT NULL,
        question    INTEGER NOT NULL,
        valid       INTEGER NOT NULL,
        value       TEXT,
        reason      TEXT,
        inbound_id  TEXT NOT NULL,
        at          REAL NOT NULL
    );
    CREATE INDEX survey_answers_survey ON survey_answers (survey_id, version, question);
    CREATE INDEX survey_answers_session ON survey_answers (session_id);
    """,
    # 28 (i15-links): tracked links. Named links (a destination from links.allow, kept
    # in clear: a shared page, never a person's data); each message's tokens, stored
    # as SHA-256 so a copy of the store opens no link, bound to the message for
    # per-message, campaign and variant counts; and the per-link index the link
    # list's click counts read from link_clicks (migration 24).
    """
    CREATE TABLE links (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,
        destination TEXT NOT NULL,
        expires_at  REAL,
        created_at  REAL NOT NULL,
        created_by  TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE link_tokens (
        token_hash  BLOB PRIMARY KEY,
        link_id     TEXT NOT NULL,
        message_id  TEXT NOT NULL,
        created_at  REAL NOT NULL,
        expires_at  REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX link_tokens_message ON link_tokens (message_id);
    CREATE INDEX link_tokens_expiry ON link_tokens (expires_at);
    CREATE INDEX link_clicks_link ON link_clicks (link_id, human);
    """,
    # 29 (i15-analytics): analytics without PHI (`gateway/analytics/`). Daily sums per
    #    dimension (total, campaign, template variant, reminder rule, clinic, purpose,
    #    route) and key, by the site's calendar day: one row per dimension, key and day
    #    with a column per metric (so a year of one key is 365 rows), and the blocked
    #    messages per reason beside it. Counts only: no number, text or person. Each
    #    source is read after its cursor (a committed seq, or a time and id) by the
    #    rollup, which adds a batch into the sums and moves the cursor in one
    #    transaction, off the send path (no trigger on messages). The partial index
    #    holds only blocked messages (those blocked at accept have no event to read).
    """
    CREATE TABLE analytics_daily (
        dim     TEXT NOT NULL,
        day     TEXT NOT NULL,
        key     TEXT NOT NULL,
        sent                    INTEGER NOT NULL DEFAULT 0,
        delivered               INTEGER NOT NULL DEFAULT 0,
        failed                  INTEGER NOT NULL DEFAULT 0,
        expired                 INTEGER NOT NULL DEFAULT 0,
        replied_confirm         INTEGER NOT NULL DEFAULT 0,
        replied_cancel          INTEGER NOT NULL DEFAULT 0,
        replied_other           INTEGER NOT NULL DEFAULT 0,
        opted_out               INTEGER NOT NULL DEFAULT 0,
        clicked                 INTEGER NOT NULL DEFAULT 0,
        clicks                  INTEGER NOT NULL DEFAULT 0,
        parts                   INTEGER NOT NULL DEFAULT 0,
        appointments_reminded   INTEGER NOT NULL DEFAULT 0,
        appointments_unreminded INTEGER NOT NULL DEFAULT 0,
        noshow_reminded         INTEGER NOT NULL DEFAULT 0,
        noshow_unreminded       INTEGER NOT NULL DEFAULT 0,
        lat_5                   INTEGER NOT NULL DEFAULT 0,
        lat_10                  INTEGER NOT NULL DEFAULT 0,
        lat_30                  INTEGER NOT NULL DEFAULT 0,
        lat_60                  INTEGER NOT NULL DEFAULT 0,
        lat_120                 INTEGER NOT NULL DEFAULT 0,
        lat_300                 INTEGER NOT NULL DEFAULT 0,
        lat_600                 INTEGER NOT NULL DEFAULT 0,
        lat_1800                INTEGER NOT NULL DEFAULT 0,
        lat_3600                INTEGER NOT NULL DEFAULT 0,
        lat_7200                INTEGER NOT NULL DEFAULT 0,
        lat_21600               INTEGER NOT NULL DEFAULT 0,
        lat_86400               INTEGER NOT NULL DEFAULT 0,
        lat_259200              INTEGER NOT NULL DEFAULT 0,
        lat_over                INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (dim, day, key)
    ) WITHOUT ROWID;
    CREATE TABLE analytics_blocked (
        dim     TEXT NOT NULL,
        day     TEXT NOT NULL,
        key     TEXT NOT NULL,
        reason  TEXT NOT NULL,
        value   INTEGER NOT NULL,
        PRIMARY KEY (dim, day, key, reason)
    ) WITHOUT ROWID;
    CREATE TABLE analytics_cursors (
        stream  TEXT PRIMARY KEY,
        seq     INTEGER NOT NULL DEFAULT 0,
        at      REAL NOT NULL DEFAULT 0,
        id      TEXT NOT NULL DEFAULT '',
        rows    INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE INDEX analytics_blocked_messages ON messages (updated_at, id) WHERE state = 'blocked';
    """,
    # 30 (issue 16, growth): the message list at millions of rows (bench/growth.py). Without
    #    these, a filter on route, on overdue receipts or on a time range walked the
    #    messages newest first until it had a page: every row, for a rare match. By
    #    creation time (a time range pages in this order; written once, at accept); by
    #    route only once a message has one (written at its claim, not at its accept);
    #    and the few overdue messages (written when the sweep flags one). The possible
    #    duplicates, for the queue's status: it read every queued row to find them.
    """
    CREATE INDEX messages_created ON messages (created_at);
    CREATE INDEX messages_route ON messages (route, id) WHERE route IS NOT NULL;
    CREATE INDEX messages_overdue ON messages (id) WHERE receipt_overdue = 1;
    CREATE INDEX messages_possible_duplicate ON messages (state) WHERE possible_duplicate = 1;
    """,
    # 31 (issue 15, campaign progress): a campaign's replies and opt-outs are counted
    #    from the inbound messages and opt-outs since the campaign was created, not by
    #    probing for each of its (up to 100,000) messages: the progress count stays
    #    cheap on the one core.
    """
    CREATE INDEX inbound_received ON inbound (received_at);
    CREATE INDEX consent_ledger_opt_outs ON consent_ledger (at) WHERE decision = 'opt_out';
    """,
    # 32 (issue 16, write budget): the index by recipient stops holding `state`, which every claim,
    #    `sent` and receipt changed: each rewrote the message's entry, one whole page at
    #    a random place in the index per commit (bench/wal_pages.py). It holds
    #    `uncounted` instead, 1 for a message in a state no frequency cap counts (blocked,
    #    cancelled, expired), which changes only when a message enters or leaves those
    #    states; so the send policy's cap query (every accept) stays covered by the index.
    #    The insert and the transitions' UPDATE set it (`transitions.UNCOUNTED`); not
    #    triggers, which made each UPDATE of a message several times dearer in CPU.
    """
    ALTER TABLE messages ADD COLUMN uncounted INTEGER NOT NULL DEFAULT 0;
    UPDATE messages SET uncounted = 1 WHERE state IN ('blocked', 'cancelled', 'expired');
    DROP INDEX messages_to;
    CREATE INDEX messages_to ON messages (to_index, purpose, uncounted, created_at, send_at);
    """,
    # 33 (issue 17, directory sign-in): panel users signed in through the directory
    #    (gateway/directory/).
    #    They live in `users` (sessions, TOTP and audit work as for local ones), keyed by
    #    the directory's stable id (objectGUID / entryUUID): a renamed account keeps its
    #    second factor. `role_checked_at`: when the role was last read from the directory.
    """
    ALTER TABLE users ADD COLUMN directory_id TEXT;
    ALTER TABLE users ADD COLUMN role_checked_at REAL;
    CREATE UNIQUE INDEX users_directory_id ON users (directory_id) WHERE directory_id IS NOT NULL;
    """,
    # ---
    # 34 (issue 12, consent): `consent_epoch`, one value that every change to `consent_state`
    #    replaces with a new random one, so the writer keeps recipients' consent rows
    #    between transactions and reads them again only after a change
    #    (gateway/consent/state_cache.py). Random: a change rolled back restores the old
    #    value, and a count would let a later change come back to the one it had.
    """
    CREATE TABLE consent_epoch (
        id             INTEGER PRIMARY KEY,  -- 0, the one row read
        value          INTEGER NOT NULL
    );
    INSERT INTO consent_epoch (id, value) VALUES (0, random());
    CREATE TRIGGER consent_state_inserted AFTER INSERT ON consent_state
    BEGIN
        UPDATE consent_epoch SET value = random() WHERE id = 0;
    END;
    CREATE TRIGGER consent_state_updated AFTER UPDATE ON consent_state
    BEGIN
        UPDATE consent_epoch SET value = random() WHERE id = 0;
    END;
    CREATE TRIGGER consent_state_deleted AFTER DELETE ON consent_state
    BEGIN
        UPDATE consent_epoch SET value = random() WHERE id = 0;
    END;
    """,
    # ---
    # 35 (issue 16, write budget): the index of carrier ids by message holds only the
    #    parts of messages of several parts, numbered from 1 (`transitions.part_numbers`);
    #    a one-part message's row (part 0, the common case) is found by its carrier id
    #    alone, so its `sent` no longer writes a page of this index (bench/wal_pages.py).
    #    Its receipt asks whether there are other parts (`part > 0`) by this index.
    """
    UPDATE carrier_ids SET part = part + 1
        WHERE message_id IN (SELECT message_id FROM carrier_ids WHERE part > 0);
    DROP INDEX carrier_ids_message;
    CREATE INDEX carrier_ids_parts ON carrier_ids (message_id) WHERE part > 0;
    """,
    # ---
    # 36 (issue 16, growth): a state and a time range (`/messages?status=delivered&since=`
    #    an old day) walked the index by state newest first, past every newer row of
    #    that state: 176 ms at 5 M messages. The index by state now orders by creation
    #    time (then id, the key), so that walk reads only the range asked. Replaced, not
    #    added: a second index moved by every transition cost 4.5 more WAL pages per
    #    message (bench/wal_pages.py); its readers page by (created_at, id) instead of id.
    """
    DROP INDEX messages_state;
    CREATE INDEX messages_state ON messages (state, created_at);
    """,
    # ---
    # 37 (issue 18, nodes): a cluster node's journal of outcomes it could not record in
    #    PostgreSQL (the database away past the retry window): replayed in `seq` order
    #    through the claim-checked finish once it is back (`cluster/outcome_journal.py`).
    #    Ids, states, codes and carrier ids only: nothing personal. A rowid `seq` (no
    #    AUTOINCREMENT): appends go above every row left, replays delete from the oldest.
    """
    CREATE TABLE outcome_journal (
        seq                INTEGER PRIMARY KEY,
        node_id            TEXT NOT NULL,
        incarnation        INTEGER NOT NULL,
        claim_epoch        INTEGER NOT NULL,
        message_id         TEXT NOT NULL,
        state              TEXT NOT NULL,
        route              TEXT NOT NULL,
        carrier_ids        TEXT NOT NULL DEFAULT '[]',
        error_code         TEXT,
        due_at             REAL,
        attempts           INTEGER,
        possible_duplicate INTEGER NOT NULL DEFAULT 0,
        at                 REAL NOT NULL
    );
    """,
    # ---
    # 38 (issue 16, write budget): a message's events are found from its row, which keeps
    #    their seqs (a JSON array, in order), not by an index of events by message: at a
    #    trickle every commit wrote a page of that index for the new message and another
    #    for the receipt's, older one (2.1 of 16.3 WAL pages, bench/wal_pages.py), while
    #    the row is rewritten by each transition anyway. The trigger appends each new
    #    event's seq, whoever inserts it; `event_seqs` is in no index, so it costs no
    #    page beyond the row's. Readers by message: `json_each(event_seqs)`, then seqs.
    """
    ALTER TABLE messages ADD COLUMN event_seqs TEXT NOT NULL DEFAULT '[]';
    UPDATE messages SET event_seqs = (
        SELECT json_group_array(seq) FROM (
            SELECT seq FROM message_events e WHERE e.message_id = messages.id ORDER BY seq))
    WHERE id IN (SELECT message_id FROM message_events);
    DROP INDEX message_events_message;
    CREATE TRIGGER message_events_on_message AFTER INSERT ON message_events
    BEGIN
        UPDATE messages SET event_seqs = json_insert(event_seqs, '$[#]', NEW.seq)
        WHERE id = NEW.message_id;
    END;
    """,
    # ---
    # 39 (issue 16, write budget): the retention sweep finds the messages whose text is
    #    due by walking `messages_created` from a floor per purpose
    #    (`gateway/retention/text_walk.py`), not by an index of the rows whose text is
    #    kept: `messages_text_kept` duplicated `messages_created` (both by creation) and
    #    cost every accept a page (1.3 of 16.3 WAL pages at a trickle, bench/wal_pages.py).
    #    Each purpose's floor starts at its oldest finished message whose text is kept
    #    ('' for none; '*' for the other purposes: the newest message, or 0); a waiting
    #    message below its floor starts in `retention_later`, so that none holds a floor
    #    back. A message inserted at or below its purpose's floor (a clock set back)
    #    lowers it.
    """
    CREATE TABLE retention_floors (
        purpose     TEXT PRIMARY KEY,
        created_at  REAL NOT NULL,
        id          TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE retention_later (id TEXT PRIMARY KEY) WITHOUT ROWID;
    INSERT INTO retention_floors (purpose, created_at, id)
        SELECT coalesce(purpose, ''), min(created_at), '' FROM messages
        INDEXED BY messages_text_kept WHERE redacted = 0
        AND state IN ('sent', 'delivered', 'failed', 'expired', 'cancelled', 'blocked')
        GROUP BY coalesce(purpose, '');
    INSERT INTO retention_floors (purpose, created_at, id)
        SELECT '*', coalesce(max(created_at), 0), '' FROM messages;
    INSERT INTO retention_later (id)
        SELECT m.id FROM messages m INDEXED BY messages_text_kept WHERE m.redacted = 0
        AND m.state NOT IN ('sent', 'delivered', 'failed', 'expired', 'cancelled', 'blocked')
        AND m.created_at < coalesce(
            (SELECT f.created_at FROM retention_floors f
             WHERE f.purpose = coalesce(m.purpose, '')),
            (SELECT f.created_at FROM retention_floors f WHERE f.purpose = '*'));
    DROP INDEX messages_text_kept;
    CREATE TRIGGER messages_below_retention_floor AFTER INSERT ON messages
    WHEN NEW.created_at <= coalesce(
        (SELECT created_at FROM retention_floors WHERE purpose = coalesce(NEW.purpose, '')),
        (SELECT created_at FROM retention_floors WHERE purpose = '*'))
    BEGIN
        INSERT INTO retention_floors (purpose, created_at, id)
            VALUES (coalesce(NEW.purpose, ''), NEW.created_at, '')
            ON CONFLICT (purpose) DO UPDATE SET created_at = excluded.created_at, id = '';
    END;
    """,
    # ---
    # 40 (issue 16, write budget): the receipt deadline's sweep walks `messages_state`'s
    #    `sent` rows from a floor (`gateway/store/receipt_deadline.py`), not an index of
    #    the messages awaiting a receipt, which every `sent` and every receipt wrote a page
    #    of (1.0 of 13.0 WAL pages at a trickle, bench/wal_pages.py). Every `sent` message
    #    still waiting was created after the floor, or is in `receipts_later` by when it
    #    was sent: the floor starts at the oldest waiting one (else the newest message);
    #    a message that becomes `sent` at or below it (created long before: scheduled,
    #    held, retried) is listed by the triggers.
    """
    CREATE TABLE receipt_floor (created_at REAL NOT NULL, id TEXT NOT NULL);
    INSERT INTO receipt_floor (created_at, id) SELECT coalesce(
        (SELECT min(created_at) FROM messages INDEXED BY messages_awaiting_receipt
         WHERE state = 'sent' AND receipt_overdue = 0),
        (SELECT max(created_at) FROM messages), 0), '';
    CREATE TABLE receipts_later (
        sent_at  REAL NOT NULL,
        id       TEXT NOT NULL,
        PRIMARY KEY (sent_at, id)
    ) WITHOUT ROWID;
    DROP INDEX messages_awaiting_receipt;
    CREATE TRIGGER messages_sent_below_receipt_floor AFTER UPDATE OF state ON messages
    WHEN NEW.state = 'sent' AND OLD.state <> 'sent'
        AND (NEW.created_at, NEW.id) <= (SELECT created_at, id FROM receipt_floor)
    BEGIN
        INSERT OR IGNORE INTO receipts_later (sent_at, id) VALUES (NEW.updated_at, NEW.id);
    END;
    CREATE TRIGGER messages_stored_sent_below_receipt_floor AFTER INSERT ON messages
    WHEN NEW.state = 'sent'
        AND (NEW.created_at, NEW.id) <= (SELECT created_at, id FROM receipt_floor)
    BEGIN
        INSERT OR IGNORE INTO receipts_later (sent_at, id) VALUES (NEW.updated_at, NEW.id);
    END;
    """,
    # ---
    # 41 (issue 16, write budget): no index by creation time alone. It cost every accept a
    #    page (1.3 of 12.0 WAL pages at a trickle, bench/wal_pages.py); its readers (a time
    #    range of the message list without a state, the retention sweep's walk) merge
    #    each state's range of `messages_state` (by state, then creation time) instead.
    """
    DROP INDEX messages_created;
    """,
    # ---
    # 42 (issue 18, write-back handover): a write-back's attempt is marked before its
    #    bytes leave (`sending_at`, cleared with the outcome), so an attempt cut off by
    #    a crash or a dead lane leader is known, and the row it leaves, like one whose
    #    ACK never came, is flagged `possible_duplicate` before it is sent again
    #    (`gateway/hl7/lane.py`).
    """
    ALTER TABLE hl7_outbound ADD COLUMN sending_at REAL;
    ALTER TABLE hl7_outbound ADD COLUMN possible_duplicate INTEGER NOT NULL DEFAULT 0;
    """,
)


def _statements(script: str) -> list[str]:
    """Split a migration into statements; a trigger body's `;` does not end one."""
    statements, pending = [], ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n\t;"):
                statements.append(pending.strip())
            pending = ""
    if pending.strip(" \n\t;"):
        raise ValueError("a migration ends in an incomplete statement")
    return statements


class SchemaTooNew(sqlite3.DatabaseError, RuntimeError):
    """The store was written by a newer smsgw. A `DatabaseError`, so start-up
    (`gateway/startup.py`) reports it as the store it cannot open, in one line."""

    def __init__(self, found: int) -> None:
        super().__init__(
            f"the store has schema version {found}, newer than this smsgw "
            f"({len(MIGRATIONS)}); install the smsgw that wrote it, or restore a backup"
            " taken before the upgrade (docs/ops/upgrades.md)"
        )
        self.found = found


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to date; returns the version now in force."""
    current = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if current > len(MIGRATIONS):
        raise SchemaTooNew(current)
    for version in range(current + 1, len(MIGRATIONS) + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(MIGRATIONS[version - 1]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)
