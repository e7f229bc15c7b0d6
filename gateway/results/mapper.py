"""ORU^R01 -> `ResultsAvailable`, per patient of the message.

An ORU holds one or more PATIENT_RESULT groups (PID, then ORDER_OBSERVATIONs of ORC,
OBR, OBX, NTE...). Each OBR whose OBR-25 (result status, table 0123) is F (final) or
C (corrected) names an order whose results the patient may be told about; X (order
cancelled) withdraws a notice still waiting for it; P, I, R, S and the rest notify
nothing. The order is OBR-3 (filler order number), else OBR-2
(placer), else the ORC's. Nothing else of the OBR, and nothing of OBX or NTE, is read.
"""

from __future__ import annotations

from collections.abc import Sequence

import hl7

from gateway.clinical import fields, patients
from gateway.clinical.commands import ERR_REQUIRED_FIELD_MISSING, Command, Ignore, MappingError
from gateway.clinical.mappers import maps
from gateway.clinical.profile import InterfaceProfile
from gateway.results.commands import CANCELLED, NOTIFYING, ResultsAvailable, ResultsWithdrawn
from gateway.results.events import OrderKey


@maps("ORU", "R01")
def map_oru(message: hl7.Message, profile: InterfaceProfile) -> Sequence[Command]:
    groups = patient_groups(message)
    if not groups:
        raise MappingError(ERR_REQUIRED_FIELD_MISSING, "the message has no PID segment", "PID")
    commands: list[Command] = []
    seen_obr = False
    withdrawn: list[OrderKey] = []
    for group in groups:
        orders: list[tuple[OrderKey, str]] = []
        orc: hl7.Segment | None = None
        for segment in group[1:]:
            name = str(segment[0])
            if name == "ORC":
                orc = segment
            elif name == "OBR":
                seen_obr = True
                status = fields.value(message, segment, 25).strip().upper()
                if status in NOTIFYING:
                    orders.append((order_of(message, segment, orc), status))
                elif status == CANCELLED:
                    withdrawn.append(order_of(message, segment, orc))
        if orders:
            sub = hl7.parse("\r".join(str(s) for s in [fields.first(message, "MSH"), *group]))
            commands.append(ResultsAvailable(patients.extract(sub, profile), tuple(orders)))
    if not seen_obr:
        raise MappingError(ERR_REQUIRED_FIELD_MISSING, "the message has no OBR segment", "OBR")
    if withdrawn:
        commands.append(ResultsWithdrawn(tuple(withdrawn)))
    return commands or [Ignore("no final or corrected result")]


def patient_groups(message: hl7.Message) -> list[list[hl7.Segment]]:
    """The segments from each PID to the next (the first PID's group starts there)."""
    groups: list[list[hl7.Segment]] = []
    for segment in message:
        name = str(segment[0])
        if name == "PID":
            groups.append([segment])
        elif groups and name != "MSH":
            groups[-1].append(segment)
    return groups


def order_of(message: hl7.Message, obr: hl7.Segment, orc: hl7.Segment | None) -> OrderKey:
    for segment, n, role in (
        (obr, 3, "filler"),
        (obr, 2, "placer"),
        (orc, 3, "filler"),
        (orc, 2, "placer"),
    ):
        number = fields.value(message, segment, n).strip()
        if number:
            return OrderKey(number, fields.value(message, segment, n, 2).strip(), role)
    raise MappingError(
        ERR_REQUIRED_FIELD_MISSING, "the OBR names no placer or filler order number", "OBR-3"
    )
