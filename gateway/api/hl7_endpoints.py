"""The endpoint table's rows for the HL7 feeds (`gateway.api.hl7`): ids and states
only; a message's text needs the `phi` scope and every read is audited."""

from __future__ import annotations

from gateway.api import hl7 as hl7_api
from gateway.api.endpoint import INVALID_QUERY, Endpoint
from gateway.api.openapi import Answer, Query

# -- HL7 feeds (issue 13, gateway/hl7/): ids and states only; /raw needs phi (audited) --
_HL7_ID = "{id:[A-Za-z0-9_]{1,64}}"  # hl7_<hex>; unknown ids answer 404
_HL7_OUT_ID = "{id:[A-Za-z0-9_]{1,64}}"  # hlo_<hex>
_NO_HL7 = Answer(404, "`not_found`: no HL7 message with this id")
_HL7_LIMIT = Query(
    "limit",
    "at most this many, 1 to 500",
    {"type": "integer", "minimum": 1, "maximum": 500, "default": 100},
)
HL7_ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "GET",
        "/api/v1/hl7/interfaces",
        hl7_api.get_interfaces,
        "read",
        "HL7 interfaces with message counts per state (inbound) or per outbound state",
        None,
        hl7_api.InterfaceList,
    ),
    Endpoint(
        "GET",
        "/api/v1/hl7/messages",
        hl7_api.get_messages,
        "read",
        "Stored inbound HL7 messages, newest first: ids, type, state and reason, no content",
        None,
        hl7_api.MessageList,
        query=(
            Query(
                "state",
                "only messages in this state (quarantined: the ones to look at)",
                {"type": "string", "enum": ["mapped", "ignored", "quarantined", "rejected"]},
            ),
            Query("interface", "only this inbound interface"),
            _HL7_LIMIT,
        ),
        answers=(INVALID_QUERY,),
    ),
    Endpoint(
        "GET",
        f"/api/v1/hl7/messages/{_HL7_ID}",
        hl7_api.get_message,
        "read",
        "One stored HL7 message (no content)",
        None,
        hl7_api.MessageView,
        answers=(_NO_HL7,),
    ),
    Endpoint(
        "POST",
        f"/api/v1/hl7/messages/{_HL7_ID}/reprocess",
        hl7_api.reprocess,
        "admin",
        "Map a quarantined message again with the interface's current profile (audited)",
        None,
        hl7_api.Reprocessed,
        answers=(_NO_HL7, Answer(409, "`not_quarantined`: only a quarantined message")),
    ),
    Endpoint(
        "GET",
        f"/api/v1/hl7/messages/{_HL7_ID}/raw",
        hl7_api.get_raw,
        "read",
        "The message as received (PHI: needs the 'phi' scope as well; every read audited)",
        None,
        hl7_api.RawMessage,
        answers=(_NO_HL7, Answer(403, "`forbidden`: needs the 'phi' scope")),
    ),
    Endpoint(
        "GET",
        "/api/v1/hl7/outbound",
        hl7_api.get_outbound,
        "read",
        "HL7 write-back messages queued for an EHR, with attempts and the last ACK code",
        None,
        hl7_api.OutboundList,
        query=(
            Query(
                "state",
                "only messages in this state (parked: the ones staff must look at)",
                {"type": "string", "enum": ["pending", "acked", "parked", "cancelled"]},
            ),
            _HL7_LIMIT,
        ),
        answers=(INVALID_QUERY,),
    ),
    Endpoint(
        "POST",
        f"/api/v1/hl7/outbound/{_HL7_OUT_ID}/resend",
        hl7_api.resend,
        "admin",
        "Send a parked write-back message again, attempts counted afresh (audited)",
        answers=(
            Answer(404, "`not_found`: no HL7 outbound message with this id"),
            Answer(409, "`not_parked`: the message is not parked"),
        ),
    ),
)
