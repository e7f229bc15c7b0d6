"""A real MLLP listener over a real store for tests, test-only mappers (type ZZZ, so
they never collide with the real SIU/ORU/ADT ones), and a raw-socket MLLP peer."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

import hl7

from drivers.clock import FakeClock
from gateway.clinical import mappers, patients
from gateway.clinical.commands import ApplyContext, ClinicalHooks, Command, Ignore, MappingError
from gateway.clinical.profile import InterfaceProfile
from gateway.hl7 import framing, listener
from gateway.hl7.inbound import Hl7Inbound
from gateway.hl7.settings import Hl7Interface
from gateway.store.store import Store

TIMEOUT = 10.0


@dataclass(frozen=True)
class UpsertPatient:
    details: patients.PatientDetails

    def apply(self, conn: sqlite3.Connection, ctx: ApplyContext) -> None:
        patients.upsert(conn, ctx, self.details)


@dataclass(frozen=True)
class FailAfterUpsert:
    """Changes something, then finds the message cannot be applied."""

    details: patients.PatientDetails

    def apply(self, conn: sqlite3.Connection, ctx: ApplyContext) -> None:
        patients.upsert(conn, ctx, self.details)
        raise MappingError(204, "unknown appointment", "SCH-1")


class Broken:
    def apply(self, conn: sqlite3.Connection, ctx: ApplyContext) -> None:
        raise RuntimeError("disk on fire")


@mappers.maps("ZZZ", "Z01")
def _upsert(message: hl7.Message, profile: InterfaceProfile) -> Sequence[Command]:
    return [UpsertPatient(patients.extract(message, profile))]


@mappers.maps("ZZZ", "Z02")
def _ignore(message: hl7.Message, profile: InterfaceProfile) -> Sequence[Command]:
    return [Ignore("not for us")]


@mappers.maps("ZZZ", "Z03")
def _needs_fix(message: hl7.Message, profile: InterfaceProfile) -> Sequence[Command]:
    """Maps only once the profile names the authority (a profile fix, then reprocess)."""
    if profile.mrn_authority != "HOSP":
        raise MappingError(103, "no identifier of the configured authority", "PID-3")
    return [UpsertPatient(patients.extract(message, profile))]


@mappers.maps("ZZZ", "Z04")
def _fail_late(message: hl7.Message, profile: InterfaceProfile) -> Sequence[Command]:
    return [FailAfterUpsert(patients.extract(message, profile))]


@mappers.maps("ZZZ", "Z05")
def _broken(message: hl7.Message, profile: InterfaceProfile) -> Sequence[Command]:
    return [Broken()]


def message(
    event: str = "Z01",
    control_id: str = "C1",
    *,
    name: str = "Doe^Jane",
    msh18: str = "",
    processing: str = "P",
    msh15: str = "",
    msh16: str = "",
    sep: str = "\r",
) -> str:
    msh = (
        f"MSH|^~\\&|EHR|CLINIC|SMSGW|HOSP|20261201090000||ZZZ^{event}^ZZZ|{control_id}|"
        f"{processing}|2.5.1|||{msh15}|{msh16}||{msh18}"
    )
    pid = f"PID|1||MRN42^^^HOSP^MR||{name}||19800101|F|||||^PRN^CP^^1^202^5550123||SPA"
    return sep.join([msh, pid]) + sep


@dataclass
class Rig:
    store: Store
    clock: FakeClock
    inbound: Hl7Inbound
    server: listener.Listener

    @property
    def port(self) -> int:
        return self.server.port

    async def count(self, sql: str, *args: object) -> int:
        def job(conn: sqlite3.Connection) -> int:
            return int(conn.execute(sql, args).fetchone()[0])

        return int(await self.store.writer.run(job))


async def start(store: Store, iface: Hl7Interface, hooks: ClinicalHooks | None = None) -> Rig:
    clock = FakeClock()
    inbound = Hl7Inbound(iface, store, clock, hooks or ClinicalHooks())
    server = await listener.serve(inbound, "127.0.0.1", 0)
    return Rig(store, clock, inbound, server)


class Peer:
    """A raw MLLP sender: bytes out, frames back through our own decoder."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = framing.MllpDecoder()
        self.got: list[bytes] = []

    @classmethod
    async def open(cls, port: int) -> Peer:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def frames(self, n: int) -> list[bytes]:
        async def read() -> list[bytes]:
            while len(self.got) < n:
                chunk = await self.reader.read(65536)
                if not chunk:
                    break
                self.decoder.receive_data(chunk)
                self.got += [
                    e.payload for e in self.decoder.events() if isinstance(e, framing.Frame)
                ]
            out, self.got = self.got[:n], self.got[n:]
            return out

        return await asyncio.wait_for(read(), TIMEOUT)

    async def closed(self) -> bytes:
        """Everything until the server closes the connection."""
        return await asyncio.wait_for(self.reader.read(), TIMEOUT)

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def msa(ack: bytes | str) -> tuple[str, str]:
    text = ack.decode() if isinstance(ack, bytes) else ack
    seg = next(s for s in text.split("\r") if s.startswith("MSA"))
    f = seg.split("|")
    return f[1], f[2]


def err3(ack: bytes | str) -> str:
    text = ack.decode() if isinstance(ack, bytes) else ack
    seg = next(s for s in text.split("\r") if s.startswith("ERR"))
    return seg.split("|")[3].split("^")[0]
