"""The cluster's PostgreSQL driver is psycopg's C implementation, which the
`[postgresql]` extra installs (`psycopg[binary]`): in pure Python, psycopg's fallback
when no C part is found, each statement costs about 0.2 ms of CPU more
(bench/README.md, "HL7 over MLLP into nodes")."""

from __future__ import annotations

import psycopg


def test_psycopg_runs_its_c_implementation() -> None:
    assert psycopg.pq.__impl__ in ("binary", "c"), psycopg.pq.__impl__
