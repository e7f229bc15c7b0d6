"""Which errors are the store being unavailable (`503 store_unavailable`), and which
stay bugs (`500 internal`): a shared PostgreSQL lost or refusing is the first, a bad
query or constraint the second."""

from __future__ import annotations

import psycopg
import psycopg_pool
import pytest

from gateway.store_failure import database_unreachable


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (psycopg.OperationalError("consuming input failed"), "OperationalError"),
        (psycopg.errors.AdminShutdown("terminating connection"), "AdminShutdown"),
        (psycopg_pool.PoolTimeout("no connection in 30 s"), "PoolTimeout"),
        (psycopg.errors.QueryCanceled("statement timeout"), "QueryCanceled"),
        (psycopg.errors.UniqueViolation("duplicate key"), None),
        (psycopg.errors.ProgramLimitExceeded("too complex"), None),
        (psycopg.ProgrammingError("syntax error"), None),
        (ValueError("a bug"), None),
    ],
)
def test_a_lost_or_refused_database_is_unavailable_and_a_bad_query_is_not(
    error: Exception, kind: str | None
) -> None:
    assert database_unreachable(error) == kind


def test_a_use_case_wrapping_a_lost_connection_is_unavailable_but_a_bug_after_one_is_not() -> None:
    lost = psycopg.OperationalError("server closed the connection unexpectedly")
    wrapped = RuntimeError("could not list")
    wrapped.__cause__ = lost
    assert database_unreachable(wrapped) == "OperationalError"
    bug = KeyError("x")  # raised while handling it: not caused by it
    bug.__context__ = lost
    assert database_unreachable(bug) is None
