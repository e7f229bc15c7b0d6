"""`ResultsAvailable`: orders whose results became final or were corrected, for one patient.

Built by the ORU^R01 mapper (per patient, the OBRs with OBR-25 F or C) and by
`POST /events/results-available`. It carries order numbers and status codes only:
never an OBX value, a test name, an abnormal flag or a note, so nothing of the result
can reach the notice's variables. An X (order cancelled, no results) withdraws the
order: a notice still waiting with nothing else in it is then skipped (its recheck).

Once per order and status: a repeated F notifies nothing; a C after an F is an
"updated results" notice (the same `result_available` template, with
`result_status=corrected`); a second C nothing. While the patient has a results
notice pending (waiting for `[results] notify_delay_hours`), a further result joins
it rather than planning a second SMS.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from gateway.clinical.commands import ApplyContext
from gateway.clinical.notices import NoticeKind
from gateway.consent.purposes import Purpose
from gateway.results import events, settings
from gateway.results.events import Event, OrderKey, Outcome
from gateway.results.recipient import Target, resolve

FINAL = "F"
CORRECTED = "C"
CANCELLED = "X"  # "no results available; order cancelled": a pending notice is withdrawn
NOTIFYING = {FINAL: "final", CORRECTED: "corrected"}  # OBR-25, table 0123
TEMPLATE = NoticeKind.RESULT_AVAILABLE.value


@dataclass(frozen=True, slots=True)
class ResultsAvailable:
    target: Target
    orders: tuple[tuple[OrderKey, str], ...]  # (order, OBR-25 status F or C)

    def apply(self, conn: sqlite3.Connection, ctx: ApplyContext) -> None:
        self.run(conn, ctx)

    def run(self, conn: sqlite3.Connection, ctx: ApplyContext) -> Outcome:
        recipient = resolve(conn, ctx, self.target)
        delay = settings.of(ctx.store).results.notify_delay_hours * 3600.0
        corrected = any(status == CORRECTED for _, status in self.orders)
        return events.record(
            conn,
            ctx,
            NoticeKind.RESULT_AVAILABLE,
            recipient,
            [Event(order, status) for order, status in self.orders],
            template=TEMPLATE,
            purpose=Purpose.RESULTS.value,
            due_at=ctx.now + delay,
            variables={"result_status": NOTIFYING[CORRECTED if corrected else FINAL]},
        )


@dataclass(frozen=True, slots=True)
class ResultsWithdrawn:
    """Orders whose results will not come (OBR-25 X): a results notice still waiting
    for them (the site's delay) is skipped at send time if nothing else is in it."""

    orders: tuple[OrderKey, ...]

    def apply(self, conn: sqlite3.Connection, ctx: ApplyContext) -> None:
        events.withdraw(conn, ctx, NoticeKind.RESULT_AVAILABLE, self.orders)
