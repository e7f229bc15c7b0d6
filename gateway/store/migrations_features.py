"""SQLite schema migrations 13 to 29: the clinical tables (patients, appointments, HL7,
templates, reminders, results, replies), keys, retention, contacts as audiences,
campaigns, surveys, links and analytics (`schema.MIGRATIONS` puts them in order).
"""

from __future__ import annotations

FEATURES: tuple[str, ...] = (
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
)
