"""The PostgreSQL schema of the shared queue, applied by versioned migrations.

Its own numbering, kept in `cluster_schema.version` (SQLite's `user_version` counts the
embedded store's). `migrate` applies what is missing in one transaction, under an
advisory lock so that nodes starting together apply it once.

Times a gateway's clock decides (`due_at`, `expires_at`, `created_at`, `updated_at`,
event `at`) are epoch seconds as in the SQLite store, so a migration copies them as they
are. Times that decide who may act (leases, rate buckets, `claimed_at`) are the
database's `timestamptz`, from its clock only: node clocks never meet.
"""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from gateway.cluster.schema_analytics import ANALYTICS_AND_ADOPTION
from gateway.cluster.schema_results import RESULTS_AND_MEDICATION

MIGRATION_LOCK = 0x736D7367_77000001  # pg_advisory_xact_lock key: "smsgw" + 1

MIGRATIONS: tuple[str, ...] = (
    # 1: nodes and their leases; messages with their claim (owner, incarnation, epoch);
    #    their events, carrier ids and the outcomes that lost their claim; bind slots;
    #    rate buckets.
    """
    CREATE TABLE nodes (
        incarnation    bigserial PRIMARY KEY,
        node_id        text NOT NULL,
        started_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
        renewed_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
        lease_until    timestamptz NOT NULL,
        recovered_at   timestamptz,
        recovered_by   bigint,
        recovered_rows integer
    );
    CREATE INDEX nodes_by_id ON nodes (node_id, incarnation);
    -- The recovery sweep's scan: incarnations whose rows nobody has taken back yet.
    CREATE INDEX nodes_unrecovered ON nodes (lease_until) WHERE recovered_at IS NULL;

    CREATE TABLE messages (
        id                 text PRIMARY KEY,
        priority           smallint NOT NULL,
        state              text NOT NULL,
        route_group        text NOT NULL,
        to_ct              bytea NOT NULL,
        to_index           bytea NOT NULL,
        body_ct            bytea NOT NULL,
        encoding           text NOT NULL,
        segments           integer NOT NULL,
        route              text,
        created_at         double precision NOT NULL,
        updated_at         double precision NOT NULL,
        due_at             double precision NOT NULL,
        expires_at         double precision NOT NULL,
        attempts           integer NOT NULL DEFAULT 0,
        possible_duplicate boolean NOT NULL DEFAULT false,
        error_code         text,
        owner_node         text,
        owner_incarnation  bigint,
        claim_epoch        bigint NOT NULL DEFAULT 0,
        claimed_at         timestamptz
    ) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0,
            autovacuum_vacuum_threshold = 1000);
    -- The claim's one index: its equality column, then its ORDER BY, only queued rows.
    CREATE INDEX messages_claim ON messages (route_group, priority, due_at, id)
        WHERE state = 'queued';
    -- Recovery: a dead incarnation's `sending` rows.
    CREATE INDEX messages_sending ON messages (owner_incarnation) WHERE state = 'sending';
    CREATE INDEX messages_to ON messages (to_index);

    CREATE TABLE message_events (
        seq         bigserial PRIMARY KEY,
        message_id  text NOT NULL,
        at          double precision NOT NULL,
        state       text NOT NULL,
        route       text,
        carrier_id  text,
        error_code  text,
        attempt     integer,
        node_id     text,
        incarnation bigint
    );
    CREATE INDEX message_events_message ON message_events (message_id, seq);

    CREATE TABLE carrier_ids (
        route       text NOT NULL,
        carrier_id  text NOT NULL,
        message_id  text NOT NULL,
        part        integer NOT NULL,
        state       text NOT NULL DEFAULT 'sent',
        error_code  text,
        PRIMARY KEY (route, carrier_id)
    );
    CREATE INDEX carrier_ids_message ON carrier_ids (message_id);

    -- A finish whose claim was lost (recovered, claimed again): kept, never applied.
    -- The carrier ids stay, so a receipt for that submit can still be matched.
    CREATE TABLE late_outcomes (
        seq          bigserial PRIMARY KEY,
        message_id   text NOT NULL,
        node_id      text NOT NULL,
        incarnation  bigint NOT NULL,
        claim_epoch  bigint NOT NULL,
        state        text NOT NULL,
        route        text,
        carrier_ids  text[] NOT NULL DEFAULT '{}',
        error_code   text,
        at           timestamptz NOT NULL DEFAULT clock_timestamp()
    );
    CREATE INDEX late_outcomes_message ON late_outcomes (message_id);

    -- Bind slots: at most `max_binds` sessions per SMPP route across the nodes. A slot
    -- is free when nobody holds it or its holder's lease ended `grace` seconds ago (the
    -- carrier may keep a dead node's session until its own timer fires).
    CREATE TABLE route_slots (
        route        text NOT NULL,
        slot         integer NOT NULL,
        incarnation  bigint,
        node_id      text,
        grace        double precision NOT NULL DEFAULT 0,
        taken_at     timestamptz,
        PRIMARY KEY (route, slot)
    );

    -- One carrier account's rate across every node: `rate` tokens a second, at most
    -- `burst` saved, refilled on the database clock when a claim locks the row.
    CREATE TABLE rate_accounts (
        account  text PRIMARY KEY,
        rate     double precision NOT NULL CHECK (rate > 0),
        burst    double precision NOT NULL CHECK (burst >= 1),
        tokens   double precision NOT NULL,
        stamp    timestamptz NOT NULL DEFAULT clock_timestamp()
    );
    -- Each node's fair share of an account: a sub-bucket at rate / (nodes wanting more).
    CREATE TABLE rate_shares (
        account      text NOT NULL REFERENCES rate_accounts ON DELETE CASCADE,
        incarnation  bigint NOT NULL,
        tokens       double precision NOT NULL,
        stamp        timestamptz NOT NULL,
        starved_at   timestamptz,
        PRIMARY KEY (account, incarnation)
    );
    """,
    # ---
    # 2 (issue 18): what the send path's store interface (`queue_store.py`) keeps on
    #    this backend as the SQLite store does: the accept's other columns, answers kept
    #    under an Idempotency-Key (shared: a retry may reach another node), receipts that
    #    overtook their submit's answer, the shared opt-out list every node's claim checks
    #    (one committed on node A blocks the next claim on node B), parked routes.
    """
    ALTER TABLE messages
        ADD COLUMN token_id text,
        ADD COLUMN reference_ct bytea,
        ADD COLUMN callback_ct bytea,
        ADD COLUMN route_hint text,
        ADD COLUMN category text,
        ADD COLUMN purpose text,
        ADD COLUMN send_at double precision,
        ADD COLUMN quiet_override boolean NOT NULL DEFAULT false,
        ADD COLUMN held_for text,
        ADD COLUMN receipt_overdue smallint NOT NULL DEFAULT 0;
    -- A node's start-up walk of the live queue, and the expiry sweep.
    CREATE INDEX messages_live ON messages (state, id) WHERE state IN ('queued', 'scheduled');
    CREATE INDEX messages_expiry ON messages (expires_at)
        WHERE state IN ('queued', 'scheduled');
    -- The receipt deadline's sweep: `sent` rows still waiting, oldest first.
    CREATE INDEX messages_awaiting_receipt ON messages (updated_at)
        WHERE state = 'sent' AND receipt_overdue = 0;

    CREATE TABLE idempotency (
        token_id     text NOT NULL,
        key_hash     bytea NOT NULL,
        request_hash bytea NOT NULL,
        status       integer NOT NULL,
        response     bytea NOT NULL,
        created_at   double precision NOT NULL,
        PRIMARY KEY (token_id, key_hash)
    );
    CREATE TABLE early_receipts (
        route       text NOT NULL,
        carrier_id  text NOT NULL,
        state       text NOT NULL,
        error_code  text,
        at          double precision NOT NULL,
        PRIMARY KEY (route, carrier_id)
    );
    -- A recipient's opt-out by blind index (never the number): `scope` is a purpose
    -- or 'all'; the claim blocks a queued message whose recipient has one.
    CREATE TABLE opt_outs (
        contact_idx bytea NOT NULL,
        scope       text NOT NULL,
        since       double precision NOT NULL,
        source      text NOT NULL,
        PRIMARY KEY (contact_idx, scope)
    );
    CREATE TABLE route_parks (
        route           text PRIMARY KEY,
        code            text NOT NULL,
        credentials_mac bytea NOT NULL,
        at              double precision NOT NULL
    );
    """,
    # ---
    # 3 (issue 18): what `smsgw store migrate` copies from SQLite and the nodes then
    #    share. The SQLite message columns the queue's first schema left out (IF NOT
    #    EXISTS: slot 2 may add some first); the keyring (data keys wrapped as in
    #    SQLite, `gateway/cluster/keyring.py`); the audit trail as one hash chain per
    #    node plus anchors recording every chain's head (`gateway/cluster/audit.py`),
    #    append-only as in SQLite; SQLite's consent decisions copied as they were, to
    #    be merged into the shared opt-out table; and each migration's own record.
    #    IF NOT EXISTS throughout: slot 2 may create a twin of SQLite's keyring first.
    """
    ALTER TABLE messages
        ADD COLUMN IF NOT EXISTS token_id text,
        ADD COLUMN IF NOT EXISTS reference_ct bytea,
        ADD COLUMN IF NOT EXISTS callback_ct bytea,
        ADD COLUMN IF NOT EXISTS route_hint text,
        ADD COLUMN IF NOT EXISTS category text,
        ADD COLUMN IF NOT EXISTS send_at double precision,
        ADD COLUMN IF NOT EXISTS receipt_overdue boolean NOT NULL DEFAULT false,
        ADD COLUMN IF NOT EXISTS purpose text,
        ADD COLUMN IF NOT EXISTS quiet_override boolean NOT NULL DEFAULT false,
        ADD COLUMN IF NOT EXISTS held_for text,
        ADD COLUMN IF NOT EXISTS redacted boolean NOT NULL DEFAULT false,
        ADD COLUMN IF NOT EXISTS campaign_id text,
        ADD COLUMN IF NOT EXISTS variant text,
        ADD COLUMN IF NOT EXISTS uncounted boolean NOT NULL DEFAULT false;

    CREATE TABLE IF NOT EXISTS keyring (
        purpose     text NOT NULL,
        generation  integer NOT NULL,
        wrapped     bytea NOT NULL,
        created_at  double precision NOT NULL,
        PRIMARY KEY (purpose, generation)
    );

    CREATE TABLE IF NOT EXISTS audit_log (
        node_id      text NOT NULL,
        seq          bigint NOT NULL,
        at           double precision NOT NULL,
        actor        text NOT NULL,
        action       text NOT NULL,
        target_kind  text,
        target_id    text,
        detail       text NOT NULL,
        prev_hash    text NOT NULL,
        hash         text NOT NULL,
        PRIMARY KEY (node_id, seq)
    );
    CREATE TABLE IF NOT EXISTS audit_anchors (
        seq        bigint PRIMARY KEY,
        at         double precision NOT NULL,
        node_id    text NOT NULL,
        heads      text NOT NULL,
        prev_hash  text NOT NULL,
        hash       text NOT NULL
    );
    CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$;
    DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log;
    CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
        FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
    DROP TRIGGER IF EXISTS audit_anchors_append_only ON audit_anchors;
    CREATE TRIGGER audit_anchors_append_only BEFORE UPDATE OR DELETE OR TRUNCATE
        ON audit_anchors FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

    CREATE TABLE IF NOT EXISTS migrated_consent_state (
        contact_idx  bytea NOT NULL,
        program      text NOT NULL,
        scope        text NOT NULL,
        opted        text NOT NULL CHECK (opted IN ('in', 'out')),
        seq          bigint NOT NULL,
        since        double precision NOT NULL,
        source       text NOT NULL,
        written_seq  bigint,
        PRIMARY KEY (contact_idx, program, scope)
    );

    CREATE TABLE IF NOT EXISTS store_migrations (
        id           bigserial PRIMARY KEY,
        source       text NOT NULL,
        node_id      text NOT NULL,
        started_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
        finished_at  timestamptz
    );
    """,
    # ---
    # 4 (issue 18, routes): routes across nodes. `rate_accounts.contract` is the configured
    #    rate: a restarting node resets it, while `rate` is what throttle adaptation
    #    (ESME_RTHROTTLED) left, shared by every node and never above the contract
    #    (`cut_at`, `probed_at`: one cut per overload and one probe a second, whichever
    #    node sees it).
    #    `node_routes`: each live incarnation's routes and their health (which node has
    #    which modem bank and bound SMPP sessions), for the panel and the cluster status.
    """
    ALTER TABLE rate_accounts ADD COLUMN contract double precision,
        ADD COLUMN cut_at timestamptz, ADD COLUMN probed_at timestamptz;
    UPDATE rate_accounts SET contract = rate;
    ALTER TABLE rate_accounts ALTER COLUMN contract SET NOT NULL;

    CREATE TABLE node_routes (
        incarnation  bigint NOT NULL,
        route        text NOT NULL,
        node_id      text NOT NULL,
        kind         text NOT NULL,
        state        text NOT NULL,
        detail       text NOT NULL DEFAULT '',
        updated_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (incarnation, route)
    );
    """,
    # ---
    # 5 (issue 18, consent): one consent list for every node. SQLite's consent tables as
    #    twins: contacts by blind index (number encrypted), the ledger append-only (a
    #    trigger refuses any change but its encrypted texts', which erasure and key
    #    rotation rewrite), `consent_state` kept in the appending transaction; and
    #    which migrated decisions were merged into it (`cluster/consent_store.py`).
    """
    CREATE TABLE contacts (
        idx            bytea PRIMARY KEY,
        number_ct      bytea NOT NULL,
        patient_ref_ct bytea,
        language       text,
        time_zone      text,
        created_at     double precision NOT NULL,
        updated_at     double precision NOT NULL
    );
    CREATE TABLE consent_ledger (
        seq            bigserial PRIMARY KEY,
        id             text NOT NULL UNIQUE,
        contact_idx    bytea NOT NULL,
        at             double precision NOT NULL,
        decision       text NOT NULL CHECK (decision IN ('opt_in', 'opt_out')),
        scope          text NOT NULL,
        program        text NOT NULL,
        source         text NOT NULL,
        inbound_id     text,
        message_id     text,
        actor          text,
        disclosure_ct  bytea,
        note_ct        bytea,
        node_id        text
    );
    CREATE INDEX consent_ledger_contact ON consent_ledger (contact_idx, seq);
    CREATE OR REPLACE FUNCTION consent_ledger_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' AND (NEW.seq, NEW.id, NEW.contact_idx, NEW.at, NEW.decision,
                NEW.scope, NEW.program, NEW.source, NEW.inbound_id, NEW.message_id,
                NEW.actor, NEW.node_id)
            IS NOT DISTINCT FROM (OLD.seq, OLD.id, OLD.contact_idx, OLD.at, OLD.decision,
                OLD.scope, OLD.program, OLD.source, OLD.inbound_id, OLD.message_id,
                OLD.actor, OLD.node_id) THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'consent_ledger is append-only';
    END $$;
    CREATE TRIGGER consent_ledger_append_only BEFORE UPDATE OR DELETE ON consent_ledger
        FOR EACH ROW EXECUTE FUNCTION consent_ledger_append_only();
    CREATE TRIGGER consent_ledger_no_truncate BEFORE TRUNCATE ON consent_ledger
        FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
    CREATE TABLE consent_state (
        contact_idx    bytea NOT NULL,
        program        text NOT NULL,
        scope          text NOT NULL,
        opted          text NOT NULL CHECK (opted IN ('in', 'out')),
        seq            bigint NOT NULL,
        since          double precision NOT NULL,
        source         text NOT NULL,
        written_seq    bigint,
        PRIMARY KEY (contact_idx, program, scope)
    );
    ALTER TABLE migrated_consent_state ADD COLUMN merged_at timestamptz;
    """,
    # ---
    # 6 (issue 18, reads): the message list, `/queue` and the panel read the shared queue
    #    (`gateway/cluster/reads.py`): an index per filter of the list, newest first, so
    #    a page reads about a page of rows (the waiting counts use `messages_expiry`);
    #    API tokens shared by every node (one made on node A works on node B).
    """
    CREATE INDEX messages_list_state ON messages (state, id);
    CREATE INDEX messages_list_created ON messages (created_at, id);
    CREATE INDEX messages_list_owner ON messages (token_id, id);
    CREATE INDEX messages_list_route ON messages (route, id) WHERE route IS NOT NULL;
    CREATE INDEX messages_list_overdue ON messages (id) WHERE receipt_overdue = 1;
    CREATE INDEX messages_list_number ON messages (to_index, id);
    CREATE INDEX messages_list_duplicates ON messages (state) WHERE possible_duplicate;
    -- API tokens shared by every node (`gateway/cluster/tokens.py`), as SQLite's.
    CREATE TABLE api_tokens (
        id          text PRIMARY KEY,
        name        text NOT NULL,
        secret_hash bytea NOT NULL,
        scopes      text NOT NULL,
        created_at  double precision NOT NULL,
        revoked_at  double precision
    );
    """,
    # 7 (issue 12 MSG-4 on a cluster): the review queue of free-text revocations and
    #    look-alikes, as SQLite's `consent_review`, shared so that any node lists and
    #    resolves what any node received. The inbound stays in its node's SQLite store:
    #    its text is kept here, encrypted (row id and column bound as everywhere), for
    #    the reviewer on another node. One review per inbound message.
    """
    CREATE TABLE consent_reviews (
        id             text PRIMARY KEY,
        inbound_id     text NOT NULL UNIQUE,
        contact_idx    bytea NOT NULL,
        program        text NOT NULL,
        reason         text NOT NULL,
        created_at     double precision NOT NULL,
        body_ct        bytea,
        node_id        text NOT NULL,
        resolved_at    double precision,
        resolution     text,
        actor          text
    );
    CREATE INDEX consent_reviews_open ON consent_reviews (created_at, id)
        WHERE resolved_at IS NULL;
    """,
    # 8 (issue 18, panel users): the panel's users, sessions, sign-in failure counts and
    #    role policies shared by every node (`gateway/cluster/panel.py`), as SQLite's
    #    tables; `panel_copied_up` names the nodes whose own users were copied up.
    """
    CREATE TABLE panel_users (
        id                  text PRIMARY KEY,
        username            text NOT NULL,
        role                text NOT NULL,
        password_hash       text NOT NULL,
        password_changed_at double precision NOT NULL,
        totp_secret_ct      bytea,
        totp_enabled        boolean NOT NULL DEFAULT false,
        totp_last_step      bigint NOT NULL DEFAULT 0,
        created_at          double precision NOT NULL,
        disabled_at         double precision,
        directory_id        text,
        role_checked_at     double precision
    );
    -- SQLite's `COLLATE NOCASE`: one account per name whatever its case.
    CREATE UNIQUE INDEX panel_users_name ON panel_users (lower(username));
    CREATE UNIQUE INDEX panel_users_directory_id ON panel_users (directory_id)
        WHERE directory_id IS NOT NULL;
    CREATE TABLE panel_sessions (
        id_hash     bytea PRIMARY KEY,
        user_id     text NOT NULL REFERENCES panel_users (id) ON DELETE CASCADE,
        stage       text NOT NULL,
        csrf_token  text NOT NULL,
        created_at  double precision NOT NULL,
        last_seen   double precision NOT NULL
    );
    CREATE INDEX panel_sessions_user ON panel_sessions (user_id);
    CREATE TABLE panel_login_failures (
        key           text PRIMARY KEY,
        failures      integer NOT NULL,
        last_failure  double precision NOT NULL,
        locked_until  double precision
    );
    CREATE TABLE panel_role_policies (
        role           text PRIMARY KEY,
        totp_required  boolean NOT NULL
    );
    CREATE TABLE panel_copied_up (
        node_id  text PRIMARY KEY,
        at       double precision NOT NULL
    );
    """,
    # 9 (issue 18 pt 5, the panel's audit page on a cluster): every node's entries
    #    newest first across nodes (`gateway/cluster/audit_reads.py`), a page at a time.
    """
    CREATE INDEX audit_log_time ON audit_log (at, node_id, seq);
    """,
    # 10 (issue 18, inbound): inbound messages shared by every node
    #    (`gateway/cluster/inbound.py`), as SQLite's `inbound`, `inbound_parts` and
    #    `inbound_sets_done`: numbers and texts under the shared keyring (AAD: row id
    #    and column), the sender's blind index, the parts of a concatenated message
    #    held here so parts landing on different nodes or binds join, and the digests
    #    that make a redelivered part a no-op on any node. `seq` is the polling cursor,
    #    the next after the highest, taken under an advisory lock the inserting
    #    transaction holds to its commit: seqs commit in order, so nothing lands behind
    #    a cursor. `redacted` as SQLite's (0, 1 text removed, 2 number too).
    """
    CREATE TABLE inbound (
        id            text PRIMARY KEY,
        seq           bigint NOT NULL UNIQUE,
        route         text NOT NULL,
        sender_ct     bytea NOT NULL,
        sender_index  bytea NOT NULL,
        recipient_ct  bytea,
        body_ct       bytea NOT NULL,
        carrier_id    text,
        received_at   double precision NOT NULL,
        incomplete    boolean NOT NULL DEFAULT false,
        redacted      smallint NOT NULL DEFAULT 0,
        node_id       text NOT NULL
    );
    CREATE INDEX inbound_sender ON inbound (sender_index);
    CREATE INDEX inbound_received ON inbound (received_at);
    CREATE TABLE inbound_parts (
        id            text PRIMARY KEY,
        route         text NOT NULL,
        set_key       bytea NOT NULL,
        seq           integer NOT NULL,
        total         integer NOT NULL,
        sender_ct     bytea NOT NULL,
        recipient_ct  bytea,
        body_ct       bytea NOT NULL,
        carrier_id    text,
        received_at   double precision NOT NULL,
        node_id       text NOT NULL,
        UNIQUE (set_key, seq)
    );
    CREATE INDEX inbound_parts_received ON inbound_parts (received_at);
    CREATE TABLE inbound_sets_done (
        set_key  bytea NOT NULL,
        seq      integer NOT NULL,
        digest   bytea NOT NULL,
        done_at  double precision NOT NULL,
        PRIMARY KEY (set_key, seq)
    );
    CREATE INDEX inbound_sets_done_at ON inbound_sets_done (done_at);
    """,
    # 11 (issue 18 pt 2/4): `held_by`, the incarnation whose scheduler holds a queued or
    #    scheduled row (set at accept and adoption; NULL: nobody's, e.g. requeued by
    #    recovery or migrated), so survivors adopt only rows no live node holds, each
    #    row once (`adoption.py`). A share's reported demand (tokens a second; NULL:
    #    more than it gets), the seconds between its last two claims and its share's
    #    refill rate (`buckets.py`).
    """
    ALTER TABLE messages ADD COLUMN held_by bigint;
    ALTER TABLE rate_shares ADD COLUMN demand double precision,
        ADD COLUMN gap double precision, ADD COLUMN share double precision;
    """,
    # 12 (issue 18, the outbox): events for webhooks and MQTT, as SQLite's migration 9
    #    (`gateway/cluster/outbox_store.py` explains the order). A row gets its
    #    consumer-visible `seq` only once published: in (xid, ins) order, and only when
    #    its transaction and every older one has ended, so `seq` is commit-safe and
    #    gap-free for readers. Status rows come from a trigger on `message_events`
    #    (every writer of an event, in its transaction), less a plain accept's
    #    `queued`/`scheduled` creation (SQLite implies it by the row) and the
    #    receipt-overdue marks (not a state); only of the types and states some node's
    #    consumers take (`outbox_wants`, one row per node, replaced at its start).
    #    `smsgw.outbox = off` in a session (the migration's copy) writes none.
    """
    CREATE TABLE outbox (
        ins         bigserial PRIMARY KEY,
        xid         xid8 NOT NULL DEFAULT pg_current_xact_id(),
        seq         bigint UNIQUE,
        id          text NOT NULL
                    DEFAULT ('evt_' || left(replace(gen_random_uuid()::text, '-', ''), 24)),
        type        text NOT NULL,
        at          double precision NOT NULL,
        message_id  text,
        route       text,
        state       text,
        code        text,
        attempt     integer
    );
    CREATE INDEX outbox_unpublished ON outbox (xid, ins) WHERE seq IS NULL;
    CREATE TABLE outbox_published (last bigint NOT NULL);
    INSERT INTO outbox_published VALUES (0);
    CREATE TABLE outbox_wants (
        node_id  text PRIMARY KEY,
        types    text[] NOT NULL,
        states   text[]
    );
    CREATE TABLE outbox_consumers (
        name      text PRIMARY KEY,
        position  bigint NOT NULL,
        seen_at   double precision NOT NULL
    );
    CREATE TABLE outbox_deliveries (
        consumer  text NOT NULL,
        seq       bigint NOT NULL,
        state     text NOT NULL,
        attempts  integer NOT NULL,
        first_at  double precision NOT NULL,
        last_at   double precision NOT NULL,
        next_at   double precision,
        reason    text,
        PRIMARY KEY (consumer, seq)
    );
    CREATE INDEX outbox_deliveries_recent ON outbox_deliveries (last_at);
    CREATE INDEX outbox_deliveries_open ON outbox_deliveries (consumer, state)
        WHERE state <> 'delivered';

    CREATE FUNCTION outbox_status() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.state = 'receipt_overdue'
            OR current_setting('smsgw.outbox', true) = 'off'
            OR NOT EXISTS (SELECT 1 FROM outbox_wants w
                           WHERE 'message.status' = ANY (w.types)
                             AND (w.states IS NULL OR NEW.state = ANY (w.states))) THEN
            RETURN NULL;
        END IF;
        IF NEW.attempt = 0 AND NEW.error_code IS NULL AND NEW.route IS NULL
            AND NEW.state IN ('queued', 'scheduled')
            AND EXISTS (SELECT 1 FROM messages m
                        WHERE m.id = NEW.message_id AND m.created_at = NEW.at) THEN
            RETURN NULL;  -- a plain accept: its creation is implied, as on SQLite
        END IF;
        INSERT INTO outbox (type, at, message_id, route, state, code, attempt)
        VALUES ('message.status', NEW.at, NEW.message_id, NEW.route, NEW.state,
                NEW.error_code, NEW.attempt);
        RETURN NULL;
    END $$;
    CREATE TRIGGER message_events_outbox AFTER INSERT ON message_events
        FOR EACH ROW EXECUTE FUNCTION outbox_status();
    """,
    # 13 (issue 18 pt 5, retention on a cluster): `[retention]` sweeps the shared tables
    #    (`gateway/cluster/retention.py`). `messages.redacted` takes SQLite's levels
    #    (0; 1 text removed; 2 number too) instead of a flag, so a text removed at
    #    `body_days` still has its number removed later, and `smsgw store migrate`
    #    copies SQLite's levels as they are; a flagged row is 2 if its index is empty
    #    (erased), else 1. This rewrites `messages` once (an exclusive lock for the time
    #    it takes: time in proportion to the table's size). One partial index per step,
    #    by creation time, holds only the rows still due for it, as SQLite's: a sweep
    #    reads what is due, not years of redacted rows. Review texts still kept, likewise.
    """
    ALTER TABLE messages ALTER COLUMN redacted DROP DEFAULT,
        ALTER COLUMN redacted TYPE smallint USING (CASE
            WHEN NOT redacted THEN 0 WHEN to_index = '\\x'::bytea THEN 2 ELSE 1 END),
        ALTER COLUMN redacted SET DEFAULT 0;
    CREATE INDEX messages_text_kept ON messages (created_at) WHERE redacted = 0;
    CREATE INDEX messages_number_kept ON messages (created_at) WHERE redacted = 1;
    CREATE INDEX inbound_text_kept ON inbound (received_at) WHERE redacted = 0;
    CREATE INDEX inbound_number_kept ON inbound (received_at) WHERE redacted = 1;
    CREATE INDEX consent_reviews_text_kept ON consent_reviews (created_at)
        WHERE body_ct IS NOT NULL;
    """,
    # 14 (issue 18, tracked links): SQLite's migrations 24 and 28 for every node. Named
    #    links (the destination in clear, as SQLite keeps it: a shared page from
    #    links.allow, never a person's data); each message's tokens as SHA-256, written
    #    in its accept's transaction; the clicks, one row each, `human` 1 for a person,
    #    with the node that answered the redirect.
    """
    CREATE TABLE links (
        id          text PRIMARY KEY,
        name        text NOT NULL UNIQUE,
        destination text NOT NULL,
        expires_at  double precision,
        created_at  double precision NOT NULL,
        created_by  text NOT NULL
    );
    CREATE TABLE link_tokens (
        token_hash  bytea PRIMARY KEY,
        link_id     text NOT NULL,
        message_id  text NOT NULL,
        created_at  double precision NOT NULL,
        expires_at  double precision NOT NULL
    );
    CREATE INDEX link_tokens_message ON link_tokens (message_id);
    CREATE INDEX link_tokens_expiry ON link_tokens (expires_at);
    CREATE TABLE link_clicks (
        seq         bigserial PRIMARY KEY,
        link_id     text NOT NULL,
        message_id  text,
        at          double precision NOT NULL,
        human       smallint NOT NULL,
        agent_class text NOT NULL,
        node_id     text
    );
    CREATE INDEX link_clicks_link ON link_clicks (link_id, human);
    CREATE INDEX link_clicks_message ON link_clicks (message_id);
    """,
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
)


async def migrate(conn: AsyncConnection[TupleRow]) -> int:
    """Apply every missing migration; returns the schema version now."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        await conn.execute("CREATE TABLE IF NOT EXISTS cluster_schema (version integer NOT NULL)")
        cur = await conn.execute("SELECT version FROM cluster_schema")
        row = await cur.fetchone()
        version = int(row[0]) if row else 0
        if row is None:
            await conn.execute("INSERT INTO cluster_schema VALUES (0)")
        for number, sql in enumerate(MIGRATIONS[version:], start=version + 1):
            async with conn.transaction():  # a savepoint: a failing one names its number
                try:
                    await conn.execute(sql.encode())
                except Exception as e:
                    raise RuntimeError(f"cluster schema migration {number} failed") from e
            await conn.execute("UPDATE cluster_schema SET version = %s", (number,))
        return len(MIGRATIONS)
