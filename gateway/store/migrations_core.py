"""SQLite schema migrations 1 to 12: the queue, its events and receipts, audit, the
outbox, consent and contacts (`schema.MIGRATIONS` puts every part in order).
"""

from __future__ import annotations

CORE: tuple[str, ...] = (
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
)
