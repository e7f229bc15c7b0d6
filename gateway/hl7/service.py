"""The HL7 feeds of a running gateway: a listener per inbound interface, a lane per
outbound one, and the use cases the API and panel call (counters, the quarantine,
reprocess, the audited raw reveal, re-send of a parked write-back)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from drivers.clock import Clock
from gateway.clinical import mappers
from gateway.clinical.commands import ClinicalHooks
from gateway.clinical.db import ClinicalDb, LocalClinicalDb
from gateway.config import Config
from gateway.hl7 import lane, listener
from gateway.hl7 import messages_sql as sql
from gateway.hl7.inbound import Hl7Inbound
from gateway.store.audit_log import AuditTrail
from gateway.store.store import Store
from gateway.tls import server_context
from gateway.usecases.caller import Caller
from gateway.usecases.messages import forbidden

log = structlog.get_logger("smsgw.hl7")


@dataclass(frozen=True, slots=True)
class InterfaceSummary:
    name: str
    direction: str
    address: str  # listen address, or the EHR's host:port
    counters: dict[str, int]


@dataclass(frozen=True, slots=True)
class OutboundRow:
    """A write-back message as the panel shows it (no PHI)."""

    id: str
    interface: str
    control_id: str
    kind: str
    state: str
    attempts: int
    ack_code: str | None
    last_error: str | None
    updated_at: float
    possible_duplicate: bool = False  # the EHR may have it twice (`lane.py`)


class Hl7Service:
    def __init__(
        self,
        config: Config,
        store: Store,
        clock: Clock,
        hooks: ClinicalHooks,
        audit: AuditTrail,
        db: ClinicalDb | None = None,
        leadership: lane.Leadership | None = None,
    ) -> None:
        """`db`: where `hl7_messages` and `hl7_outbound` live (on a cluster the shared
        PostgreSQL); the store's own by default. `leadership`: on a cluster, which node
        sends each outbound interface's rows."""
        mappers.load()
        self.config, self.store, self.clock, self.audit = config, store, clock, audit
        self.db = db or LocalClinicalDb(store)
        self.inbound = {
            i.name: Hl7Inbound(i, store, clock, hooks, self.db) for i in config.hl7.inbound()
        }
        self.lanes: dict[str, lane.OutboundLane] = {}
        for i in config.hl7.outbound():
            ca = str(config.resolve(i.tls_ca_file)) if i.tls_ca_file else None
            context = lane.ssl_context(i, ca)
            self.lanes[i.name] = lane.OutboundLane(i, self.db, clock, context, leadership)
        self.leadership = leadership
        self.listeners: dict[str, listener.Listener] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, *, dispatch: bool = True) -> None:
        for name, inbound in self.inbound.items():
            iface = inbound.iface
            context = None
            if iface.tls_cert_file and iface.tls_key_file:
                context = server_context(
                    self.config.resolve(iface.tls_cert_file),
                    self.config.resolve(iface.tls_key_file),
                )
            host, _, port = iface.listen.rpartition(":")
            self.listeners[name] = await listener.serve(
                inbound, host.strip("[]"), int(port), context
            )
            log.info(
                "hl7_listening",
                interface=name,
                port=self.listeners[name].port,
                tls=context is not None,
            )
        if dispatch:
            self._tasks = [asyncio.create_task(ln.run()) for ln in self.lanes.values()]

    async def stop(self) -> None:
        for ln in self.listeners.values():
            await ln.aclose()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for lane_ in self.lanes.values():
            await lane_.client.aclose()
        if self.leadership is not None:
            await self.leadership.close()  # the survivors take the lanes at once

    # -- use cases ----------------------------------------------------------------------

    async def interfaces(self) -> list[InterfaceSummary]:
        # Reads, on the read pool: a scrape of /metrics must not queue behind writes.
        counts = sql.counters(await self.db.all(sql.COUNTERS))
        out_counts = _outbound_counters(await self.db.all(_OUTBOUND_COUNTERS))
        rows = []
        for i in self.config.hl7.interfaces:
            if i.direction == "in":
                running = self.listeners.get(i.name)
                host = i.listen.rpartition(":")[0]
                address = f"{host}:{running.port}" if running is not None else i.listen
                empty = dict.fromkeys((*sql.STATES, "duplicate"), 0)
                rows.append(InterfaceSummary(i.name, "in", address, counts.get(i.name, empty)))
            else:
                empty = dict.fromkeys(("pending", "acked", "parked", "cancelled"), 0)
                rows.append(
                    InterfaceSummary(
                        i.name, "out", f"{i.host}:{i.port}", out_counts.get(i.name, empty)
                    )
                )
        return rows

    async def messages(
        self, state: str | None, interface: str | None, limit: int = 100
    ) -> list[sql.Listed]:
        found: list[sql.Listed] = await self.db.run(
            lambda c: sql.listed(c, state, interface, limit), serial=False
        )
        return found

    async def message(self, row_id: str) -> sql.Listed | None:
        found: sql.Listed | None = await self.db.run(lambda c: sql.one(c, row_id), serial=False)
        return found

    async def reprocess(self, row_id: str, caller: Caller) -> str | None:
        """The message's new state; None if it is not a quarantined message of a
        configured interface."""
        row = await self.message(row_id)
        if row is None or row.interface not in self.inbound:
            return None
        state = await self.inbound[row.interface].reprocess(row_id)
        if state is not None:
            await self.audit.record(caller.actor, "hl7_reprocessed", "hl7_message", row_id)
        return state

    async def raw(self, row_id: str, caller: Caller) -> str | None:
        """The message as received (PHI): audited before it is returned."""
        if not caller.may_read_phi:
            raise forbidden("id", "the raw message")
        cipher = self.db.cipher
        found = await self.db.run(lambda c: sql.raw_text(c, cipher, row_id), serial=False)
        if found is None:
            return None
        await self.audit.record(caller.actor, "hl7_raw_revealed", "hl7_message", row_id)
        return found[1]

    async def outbound(self, state: str | None = None, limit: int = 100) -> list[OutboundRow]:
        def read(conn: sqlite3.Connection) -> list[OutboundRow]:
            q = (
                "SELECT id, interface, control_id, kind, state, attempts, ack_code, last_error,"
                " updated_at, possible_duplicate FROM hl7_outbound"
            )
            args: tuple[object, ...] = ()
            if state is not None:
                q += " WHERE state = ?"
                args = (state,)
            q += " ORDER BY updated_at DESC LIMIT ?"
            return [
                OutboundRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], bool(r[9]))
                for r in conn.execute(q, (*args, limit))
            ]

        rows: list[OutboundRow] = await self.db.run(read, serial=False)
        return rows

    async def outbound_exists(self, row_id: str) -> bool:
        found: bool = await self.db.run(
            lambda c: (
                c.execute("SELECT 1 FROM hl7_outbound WHERE id = ?", (row_id,)).fetchone()
                is not None
            ),
            serial=False,
        )
        return found

    async def resend(self, row_id: str, caller: Caller) -> bool:
        done = await lane.resend(self.db, row_id, self.clock.time())
        if done:
            await self.audit.record(caller.actor, "hl7_outbound_resent", "hl7_outbound", row_id)
            for ln in self.lanes.values():
                ln.wake()
        return done


_OUTBOUND_COUNTERS = "SELECT interface, state, COUNT(*) FROM hl7_outbound GROUP BY interface, state"


def _outbound_counters(rows: Iterable[Sequence[Any]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for interface, state, n in rows:
        c = out.setdefault(interface, dict.fromkeys(("pending", "acked", "parked", "cancelled"), 0))
        c[state] = n
    return out
