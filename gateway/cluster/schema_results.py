"""Cluster migration 22 (issue 18, results, medication and replies), kept apart from
`schema.py`: SQLite's migrations 18 and 19 as twins, so the results-available events,
the medication schedules with their dose notices and the appointment replies are every
node's (`gateway/cluster/clinical_db.py` runs SQLite's own jobs on them).

- `clinical_events`: one per order (a keyed index, no PHI) and status, so a repeated
  final result notifies once whichever node it reaches.
- `medication_schedules`: the drug's label encrypted (`label_ct`, AAD `label`, in
  `keyring.SEALED`), how far ahead its doses are planned (`planned_until`).
- `clinical_notices_one_dose`: at most one live dose notice per schedule and time, the
  backstop behind the top-up's serial job.
- `appointment_replies`: every reply matched (or not) on any node, the open ones the
  worklist of every node; its insert marks its quarter for the analytics' recount
  (`analytics_mark_reply`). SQLite's trigger cancelling the notices of an
  appointment-scoped opt-out is not here: the shared runner skips them when due
  (`notice_runner.py`).
"""

RESULTS_AND_MEDICATION = """
CREATE TABLE clinical_events (
    id           text PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('result_available', 'medication_ready')),
    source       text NOT NULL,
    order_ref    text NOT NULL,
    status       text NOT NULL,
    patient_id   text,
    contact_idx  bytea,
    notice_id    text,
    outcome      text NOT NULL CHECK (outcome IN ('notice', 'joined', 'no_contact')),
    message_ref  text,
    withdrawn_at double precision,
    created_at   double precision NOT NULL,
    UNIQUE (kind, source, order_ref, status)
);
CREATE INDEX clinical_events_patient ON clinical_events (patient_id, created_at);
CREATE INDEX clinical_events_notice ON clinical_events (notice_id);
CREATE TABLE medication_schedules (
    id            text PRIMARY KEY,
    source        text NOT NULL,
    ext_index     bytea,
    patient_id    text,
    contact_idx   bytea NOT NULL,
    times         text NOT NULL,
    time_zone     text NOT NULL,
    start_date    text NOT NULL,
    end_date      text,
    label_ct      bytea,
    language      text,
    state         text NOT NULL CHECK (state IN ('active', 'stopped', 'ended')),
    version       integer NOT NULL DEFAULT 1,
    planned_until double precision NOT NULL,
    stopped_at    double precision,
    stop_reason   text,
    created_by    text NOT NULL,
    created_at    double precision NOT NULL,
    updated_at    double precision NOT NULL,
    UNIQUE (source, ext_index)
);
CREATE INDEX medication_schedules_active ON medication_schedules (planned_until)
    WHERE state = 'active';
CREATE TABLE appointment_replies (
    id             text PRIMARY KEY,
    inbound_id     text NOT NULL UNIQUE,
    contact_idx    bytea NOT NULL,
    appointment_id text,
    intent         text NOT NULL,
    by_code        integer NOT NULL DEFAULT 0,
    outcome        text NOT NULL,
    writeback_id   text,
    state          text NOT NULL CHECK (state IN ('done', 'open', 'resolved')),
    created_at     double precision NOT NULL,
    resolved_at    double precision,
    resolved_by    text,
    resolution     text
);
CREATE INDEX appointment_replies_state ON appointment_replies (state, created_at);
CREATE INDEX appointment_replies_appointment ON appointment_replies (appointment_id);
-- A reply is filed after its inbound (cluster/replies.py): its quarter is counted again,
-- so the reply is classified (confirm, cancel) by the analytics (cluster/analytics.py).
CREATE FUNCTION analytics_mark_reply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO analytics_dirty (lo, hi)
        SELECT min(created_at), max(created_at) FROM new_rows HAVING count(*) > 0;
    RETURN NULL;
END $$;
CREATE TRIGGER appointment_replies_analytics AFTER INSERT ON appointment_replies
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION analytics_mark_reply();
-- Whether the shared survey step (cluster migration 20) took a text before the replies
-- look at it (cluster/replies.py).
CREATE INDEX survey_answers_inbound ON survey_answers (inbound_id);
CREATE INDEX survey_sessions_contact ON survey_sessions (contact_idx, updated_at);
CREATE UNIQUE INDEX clinical_notices_one_dose ON clinical_notices (ref, due_at)
    WHERE kind = 'medication_dose' AND state IN ('pending', 'queued');
"""
