"""Cluster schema migration 30: a critical reserve in a carrier account's bucket.

Why (S6 on a shared account): the account's row had no priority across nodes. With
two nodes' bulk claims taking every token as it came, a critical message's take found
the row empty and waited for the next token, behind the other node's next bulk take
too: its time to the carrier was 150-700 ms at p99 (bench/README.md). Now the bottom
`reserve` tokens of the row are for critical takes alone: a bulk take leaves them (it
takes only what is above), a critical one draws them. The row never goes below zero
and the refill is the same, so every 1 s window still sees at most `burst + rate`
takes (S2): the reserve moves no tokens, it only says who may have the last ones. Bulk
sees a bucket of `burst - reserve`, at the same rate; criticals take from bulk's rate,
not on top of it. A reserve is capped at `burst - 1`, so bulk always has a token.

`rate_take_reserved` is `rate_take` (migration 28, `bucket_take.py`) with that floor,
a lock wait that may be bounded (`p_lock_wait`: an accept's critical take waits a
moment for the row rather than leave its message to the next round, `buckets.take`),
and it also says what it applied (`o_floor`: the tokens this take had to leave; 0 for
a critical one) and whether the take was critical (`o_critical`: a critical take is
not bound by its node's share, so its wait is the account's alone). `rate_take` stays
for the nodes not yet upgraded in a rolling upgrade: their takes ignore the reserve
(priority is weaker until they restart), never the cap.
"""

from __future__ import annotations

MIGRATION_30 = """
ALTER TABLE rate_accounts ADD COLUMN reserve double precision NOT NULL DEFAULT 0
    CHECK (reserve >= 0);

CREATE FUNCTION rate_take_reserved(
    p_account text, p_inc bigint, p_want integer, p_window double precision,
    p_lock_wait double precision, p_async boolean, p_ids text[], p_critical boolean
) RETURNS TABLE (
    o_n integer, o_stamp timestamptz, o_tokens double precision, o_share double precision,
    o_rate double precision, o_burst double precision, o_nodes integer,
    o_share_rate double precision, o_floor double precision, o_critical boolean
) LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz;
    v_tokens double precision;
    v_rate double precision;
    v_burst double precision;
    v_reserve double precision;
    v_others double precision[];
    v_rest double precision;
    v_wanting integer;
    v_demand double precision;
    v_share_rate double precision;
    v_share double precision;
    v_floor double precision;
    v_n integer;
    v_critical boolean;
    v_lock_timeout text;
BEGIN
    IF p_async THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    -- Before the lock: a read of the messages' classes, not to hold the row meanwhile.
    v_critical := p_critical OR p_ids IS NOT NULL AND EXISTS (
        SELECT 1 FROM messages m WHERE m.id = ANY(p_ids) AND m.priority = 0);
    -- Lock first, then read the clock: a clock read before waiting for the lock would
    -- stamp this take earlier than the one it waited for, and refill twice over.
    -- `p_lock_wait`: NULL waits for the row, 0 does not (NOWAIT), else at most that
    -- many seconds (then lock_not_available, as NOWAIT's).
    IF p_lock_wait IS NULL THEN
        PERFORM 1 FROM rate_accounts a WHERE a.account = p_account FOR UPDATE;
    ELSIF p_lock_wait <= 0 THEN
        PERFORM 1 FROM rate_accounts a WHERE a.account = p_account FOR UPDATE NOWAIT;
    ELSE
        v_lock_timeout := current_setting('lock_timeout');
        PERFORM set_config('lock_timeout', greatest(1, round(p_lock_wait * 1000))::text, true);
        PERFORM 1 FROM rate_accounts a WHERE a.account = p_account FOR UPDATE;
        -- Back as it was: in a caller's transaction, its later statements' waits.
        PERFORM set_config('lock_timeout', v_lock_timeout, true);
    END IF;
    v_now := clock_timestamp();
    UPDATE rate_accounts a SET tokens = least(a.burst, a.tokens + a.rate
        * greatest(0, extract(epoch FROM v_now - a.stamp))), stamp = v_now
    WHERE a.account = p_account
    RETURNING a.tokens, a.rate, a.burst, a.reserve INTO v_tokens, v_rate, v_burst, v_reserve;
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
    IF v_critical THEN  -- the whole row, past this node's share (fairness is the refills')
        v_floor := 0;
        v_n := greatest(0, least(p_want, floor(v_tokens)))::integer;
    ELSE  -- above the reserve, within the share
        v_floor := greatest(0, least(v_reserve, v_burst - 1));
        v_n := greatest(0, least(p_want, floor(v_tokens - v_floor), floor(v_share)))::integer;
    END IF;
    IF v_n > 0 THEN
        UPDATE rate_accounts a SET tokens = a.tokens - v_n WHERE a.account = p_account;
        UPDATE rate_shares s SET tokens = s.tokens - v_n
        WHERE s.account = p_account AND s.incarnation = p_inc;
    END IF;
    RETURN QUERY SELECT v_n, v_now, v_tokens, v_share, v_rate, v_burst,
        coalesce(array_length(v_others, 1), 0) + 1, v_share_rate, v_floor, v_critical;
END $$;
"""
