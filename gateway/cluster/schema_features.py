"""Cluster migrations 15 to 24, in order (`schema.MIGRATIONS` goes on with them): the
twins of SQLite's feature tables, so every node runs the features on one set of rows
(Kannel's dlr-urls, contacts' attributes, the clinical tables, audiences and campaigns,
the analytics' sums, surveys, the HL7 log, results, medication and replies, HL7
write-back, an appointment opt-out's trigger). Kept apart from `schema.py` for their
size; each entry's comment says what it is for."""

from __future__ import annotations

from gateway.cluster.schema_analytics import ANALYTICS_AND_ADOPTION
from gateway.cluster.schema_results import RESULTS_AND_MEDICATION

FEATURE_MIGRATIONS: tuple[str, ...] = (
    # 15 (issue 18 pt 1, Kannel): what a Kannel sendsms asked to hear back, as SQLite's
    #    migration 8 (`gateway/cluster/dlr_wishes.py`): the dlr-url (its query may carry
    #    PHI) and the receiver as the client wrote it, encrypted; written in the accept's
    #    transaction, deleted by the number's erasure. No foreign key, as in SQLite: a
    #    restarted `smsgw store migrate` truncates what it copied, table by table.
    """
    CREATE TABLE kannel_dlr (
        message_id   text PRIMARY KEY,
        url_ct       bytea NOT NULL,
        mask         integer NOT NULL,
        receiver_ct  bytea NOT NULL,
        sender       text NOT NULL,
        username     text NOT NULL,
        created_at   double precision NOT NULL
    );
    """,
    # 16 (issue 18 pt 6): a contact's attributes as SQLite's migration 24 keeps them (age
    #    band, clinic, preferences as a JSON array of keys), so `smsgw store migrate`
    #    copies the contacts whole with the consent ledger's history.
    """
    ALTER TABLE contacts ADD COLUMN IF NOT EXISTS age_band text;
    ALTER TABLE contacts ADD COLUMN IF NOT EXISTS clinic text;
    ALTER TABLE contacts ADD COLUMN IF NOT EXISTS preferences text;
    """,
    # 17 (issue 18, clinical): SQLite's clinical tables as twins, so every node books,
    #    plans and sends from one set (`gateway/cluster/clinical_db.py` runs SQLite's
    #    own jobs on them): patients (MRN keyed and encrypted, texted at a shared
    #    `contacts` row), appointments and their trail, timed notices (variables
    #    encrypted; one pending per appointment and rule), reminder rules (one row per
    #    version: a trigger keeps each, as SQLite's) and templates (immutable versions,
    #    one head per name and language). Flags stay integers, as SQLite's, so the
    #    jobs' SQL reads them alike. No foreign key (SQLite's appointments name their
    #    patient by one): a restarted `smsgw store migrate` truncates table by table.
    """
    CREATE TABLE patients (
        id             text PRIMARY KEY,
        source         text NOT NULL,
        mrn_index      bytea NOT NULL,
        mrn_ct         bytea NOT NULL,
        contact_idx    bytea,
        phone_source   text,
        created_at     double precision NOT NULL,
        updated_at     double precision NOT NULL,
        UNIQUE (source, mrn_index)
    );
    CREATE INDEX patients_contact ON patients (contact_idx);
    CREATE TABLE appointments (
        id                  text PRIMARY KEY,
        source              text NOT NULL,
        ext_index           bytea NOT NULL,
        ext_key_ct          bytea NOT NULL,
        patient_id          text NOT NULL,
        status              text NOT NULL,
        start_at            double precision,
        end_at              double precision,
        time_zone           text,
        service             text,
        location_code       text,
        location_label_ct   bytea,
        provider_ct         bytea,
        short_code          text NOT NULL,
        version             integer NOT NULL DEFAULT 1,
        last_event          text,
        last_msg_at         double precision,
        created_from_update integer NOT NULL DEFAULT 0,
        confirmed_at        double precision,
        confirmed_via       text,
        created_at          double precision NOT NULL,
        updated_at          double precision NOT NULL,
        rebook_window       double precision,
        appt_type           text,
        UNIQUE (source, ext_index)
    );
    CREATE INDEX appointments_patient ON appointments (patient_id, start_at);
    CREATE INDEX appointments_start ON appointments (start_at);
    CREATE INDEX appointments_status_start ON appointments (status, start_at);
    CREATE TABLE appointment_events (
        seq            bigserial PRIMARY KEY,
        appointment_id text NOT NULL,
        at             double precision NOT NULL,
        event          text NOT NULL,
        source_ref     text,
        old_status     text,
        new_status     text,
        old_start      double precision,
        new_start      double precision,
        version        integer NOT NULL
    );
    CREATE INDEX appointment_events_appt ON appointment_events (appointment_id, seq);
    CREATE TABLE clinical_notices (
        id             text PRIMARY KEY,
        kind           text NOT NULL,
        contact_idx    bytea NOT NULL,
        template       text NOT NULL,
        purpose        text NOT NULL,
        due_at         double precision NOT NULL,
        variables_ct   bytea,
        language       text,
        expires_at     double precision,
        patient_id     text,
        appointment_id text,
        appt_version   integer,
        rule_id        text,
        rule_version   integer,
        variant        text,
        ref            text,
        priority       text,
        state          text NOT NULL CHECK (state IN
                           ('pending', 'queued', 'skipped', 'cancelled', 'superseded')),
        reason         text,
        message_id     text,
        created_at     double precision NOT NULL,
        updated_at     double precision NOT NULL
    );
    CREATE INDEX clinical_notices_due ON clinical_notices (due_at, id) WHERE state = 'pending';
    CREATE UNIQUE INDEX clinical_notices_one_pending ON clinical_notices
        (appointment_id, rule_id) WHERE state = 'pending' AND rule_id IS NOT NULL;
    CREATE INDEX clinical_notices_appointment ON clinical_notices (appointment_id, state);
    CREATE INDEX clinical_notices_contact ON clinical_notices (contact_idx, kind, updated_at);
    CREATE INDEX clinical_notices_message ON clinical_notices (message_id);
    CREATE INDEX clinical_notices_patient_pending ON clinical_notices (patient_id)
        WHERE state = 'pending';
    CREATE INDEX clinical_notices_variables_kept ON clinical_notices (updated_at)
        WHERE variables_ct IS NOT NULL AND state <> 'pending';
    CREATE TABLE reminder_rules (
        id             text NOT NULL,
        version        integer NOT NULL,
        name           text NOT NULL,
        lead           text NOT NULL,
        delivery_time  text,
        services       text NOT NULL,
        locations      text NOT NULL,
        appt_types     text NOT NULL,
        skip_booked    text,
        purpose        text NOT NULL,
        priority       text,
        template       text NOT NULL,
        variants       text NOT NULL,
        active         integer NOT NULL,
        current        integer NOT NULL,
        actor          text NOT NULL,
        created_at     double precision NOT NULL,
        PRIMARY KEY (id, version)
    );
    CREATE UNIQUE INDEX reminder_rules_current ON reminder_rules (id) WHERE current = 1;
    CREATE OR REPLACE FUNCTION reminder_rules_kept() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' THEN
            RAISE EXCEPTION 'reminder rule versions are kept';
        END IF;
        IF to_jsonb(NEW) - 'current' IS DISTINCT FROM to_jsonb(OLD) - 'current' THEN
            RAISE EXCEPTION 'reminder rule versions are immutable';
        END IF;
        IF NEW.current IS DISTINCT FROM OLD.current
           AND NOT (OLD.current = 1 AND NEW.current = 0) THEN
            RAISE EXCEPTION 'a reminder rule version is only ever retired';
        END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER reminder_rules_kept BEFORE UPDATE OR DELETE ON reminder_rules
        FOR EACH ROW EXECUTE FUNCTION reminder_rules_kept();
    CREATE TABLE templates (
        id          text PRIMARY KEY,
        name        text NOT NULL,
        language    text NOT NULL,
        version     integer NOT NULL,
        purpose     text NOT NULL,
        kind        text,
        variables   text NOT NULL,
        variants    text NOT NULL,
        builtin     integer NOT NULL DEFAULT 0,
        created_at  double precision NOT NULL,
        created_by  text NOT NULL,
        UNIQUE (name, language, version)
    );
    CREATE TABLE template_heads (
        name        text NOT NULL,
        language    text NOT NULL,
        active      integer,
        updated_at  double precision NOT NULL,
        PRIMARY KEY (name, language)
    );
    """,
    # 18 (issue 18, campaigns): contacts as an audience and campaigns for every node, as
    #    SQLite's migrations 24-26 (`gateway/cluster/contacts.py`, `campaigns.py`): on the
    #    shared `contacts` (their attributes: 16), groups, members, tags and saved
    #    audiences by the contact's blind index.
    #    A campaign's recipients are written when it starts running (its audience then),
    #    `outcome` NULL until a node's pass handled them: passes on any nodes claim
    #    them with FOR UPDATE SKIP LOCKED through `campaign_recipients_open`, and commit
    #    each one's outcome with its message, so a recipient gets one message whichever
    #    node ran it. `messages_campaign` serves the progress counts.
    """
    CREATE TABLE contact_groups (
        id          text PRIMARY KEY,
        name        text NOT NULL UNIQUE,
        description text,
        created_at  double precision NOT NULL,
        updated_at  double precision NOT NULL
    );
    CREATE TABLE contact_group_members (
        group_id    text NOT NULL,
        contact_idx bytea NOT NULL,
        added_at    double precision NOT NULL,
        PRIMARY KEY (group_id, contact_idx)
    );
    CREATE INDEX contact_group_members_contact ON contact_group_members (contact_idx);
    CREATE TABLE contact_tags (
        tag         text NOT NULL,
        contact_idx bytea NOT NULL,
        PRIMARY KEY (tag, contact_idx)
    );
    CREATE INDEX contact_tags_contact ON contact_tags (contact_idx);
    CREATE TABLE contact_audiences (
        id          text PRIMARY KEY,
        name        text NOT NULL UNIQUE,
        spec        text NOT NULL,
        created_at  double precision NOT NULL,
        updated_at  double precision NOT NULL
    );
    CREATE TABLE campaigns (
        id            text PRIMARY KEY,
        name          text NOT NULL,
        state         text NOT NULL,
        spec          text NOT NULL,
        content_ct    bytea,
        audience_size integer,
        created_by    text NOT NULL,
        created_at    double precision NOT NULL,
        updated_at    double precision NOT NULL,
        started_at    double precision,
        done_at       double precision
    );
    CREATE INDEX campaigns_live ON campaigns (state) WHERE state IN ('scheduled', 'running');
    CREATE TABLE campaign_recipients (
        campaign_id text NOT NULL,
        contact_idx bytea NOT NULL,
        message_id  text,
        outcome     text,
        at          double precision,
        node_id     text,
        PRIMARY KEY (campaign_id, contact_idx)
    );
    CREATE INDEX campaign_recipients_open ON campaign_recipients (campaign_id, contact_idx)
        WHERE outcome IS NULL;
    CREATE INDEX campaign_recipients_skipped ON campaign_recipients (campaign_id, outcome)
        WHERE message_id IS NULL AND outcome IS NOT NULL;
    CREATE INDEX campaign_recipients_contact ON campaign_recipients (contact_idx);
    CREATE INDEX messages_campaign ON messages (campaign_id, variant, state)
        WHERE campaign_id IS NOT NULL;
    """,
    # 19 (issue 18): the analytics' sums on a cluster and adoption's index
    #    (`schema_analytics.py`).
    ANALYTICS_AND_ADOPTION,
    # 20 (issue 18, surveys): SQLite's survey
    #    tables (migration 27) for every node, so a survey started on one node is
    #    answered on another (`gateway/surveys/`, its jobs run through the clinical
    #    tables' bridge). Nothing here is encrypted: an answer's text stays in
    #    `inbound.body_ct`. One open session per number is the partial unique index,
    #    as on SQLite; `seq` orders the answers.
    """
    CREATE TABLE surveys (
        id          text NOT NULL,
        version     integer NOT NULL,
        current     integer NOT NULL,
        name        text NOT NULL,
        spec        text NOT NULL,
        created_at  double precision NOT NULL,
        created_by  text NOT NULL,
        PRIMARY KEY (id, version)
    );
    CREATE UNIQUE INDEX surveys_current ON surveys (id) WHERE current = 1;
    CREATE TABLE survey_sessions (
        id           text PRIMARY KEY,
        survey_id    text NOT NULL,
        version      integer NOT NULL,
        contact_idx  bytea NOT NULL,
        language     text NOT NULL,
        state        text NOT NULL CHECK (state IN
                     ('open', 'completed', 'timed_out', 'stopped', 'blocked', 'failed')),
        question     integer NOT NULL,
        asks         integer NOT NULL DEFAULT 0,
        deadline     double precision,
        message_id   text,
        actor        text NOT NULL,
        started_at   double precision NOT NULL,
        updated_at   double precision NOT NULL,
        closed_at    double precision
    );
    CREATE UNIQUE INDEX survey_sessions_open ON survey_sessions (contact_idx)
        WHERE state = 'open';
    CREATE INDEX survey_sessions_deadline ON survey_sessions (deadline) WHERE state = 'open';
    CREATE INDEX survey_sessions_survey ON survey_sessions (survey_id, version, state);
    CREATE TABLE survey_answers (
        seq         bigserial PRIMARY KEY,
        session_id  text NOT NULL,
        survey_id   text NOT NULL,
        version     integer NOT NULL,
        question    integer NOT NULL,
        valid       integer NOT NULL,
        value       text,
        reason      text,
        inbound_id  text NOT NULL,
        at          double precision NOT NULL
    );
    CREATE INDEX survey_answers_survey ON survey_answers (survey_id, version, question);
    CREATE INDEX survey_answers_session ON survey_answers (session_id);
    """,
    # 21 (issue 18, HL7): SQLite's `hl7_messages` as a twin (its migrations 15 and 23),
    #    so a message sent to any node's MLLP listener is stored, mapped and ACKed once
    #    for the site: the unique key is the dedupe of every node, and the inbound job
    #    runs under the clinical lock (`gateway/cluster/clinical_db.py`). The write-back
    #    queue came with migration 23.
    """
    CREATE TABLE hl7_messages (
        id               text PRIMARY KEY,
        interface        text NOT NULL,
        sending_app      text NOT NULL,
        sending_facility text NOT NULL,
        control_id       text NOT NULL,
        msg_type         text NOT NULL,
        event            text NOT NULL,
        version          text NOT NULL,
        msg_time         text NOT NULL,
        charset          text NOT NULL,
        charset_flag     text,
        raw_ct           bytea NOT NULL,
        state            text NOT NULL CHECK (state IN
                             ('mapped', 'ignored', 'quarantined', 'rejected')),
        error_code       integer,
        error_text       text,
        error_location   text,
        ack_code         text,
        ack              text NOT NULL,
        duplicates       integer NOT NULL DEFAULT 0,
        reprocessed      integer NOT NULL DEFAULT 0,
        received_at      double precision NOT NULL,
        updated_at       double precision NOT NULL,
        erased_at        double precision,
        UNIQUE (interface, sending_app, sending_facility, control_id)
    );
    CREATE INDEX hl7_messages_state ON hl7_messages (interface, state, received_at);
    CREATE INDEX hl7_messages_received ON hl7_messages (received_at DESC, id);
    CREATE INDEX hl7_messages_retention ON hl7_messages (received_at) WHERE erased_at IS NULL;
    """,
    # 22 (issue 18, results, medication, replies): their events, schedules and the
    #    appointment replies as twins (`schema_results.py`).
    RESULTS_AND_MEDICATION,
    # 23 (issue 18, HL7 write-back): SQLite's `hl7_outbound` as a twin (with its
    #    `erased_at`), filled by the shared replies in their own transaction; one node
    #    at a time sends each interface's rows (`gateway/hl7/lane.py`, lane leadership).
    """
    CREATE TABLE hl7_outbound (
        id              text PRIMARY KEY,
        interface       text NOT NULL,
        control_id      text NOT NULL,
        kind            text NOT NULL,
        ref             text,
        message_ct      bytea NOT NULL,
        state           text NOT NULL CHECK (state IN
                            ('pending', 'acked', 'parked', 'cancelled')),
        attempts        integer NOT NULL DEFAULT 0,
        next_attempt_at double precision,
        ack_code        text,
        last_error      text,
        created_at      double precision NOT NULL,
        updated_at      double precision NOT NULL,
        erased_at       double precision
    );
    CREATE INDEX hl7_outbound_due ON hl7_outbound (interface, next_attempt_at)
        WHERE state = 'pending';
    CREATE INDEX hl7_outbound_updated ON hl7_outbound (updated_at DESC);
    """,
    # 24 (issue 18, STOP 1234): SQLite's trigger of its migration 19 as a twin: a
    #    notice planned for an appointment whose opt-out (`appointment:<id>`) is in
    #    force, no opt-in of everything (START) newer, is cancelled as it is inserted,
    #    whoever plans it. Those pending when the opt-out commits are cancelled in its
    #    transaction (`gateway/cluster/appointment_optout.py`).
    """
    CREATE FUNCTION clinical_notices_appointment_optout() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF EXISTS (
            SELECT 1 FROM consent_state s WHERE s.contact_idx = NEW.contact_idx
            AND s.scope = 'appointment:' || NEW.appointment_id AND s.opted = 'out'
            AND s.seq > (SELECT coalesce(max(a.seq), 0) FROM consent_state a
                         WHERE a.contact_idx = NEW.contact_idx AND a.scope = 'all'
                         AND a.opted = 'in'))
        THEN
            NEW.state := 'cancelled';
            NEW.reason := 'opted_out';
        END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER clinical_notices_appointment_optout BEFORE INSERT ON clinical_notices
    FOR EACH ROW WHEN (NEW.appointment_id IS NOT NULL AND NEW.state = 'pending')
    EXECUTE FUNCTION clinical_notices_appointment_optout();
    """,
)

# Cluster migration 27 (issue 18, write-back handover), SQLite's 42 as a twin: an attempt
# marked before its bytes leave, the row flagged `possible_duplicate` when an attempt's
# fate is unknown (its leader died, or no ACK came).
WRITE_BACK_MARKS = """
ALTER TABLE hl7_outbound ADD COLUMN sending_at double precision;
ALTER TABLE hl7_outbound ADD COLUMN possible_duplicate integer NOT NULL DEFAULT 0;
"""
