"""Accepts inside a transaction a use case runs itself, so its own rows and its
messages commit together or not at all (the notice runner: a message and its notice's
`finish`; a campaign's pass: its recipients and their messages): on SQLite, in a writer
job (`accept_within`, `accept_many_within`); on a cluster, in a PostgreSQL transaction
on the shared queue's pool (`accept_many_within_shared`). After the commit,
`hand_over` gives the messages to the scheduler."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from drivers.clock import Clock
from gateway.errors import ApiError
from gateway.intake import Intake, Prepared, SendRequest
from gateway.store.queue_store import AcceptStore
from gateway.usecases.caller import Caller

if TYPE_CHECKING:  # psycopg is optional: a cluster's dependency
    from psycopg import AsyncConnection


class WithinAccepts:
    """The part of `Messages` that accepts in its caller's transaction."""

    _intake: Intake
    _clock: Clock
    _cluster: AcceptStore | None

    def check_accepting(self) -> None:
        raise NotImplementedError

    def _require_send(self, caller: Caller) -> None:
        raise NotImplementedError

    def accept_within(
        self,
        conn: sqlite3.Connection,
        caller: Caller,
        request: SendRequest,
        *,
        to_index: bytes | None = None,
    ) -> Prepared:
        """Accept one message inside a writer job the caller runs, so it commits with
        the caller's own rows or not at all (the notice runner: a message and its
        notice's `finish`). The policy judges it in that transaction, as at `accept`;
        once the job has committed, `hand_over` gives it to the scheduler. `to_index`:
        the number is a contact's as stored (`Intake.prepare`)."""
        self._require_send(caller)
        self.check_accepting()
        intake = self._intake
        prepared = intake.prepare(request, caller.token_id, self._clock.time(), to_index=to_index)
        if intake.policy.enabled:
            m = prepared.message
            recipients = [(m.to_index, prepared.purpose)] if m.to_index else []
            prepared = intake.judge(
                intake.policy.view(conn, recipients, m.created_at, writer=True), prepared
            )
        for sql, params in intake.statements([prepared]):
            conn.execute(sql, params)
        return prepared

    def accept_many_within(
        self,
        conn: sqlite3.Connection,
        caller: Caller,
        requests: Sequence[tuple[SendRequest, bytes | None]],
    ) -> list[Prepared | ApiError]:
        """`accept_within` for a campaign's pass: each request with its number's stored
        index (`Intake.prepare`), one policy read for all, one insert per statement; an
        invalid one is its `ApiError` in its place, a 5xx one is raised."""
        self._require_send(caller)
        self.check_accepting()
        intake, now = self._intake, self._clock.time()
        out = self._prepared_or_errors(caller, requests, now)
        prepared = [p for p in out if isinstance(p, Prepared)]
        if intake.policy.enabled and prepared:
            recipients = [(p.message.to_index, p.purpose) for p in prepared if p.message.to_index]
            view = intake.policy.view(conn, recipients, now, writer=True)
            out, prepared = _in_place(out, [intake.judge(view, p) for p in prepared])
        by_sql: dict[str, list[Sequence[Any]]] = {}
        for sql, params in intake.statements(prepared):
            by_sql.setdefault(sql, []).append(params)
        for sql, rows in by_sql.items():
            conn.executemany(sql, rows)  # the statements keep their order: dicts do
        return out

    async def accept_many_within_shared(
        self,
        conn: AsyncConnection[Any],
        caller: Caller,
        requests: Sequence[tuple[SendRequest, bytes | None]],
    ) -> list[Prepared | ApiError]:
        """`accept_many_within` on a cluster: in the caller's PostgreSQL transaction on
        the shared queue's pool (`conn`), judged there as `accept` judges them, so a
        clinical use case's rows and its messages commit together; `hand_over` after."""
        if self._cluster is None:
            raise RuntimeError("accept_many_within_shared needs the cluster's queue")
        from gateway.cluster.consent_accept import judge_within  # here: psycopg is optional
        from gateway.cluster.queue_store import ClusterQueue

        if not isinstance(self._cluster, ClusterQueue):
            raise TypeError("accept_many_within_shared runs on the cluster queue")
        self._require_send(caller)
        self.check_accepting()
        intake, now = self._intake, self._clock.time()
        out = self._prepared_or_errors(caller, requests, now)
        prepared = [p for p in out if isinstance(p, Prepared)]
        if intake.policy.enabled and prepared:
            out, prepared = _in_place(out, await judge_within(conn, intake, prepared, now))
        links = [m for p in prepared for m in p.links]
        await self._cluster.insert_within(conn, [p.message for p in prepared], None, links)
        return out

    def _prepared_or_errors(
        self, caller: Caller, requests: Sequence[tuple[SendRequest, bytes | None]], now: float
    ) -> list[Prepared | ApiError]:
        out: list[Prepared | ApiError] = []
        for request, to_index in requests:
            try:
                out.append(self._intake.prepare(request, caller.token_id, now, to_index=to_index))
            except ApiError as e:
                if e.status >= 500:
                    raise
                out.append(e)
        return out

    def hand_over(self, prepared: Sequence[Prepared]) -> None:
        """Messages `accept_within` stored, after their transaction committed."""
        self._intake.accepted(prepared)


def _in_place(
    out: list[Prepared | ApiError], judged: list[Prepared]
) -> tuple[list[Prepared | ApiError], list[Prepared]]:
    """The judged messages in their requests' places (errors kept), and those alone."""
    verdicts = iter(judged)
    out = [next(verdicts) if isinstance(p, Prepared) else p for p in out]
    return out, [p for p in out if isinstance(p, Prepared)]
