"""What one HL7 interface's feed means: the per-interface profile the mappers read.

The wire settings (listen address, TLS, allowlist, acknowledgment options) live with
the listener's config in `gateway.hl7`; this is the part that decides how a message
is read: where the appointment time is, which phone fields count, whose MRNs these
are, the clinic's time zone. Every field has a default a typical v2.5 feed fits.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class TimingSource(enum.StrEnum):
    """Where an SIU message carries the appointment's start (research §0.3)."""

    TQ1 = "tq1"  # TQ1-7 start, TQ1-8 end (v2.5+; v2.7 withdrew SCH-11)
    SCH11 = "sch11"  # SCH-11 (TQ) component 4 start, 5 end (v2.3/2.4)
    AIS = "ais"  # AIS-4 start with AIS-7/8 duration; AIL-6 / AIP-6 when there is no AIS


@dataclass(frozen=True, slots=True)
class InterfaceProfile:
    """How to read one interface's messages.

    `phone_fields`: the fields searched for a mobile number, in order of preference
    (`PID-13` home, `PID-14` business, `NK1-5`). `phone_uses` (XTN-2, table 0201) and
    `phone_equipment` (XTN-3, table 0202) a number must have to be texted; an empty
    equipment type is accepted only if `accept_untyped_phone`. `mrn_authority`: the
    PID-3 assigning authority (CX-4) whose identifier is the patient's MRN; None takes
    the first identifier of type MR. `time_zone`: the clinic's IANA zone, for times
    without an offset and for rendering. `processing_ids`: the MSH-11 values this
    interface accepts (`P` production, `T` training, `D` debugging).
    `cancel_debounce`: seconds a cancellation notice waits for a rebooking.
    `default_language`: a patient's language when PID-15 is empty or unknown.
    `writeback`: the outbound HL7 interface replies to this feed's appointments are
    written back to, or None for the staff worklist (and its webhook event) only;
    `writeback_message`: `siu_s14` (a modification with the reply as status/NTE) or
    `srm_s03` / `srm_s04` requests, for fillers that take SRM.
    """

    name: str
    timing_source: TimingSource = TimingSource.TQ1
    phone_fields: tuple[str, ...] = ("PID-13", "PID-14")
    phone_uses: frozenset[str] = frozenset({"PRN", "ORN", "NET"})
    phone_equipment: frozenset[str] = frozenset({"CP"})
    accept_untyped_phone: bool = False
    mrn_authority: str | None = None
    time_zone: str = "UTC"
    processing_ids: frozenset[str] = frozenset({"P"})
    cancel_debounce: float = 300.0
    default_language: str = "en"
    region: str = "US"  # phone numbers without a country code are read in this region
    writeback: str | None = None
    writeback_message: str = "siu_s14"
    extra: dict[str, str] = field(default_factory=dict)


API_SOURCE = "api"  # the `source` of appointments and patients posted through the JSON API
