"""Server-side limits on each of a node's PostgreSQL sessions.

A node cut off from the database mid-transaction leaves its backend waiting for a
client that will not answer: the network sends no reset, libpq's keepalives are the
client's, and the server's default TCP keepalive takes two hours. Meanwhile that
backend keeps its locks — rows it was claiming or finishing, its node row — so a peer's
claim or recovery sweep waits on them, its pool drains into waiting claims, its own
renewal finds no connection and the healthy peer fences itself too (found with a node
in a network namespace, tests/pg/test_partition_netns.py).

So every session tells the server to end it when it sits in a transaction without a
command for longer than the node may act without a renewal (`lease - margin`: by then
the node has fenced itself and will not commit anything of worth), or when data it sent
goes unacknowledged that long (`tcp_user_timeout`). Its locks go with it, before the
database ends the node's lease and peers sweep its rows.
"""

from __future__ import annotations

from psycopg.conninfo import conninfo_to_dict

from gateway.cluster.settings import ClusterConfig


def session_options(settings: ClusterConfig) -> str:
    """The libpq `options` for a node's sessions, after any the conninfo already sets."""
    ms = max(1000, int((settings.lease_seconds - settings.margin_seconds) * 1000))
    ours = f"-c idle_in_transaction_session_timeout={ms} -c tcp_user_timeout={ms}"
    theirs = str(conninfo_to_dict(settings.conninfo).get("options") or "")
    return f"{theirs} {ours}".strip()
