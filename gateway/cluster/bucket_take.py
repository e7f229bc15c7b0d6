"""Cluster schema migration 28: `rate_take`, a carrier account's token take in one call.

Why a server-side function (S6 on a shared account): every node's takes queue behind
the account's row lock, and a take of several statements held it across each of its
round trips, so across its node's event loop at every step: under load the queue grew
to seconds. `rate_take` runs the whole take (lock, refill, fair share, take) in one
statement; sent on its own (autocommit), the lock lasts that statement and its commit.
`buckets.reserve` calls it and says what it does; `buckets.fair_share` is the share's
reference in Python (the loop below is the same). `p_async`: the commit does not wait
for the flush (only for a take in a transaction of its own: `buckets.take`).

A critical message's lane: a take for messages (`p_ids`) one of which is critical (or
`p_critical`: an accept's, before its rows are written) may go past this node's share
(then in debt: fairness is settled by the share's later refills; the account's row is
the cap, and it never goes below zero).
"""

from __future__ import annotations

MIGRATION_28 = """
CREATE FUNCTION rate_take(
    p_account text, p_inc bigint, p_want integer, p_window double precision,
    p_nowait boolean, p_async boolean, p_ids text[], p_critical boolean
) RETURNS TABLE (
    o_n integer, o_stamp timestamptz, o_tokens double precision, o_share double precision,
    o_rate double precision, o_burst double precision, o_nodes integer,
    o_share_rate double precision
) LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz;
    v_tokens double precision;
    v_rate double precision;
    v_burst double precision;
    v_others double precision[];
    v_rest double precision;
    v_wanting integer;
    v_demand double precision;
    v_share_rate double precision;
    v_share double precision;
    v_n integer;
    v_critical boolean;
BEGIN
    IF p_async THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    -- Lock first, then read the clock: a clock read before waiting for the lock would
    -- stamp this take earlier than the one it waited for, and refill twice over.
    IF p_nowait THEN
        PERFORM 1 FROM rate_accounts a WHERE a.account = p_account FOR UPDATE NOWAIT;
    ELSE
        PERFORM 1 FROM rate_accounts a WHERE a.account = p_account FOR UPDATE;
    END IF;
    v_now := clock_timestamp();
    UPDATE rate_accounts a SET tokens = least(a.burst, a.tokens + a.rate
        * greatest(0, extract(epoch FROM v_now - a.stamp))), stamp = v_now
    WHERE a.account = p_account
    RETURNING a.tokens, a.rate, a.burst INTO v_tokens, v_rate, v_burst;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- The reported demands of the other live nodes that took within the window (NULL:
    -- more than they get), smallest first for max-min.
    v_others := ARRAY(
        SELECT coalesce(s.demand, 'Infinity') FROM rate_shares s JOIN nodes d USING (incarnation)
        WHERE s.account = p_account AND s.incarnation <> p_inc
            AND s.stamp > v_now - make_interval(secs => p_window)
            AND d.recovered_at IS NULL AND d.lease_until > v_now
        ORDER BY 1);
    v_rest := v_rate;
    v_wanting := coalesce(array_length(v_others, 1), 0) + 1;
    FOREACH v_demand IN ARRAY v_others LOOP
        EXIT WHEN v_demand >= v_rest / v_wanting;
        v_rest := v_rest - v_demand;
        v_wanting := v_wanting - 1;
    END LOOP;
    v_share_rate := v_rest / v_wanting;
    -- This node's sub-bucket, refilled at its fair share (a new row starts with its part
    -- of the burst); `gap` keeps the time since its last take for the demand's average.
    INSERT INTO rate_shares AS s (account, incarnation, tokens, stamp, share)
    VALUES (p_account, p_inc, greatest(1, v_burst * v_share_rate / v_rate), v_now, v_share_rate)
    ON CONFLICT (account, incarnation) DO UPDATE SET
        tokens = least(v_burst, s.tokens
            + v_share_rate * greatest(0, extract(epoch FROM excluded.stamp - s.stamp))),
        gap = extract(epoch FROM excluded.stamp - s.stamp),
        stamp = excluded.stamp, share = v_share_rate
    RETURNING s.tokens INTO v_share;
    v_critical := p_critical OR p_ids IS NOT NULL AND EXISTS (
        SELECT 1 FROM messages m WHERE m.id = ANY(p_ids) AND m.priority = 0);
    IF v_critical THEN
        v_n := greatest(0, least(p_want, floor(v_tokens)))::integer;
    ELSE
        v_n := greatest(0, least(p_want, floor(v_tokens), floor(v_share)))::integer;
    END IF;
    IF v_n > 0 THEN
        UPDATE rate_accounts a SET tokens = a.tokens - v_n WHERE a.account = p_account;
        UPDATE rate_shares s SET tokens = s.tokens - v_n
        WHERE s.account = p_account AND s.incarnation = p_inc;
    END IF;
    RETURN QUERY SELECT v_n, v_now, v_tokens, v_share, v_rate, v_burst,
        coalesce(array_length(v_others, 1), 0) + 1, v_share_rate;
END $$;
"""
