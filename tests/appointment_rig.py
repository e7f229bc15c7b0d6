"""A store, a fake clock and SIU messages built to order, for the appointment tests."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from drivers.clock import FakeClock
from gateway.appointments.settings import AppointmentsConfig
from gateway.clinical import mappers
from gateway.clinical.commands import ApplyContext, ClinicalHooks, Command
from gateway.clinical.profile import InterfaceProfile
from gateway.store.store import Store
from tests.hl7_samples import parse

DAY = 86400.0
_control = itertools.count(1)


def hl7_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y%m%d%H%M%S") + "+0000"


def siu(
    event: str,
    *,
    key: str = "A1",
    sent: float,
    start: float | None = None,
    minutes: int = 30,
    status: str = "",
    mrn: str = "MRN42",
    phone: str = "^PRN^CP^^1^202^5550123",
) -> str:
    """An SIU message: SCH-2 `key`, MSH-7 `sent`, TQ1-7/8 from `start`, SCH-25 `status`."""
    begin = hl7_time(start) if start is not None else ""
    end = hl7_time(start + minutes * 60) if start is not None else ""
    sch = ["SCH", f"P{key}^EHR", f"{key}^EHR", *[""] * 22, status]
    segments = [
        f"MSH|^~\\&|EHR|CLINIC|SMSGW|HOSP|{hl7_time(sent)}||SIU^{event}^SIU_S12|"
        f"C{next(_control)}|P|2.5.1",
        "|".join(sch),
        f"TQ1|||||||{begin}|{end}",
        f"PID|1||{mrn}^^^HOSP^MR||Doe^Jane||19800101|F|||||{phone}||SPA",
        "RGS|1",
        f"AIS|1||CHK^Checkup^L|{begin}|||{minutes}|min",
        "AIL|1||ROOM1^^^North Clinic",
        "AIP|1||D1^House^Greg^^^Dr",
    ]
    return "\r".join(segments) + "\r"


@dataclass
class Rig:
    store: Store
    clock: FakeClock
    profile: InterfaceProfile = field(
        default_factory=lambda: InterfaceProfile("ehr", cancel_debounce=300.0)
    )
    changed: list[str] = field(default_factory=list)

    @property
    def hooks(self) -> ClinicalHooks:
        return ClinicalHooks([lambda conn, ctx, appt_id: self.changed.append(appt_id)])

    def ctx(self, profile: InterfaceProfile | None = None) -> ApplyContext:
        p = profile or self.profile
        return ApplyContext(self.clock.time(), p.name, f"hl7:{p.name}", p, self.store, self.hooks)

    async def feed(self, text: str, profile: InterfaceProfile | None = None) -> list[Command]:
        """Map `text` by its MSH-9 and apply its commands in one writer transaction."""
        mappers.load()
        p = profile or self.profile
        message = parse(text)
        msh9 = str(message.segment("MSH")[9]).split("^")
        mapper = mappers.mapper_for(msh9[0], msh9[1])
        assert mapper is not None
        commands = mapper(message, p)
        ctx = self.ctx(p)

        def job(conn: sqlite3.Connection) -> None:
            for c in commands:
                c.apply(conn, ctx)

        await self.store.writer.run(job)
        return list(commands)

    async def rows(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        def job(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in conn.execute(sql, args).fetchall()]

        return await self.store.writer.run(job)


def api_profile() -> InterfaceProfile:
    return AppointmentsConfig().profile("US")
