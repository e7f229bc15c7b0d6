"""Issue 13 glue, point 1: the appointment type (SCH-8, or `type` in `POST /appointments`)
is stored and read by the reminder rules' `appointment_types` filter, through the real
planner in the gateway's hooks; SCH-7 (the reason) is not a type."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.app import Gateway
from gateway.appointments.machine import AppointmentChange
from gateway.clinical.commands import ApplyContext
from gateway.clinical.profile import InterfaceProfile
from gateway.reminders import rules
from gateway.reminders.rules import RuleSpec
from tests.appointment_rig import DAY, siu
from tests.conftest import GatewayFactory
from tests.hl7_samples import parse, sample
from tests.test_api import Api, _api, _error
from tests.test_appointments_api import body
from tests.test_results_notices import map_message

EHR = InterfaceProfile("ehr", time_zone="America/New_York")


def with_sch(message: str, reason: str, kind: str) -> str:
    """`message` with SCH-7 (reason) and SCH-8 (type) set."""
    lines = message.split("\r")
    for i, line in enumerate(lines):
        if line.startswith("SCH|"):
            f = line.split("|")
            f += [""] * (9 - len(f))
            f[7], f[8] = reason, kind
            lines[i] = "|".join(f)
    return "\r".join(lines)


async def _rules(gw: Gateway) -> dict[str, str]:
    """One rule for type X, one for type Y, one for any type: name -> id."""
    now = gw.clock.time()

    def job(conn: sqlite3.Connection) -> dict[str, str]:
        out = {}
        for name, types in (("x", ("X",)), ("y", ("Y",)), ("any", ())):
            rule = rules.save(
                conn, None, RuleSpec(name, "-1d", "reminder", appointment_types=types), "t", now
            )
            assert rule is not None
            out[name] = rule.id
        return out

    return await gw.store.writer.run(job)


async def _reminded_by(gw: Gateway, rule_ids: dict[str, str]) -> set[str]:
    names = {v: k for k, v in rule_ids.items()}
    rows = await gw.store.reader.all(
        "SELECT rule_id FROM clinical_notices WHERE kind = 'reminder' AND state = 'pending'"
    )
    return {names[r[0]] for r in rows}


async def _feed(gw: Gateway, message: str) -> None:
    now = gw.clock.time()
    ctx = ApplyContext(now, EHR.name, "hl7:ehr", EHR, gw.store, gw.clinical_hooks)
    commands = map_message(parse(message), EHR)

    def job(conn: sqlite3.Connection) -> None:
        for c in commands:
            c.apply(conn, ctx)

    await gw.store.writer.run(job)


def test_the_mapper_reads_sch8_and_never_sch7() -> None:
    """The shared samples carry SCH-7 EMERGENCY / CHECKUP (reasons, table 0276) and
    SCH-8 Normal (a type, table 0277): the type is `Normal`, CE.1 only."""
    for name in ("SIU-S12-01.hl7", "SIU-S12-02.hl7"):
        (cmd,) = map_message(sample(name), InterfaceProfile("ehr"))
        assert isinstance(cmd, AppointmentChange)
        assert cmd.facts.appt_type == "Normal", name
    text = with_sch(siu("S12", sent=1.8e9, start=1.8e9 + DAY), "FOLLOWUP", "")
    (cmd,) = map_message(parse(text), InterfaceProfile("ehr"))
    assert isinstance(cmd, AppointmentChange) and cmd.facts.appt_type is None
    text = with_sch(text, "", "NEWPT^New patient^L")
    (cmd,) = map_message(parse(text), InterfaceProfile("ehr"))
    assert isinstance(cmd, AppointmentChange) and cmd.facts.appt_type == "NEWPT"


@pytest.fixture
async def gw(open_gateway: GatewayFactory) -> Gateway:
    return await open_gateway(appointments={"time_zone": "America/New_York"})


async def test_an_s12_of_type_x_is_reminded_by_the_x_rule_only(gw: Gateway) -> None:
    ids = await _rules(gw)
    now = gw.clock.time()
    start = now + 10 * DAY
    await _feed(gw, with_sch(siu("S12", key="A1", sent=now, start=start), "Y", "X^Type X^L"))
    assert await _reminded_by(gw, ids) == {"x", "any"}
    row = await gw.store.reader.one("SELECT appt_type FROM appointments")
    assert row is not None and row[0] == "X"
    # An S14 that changes the type re-plans; one that leaves SCH-8 empty keeps it.
    gw.clock.advance(60)
    await _feed(gw, with_sch(siu("S14", key="A1", sent=now + 60, start=start), "", "Y"))
    assert await _reminded_by(gw, ids) == {"y", "any"}
    gw.clock.advance(60)
    await _feed(gw, siu("S14", key="A1", sent=now + 120, start=start + 3600))
    assert await _reminded_by(gw, ids) == {"y", "any"}
    row = await gw.store.reader.one("SELECT appt_type, version FROM appointments")
    assert row is not None and tuple(row) == ("Y", 3)


@pytest.fixture
async def api(gw: Gateway) -> AsyncIterator[Api]:
    async for a in _api(gw, frozenset({"send", "read"})):
        yield a


async def test_the_api_type_is_reminded_by_the_x_rule_only(api: Api) -> None:
    ids = await _rules(api.gw)
    r = await api.post("/api/v1/appointments", body(api, type="X"))
    assert r.status == 201, await r.text()
    saved: dict[str, Any] = await r.json()
    assert await _reminded_by(api.gw, ids) == {"x", "any"}
    view = await (await api.get(f"/api/v1/appointments/{saved['id']}")).json()
    assert view["type"] == "X"
    r = await api.post("/api/v1/appointments", body(api, type="Y"))
    assert r.status == 200 and (await r.json())["version"] == 2
    assert await _reminded_by(api.gw, ids) == {"y", "any"}
    r = await api.post("/api/v1/appointments", body(api, type="é" * 200))
    err = await _error(r, 422, "invalid_field")
    assert err["field"] == "type" and "é" not in json.dumps(err, ensure_ascii=False)
