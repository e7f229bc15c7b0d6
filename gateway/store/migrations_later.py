"""SQLite schema migrations 30 on: growth, the write budget, directory sign-in, consent's
epoch, the cluster's outcome journal, the write-back's attempt marks
(`schema.MIGRATIONS` puts them in order; a new migration goes at the end here).
"""

from __future__ import annotations

LATER: tuple[str, ...] = (
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
    # ---
    # 43 (issue 18, inbound in doubt): each whole inbound message's mark, written with
    #    its row and cleared once its deliver_sm_resp is written, so a delivery left
    #    unacknowledged (the answer to COMMIT lost, the gateway killed before answering)
    #    is stored under the same id when the carrier delivers it again, after a
    #    restart too (`gateway/inbound_doubt.py`). The digest is keyed with the blind
    #    index key; no number or text. Few rows: marks are cleared within a second.
    """
    CREATE TABLE inbound_doubt (
        digest      BLOB NOT NULL,
        inbound_id  TEXT NOT NULL,
        at          REAL NOT NULL,
        owner       TEXT NOT NULL,
        failed      INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (digest, inbound_id)
    ) WITHOUT ROWID;
    """,
    # ---
    # 44 (issue 16, the writer's SQL per message): a transition's UPDATE appends its
    #    event's seq to `event_seqs` itself (`gateway/store/event_seqs.py` numbers the
    #    group's events first) and marks the event `on_row`; the trigger appends only
    #    the seqs of unmarked events (every other writer's, unchanged for them). Its
    #    UPDATE rewrote the message row a second time for each event: about 4 µs of the
    #    writer's SQL per event, two events a message (bench/README.md, "fourth pass").
    #    Adding a column with no default rewrites no row; a marked row is one header
    #    byte (the integer 1 takes no bytes of its own), as an unmarked one is.
    """
    ALTER TABLE message_events ADD COLUMN on_row INTEGER;
    DROP TRIGGER message_events_on_message;
    CREATE TRIGGER message_events_on_message AFTER INSERT ON message_events
        WHEN NEW.on_row IS NULL
    BEGIN
        UPDATE messages SET event_seqs = json_insert(event_seqs, '$[#]', NEW.seq)
        WHERE id = NEW.message_id;
    END;
    """,
)
