"""Cluster migration 19, kept apart from
`schema.py` for its size: the analytics' sums on a cluster and adoption's index.

- `analytics_quarters` and `analytics_sums`: sums per UTC quarter hour and per local
  day, kept by `gateway/cluster/analytics.py`, each quarter recomputed from the shared
  tables when something was inserted for it, then its day summed again.
- `analytics_dirty`: statement triggers on `message_events`, `inbound`,
  `consent_ledger` and `link_clicks` append the span each statement inserted (one row
  a statement, never an update on the send path). What is already there is marked at
  once, so the first rounds count it.
- An index per source on its time column, holding only the rows it counts.
- `messages_held`: who holds the waiting rows, for adoption (`adoption.py`).
"""

ANALYTICS_AND_ADOPTION = """
CREATE TABLE analytics_sums (
    dim     text NOT NULL,
    day     text NOT NULL,
    key     text NOT NULL,
    metric  text NOT NULL,
    value   bigint NOT NULL,
    PRIMARY KEY (dim, day, key, metric)
);
CREATE INDEX analytics_sums_day ON analytics_sums (day);
CREATE TABLE analytics_quarters (
    q       bigint NOT NULL,  -- floor(epoch seconds / 900)
    dim     text NOT NULL,
    key     text NOT NULL,
    metric  text NOT NULL,
    value   bigint NOT NULL,
    PRIMARY KEY (q, dim, key, metric)
);
CREATE TABLE analytics_dirty (
    id  bigserial PRIMARY KEY,
    lo  double precision NOT NULL,
    hi  double precision NOT NULL
);
CREATE INDEX message_events_outcome_at ON message_events (at)
    WHERE state IN ('sent', 'delivered', 'failed', 'expired');
CREATE INDEX messages_blocked_at ON messages (updated_at) WHERE state = 'blocked';
CREATE INDEX consent_ledger_opt_out_at ON consent_ledger (at) WHERE decision = 'opt_out';
CREATE INDEX link_clicks_human_at ON link_clicks (at) WHERE human = 1;
-- Adoption (`gateway/cluster/adoption.py`): the holders of waiting rows by a skip
-- scan, then only the unheld rows and a dead holder's, never those live nodes hold.
CREATE INDEX messages_held ON messages (held_by, priority, due_at, id)
    WHERE state IN ('queued', 'scheduled');

CREATE FUNCTION analytics_mark_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO analytics_dirty (lo, hi)
        SELECT min(at), max(at) FROM new_rows
        WHERE state IN ('sent', 'delivered', 'failed', 'expired', 'blocked')
        HAVING count(*) > 0;
    RETURN NULL;
END $$;
CREATE FUNCTION analytics_mark() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO analytics_dirty (lo, hi)
        SELECT min(at), max(at) FROM new_rows HAVING count(*) > 0;
    RETURN NULL;
END $$;
CREATE FUNCTION analytics_mark_received() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO analytics_dirty (lo, hi)
        SELECT min(received_at), max(received_at) FROM new_rows HAVING count(*) > 0;
    RETURN NULL;
END $$;
-- Blocked messages come with an event row too (at accept and at claim).
CREATE TRIGGER message_events_analytics AFTER INSERT ON message_events
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION analytics_mark_events();
CREATE TRIGGER inbound_analytics AFTER INSERT ON inbound
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION analytics_mark_received();
-- A keyword's decision commits after its inbound (cluster/inbound.py): the quarter
-- before is counted again too, so a STOP just stored is not left counted as a reply.
CREATE FUNCTION analytics_mark_decision() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO analytics_dirty (lo, hi)
        SELECT min(at) - 900, max(at) FROM new_rows HAVING count(*) > 0;
    RETURN NULL;
END $$;
CREATE TRIGGER consent_ledger_analytics AFTER INSERT ON consent_ledger
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION analytics_mark_decision();
CREATE TRIGGER link_clicks_analytics AFTER INSERT ON link_clicks
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION analytics_mark();
INSERT INTO analytics_dirty (lo, hi)
    SELECT min(at), max(at) FROM message_events HAVING count(*) > 0
    UNION ALL SELECT min(received_at), max(received_at) FROM inbound HAVING count(*) > 0
    UNION ALL SELECT min(at), max(at) FROM consent_ledger HAVING count(*) > 0
    UNION ALL SELECT min(at), max(at) FROM link_clicks HAVING count(*) > 0;
"""
