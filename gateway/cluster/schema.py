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

from gateway.cluster import seal_guard
from gateway.cluster.bucket_reserve import MIGRATION_30
from gateway.cluster.bucket_take import MIGRATION_28
from gateway.cluster.schema_features import FEATURE_MIGRATIONS, WRITE_BACK_MARKS

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
    # 15 to 24: the feature tables (`schema_features.py`).
    *FEATURE_MIGRATIONS,
    # 25 (issue 18, key retirement): the field key generation each incarnation seals
    #    under, reported a heartbeat after taking it up (`shared_keys.KeyringWatch`).
    "ALTER TABLE nodes ADD COLUMN key_generation integer;",
    # 26 (issue 18, key retirement): the retired field key generations, and a trigger on
    #    every encrypted table refusing a value sealed under one (`seal_guard.py`): a
    #    node cut off through a rotation and its retirement cannot store what no key opens.
    seal_guard.migration_26(),
    # 27 (issue 18, write-back handover): `schema_features.WRITE_BACK_MARKS`.
    WRITE_BACK_MARKS,
    # 28 (issue 18, S6 on a shared account): a carrier account's token take in one
    #    statement (`bucket_take.py`).
    MIGRATION_28,
    # 29 (issue 18, inbound in doubt): SQLite's migration 43 for every node. Each whole
    #    inbound message's mark, written with its row and cleared once its
    #    deliver_sm_resp is written; owned by the incarnation that delivered it last, so
    #    a delivery a node left unacknowledged (its COMMIT's answer lost, the node
    #    killed) is stored under the same id when the carrier delivers it again to any
    #    node (`gateway/cluster/inbound_marks.py`). The digest is keyed with the blind
    #    index key: no number or text.
    """
    CREATE TABLE inbound_doubt (
        digest      bytea NOT NULL,
        inbound_id  text NOT NULL,
        at          double precision NOT NULL,
        owner       bigint,
        failed      boolean NOT NULL DEFAULT false,
        PRIMARY KEY (digest, inbound_id)
    );
    """,
    # 30 (issue 18, S6 on a shared account): the critical reserve in an account's bucket
    #    and the take that keeps it (`bucket_reserve.py`).
    MIGRATION_30,
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
