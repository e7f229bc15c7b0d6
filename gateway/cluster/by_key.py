"""A row's state tested so that only the primary key can find rows by their ids.

Why (issue 18, S9). The claim and its outcomes name their rows by id and test their
state: `id = ANY(ids) AND state = 'queued'`. The state-leading and state-partial indexes
(`messages_list_state`, `messages_sending`, `messages_claim`, ...) keep an entry for
every version a row ever had in that state until VACUUM removes it, and VACUUM removes
nothing older than the oldest snapshot still open (a report left in REPEATABLE READ, a
replication slot). The planner, seeing few live rows in that state, prefers walking that
index's range to one primary key descent per id; with the horizon held the range grows
by every message sent, and each claim walked all of it (a heap visit per dead entry):
after ten minutes at 200 messages a second, hundreds of milliseconds a claim.

`state_is` writes the test as an expression no index holds, so the primary key is the
only way in: a handful of entries per id (one per version of that row), however far
back the horizon is. The test itself is the same and is re-checked on the locked row.
"""

from __future__ import annotations

from gateway.models import State


def state_is(state: State, alias: str = "") -> str:
    """SQL true when the row's state is `state`, useless to any index; `alias` the table's
    ("m" for `m.state`)."""
    column = f"{alias}.state" if alias else "state"
    return f"{column} || '' = '{state.value}'"
