"""A patient's reply from a handset, end to end (issue 13, point 6): the gateway runs
with its dispatch loop over TCP to the in-process SMSC simulator, the simulated
handset answers a reminder with `C` (and another with `STOP 1234`) as a deliver_sm,
and the appointment is confirmed, the write-back queued for the EHR, and the answer
delivered back to the handset. Nothing sleeps: waits re-check after every commit and
every simulator event (`Rig.until`)."""

from __future__ import annotations

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from drivers.text import Encoding, split
from gateway.clinical.profile import InterfaceProfile
from gateway.models import Priority
from gateway.scheduler_feed import Entry
from tests.appointment_rows import appointment, book, outbound_messages, reply_rows
from tests.test_consent_inbound import SHORT_CODE, RigFactory, number, open_rig, sim, to

__all__ = ["open_rig", "sim"]  # the fixtures this module uses


async def test_c_from_the_handset_confirms_writes_back_and_is_answered(
    open_rig: RigFactory,
) -> None:
    rig = await open_rig()
    gw = rig.gw
    gw.clinical_profiles["ehr"] = InterfaceProfile("ehr", writeback="ehr-out")
    who, quitter = number(7), number(8)
    booked = await book(gw, who, language="es")
    stopped = await book(gw, quitter, code="4321", ext_key="A2", mrn="MRN8")
    for b, n in ((booked, who), (stopped, quitter)):
        assert b.reminder_message is not None
        candidates = gw.router.candidates(n, Priority.NORMAL)
        now = gw.clock.time()
        gw.scheduler.add(Entry(b.reminder_message, Priority.NORMAL, now, now + 3600, candidates))
    await rig.until(rig.all_in([booked.reminder_message], ("delivered",)))

    rig.sim.inject_mo(who, SHORT_CODE, "Sí")
    rig.sim.inject_mo(quitter, SHORT_CODE, "STOP 4321")
    await rig.until(lambda: len(to(rig.sim, who)) == 2 and len(to(rig.sim, quitter)) == 2)

    after = await appointment(gw, booked.id)
    assert (after["version"], after["confirmed_via"]) == (2, "sms")
    answer = to(rig.sim, who)[1].text
    assert answer.endswith("Gracias, su cita esta confirmada.")
    assert split(answer).encoding is Encoding.GSM7 and split(answer).segments == 1
    assert "no more texts about this appointment" in to(rig.sim, quitter)[1].text

    rows = {r["intent"]: r for r in await reply_rows(gw)}
    assert rows["confirm"]["state"] == rows["stop"]["state"] == "done"
    written = {ref: message for _, _, ref, message in await outbound_messages(gw)}
    confirm = written[rows["confirm"]["id"]]
    m = parse_message(confirm, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    m.validate()
    assert "Confirmed by SMS" in confirm and "A1001" in confirm
    assert rows["stop"]["id"] in written
