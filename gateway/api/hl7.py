"""`/api/v1/hl7/...`: the HL7 feeds' counters, the stored messages (quarantine),
reprocess, the audited raw reveal, and the parked write-backs with their re-send.

Handlers translate to `gw.hl7` (`gateway.hl7.service`) and back. Nothing here shows a
message's content except `/raw`, which needs the `phi` scope and is audited.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from aiohttp import web

from gateway.api.handlers import AUTH_RECORD
from gateway.errors import ApiError
from gateway.hl7 import messages_sql
from gateway.hl7.service import Hl7Service
from gateway.usecases import Caller
from gateway.web.context import gateway_of, json_response
from gateway.web.formats import iso as iso_ms

MessageState = Literal["mapped", "ignored", "quarantined", "rejected"]
OutboundStateName = Literal["pending", "acked", "parked", "cancelled"]
MAX_LIST = 500


class InterfaceView(msgspec.Struct, frozen=True):
    name: str
    direction: Literal["in", "out"]
    address: str
    counters: dict[str, int]


class InterfaceList(msgspec.Struct, frozen=True):
    interfaces: list[InterfaceView]


class MessageView(msgspec.Struct, frozen=True):
    """A stored HL7 message: ids, type, state and reason; never its content."""

    id: str
    interface: str
    sending_application: str
    sending_facility: str
    control_id: str
    message_type: str
    trigger_event: str
    version: str
    state: MessageState
    error_code: int | None
    error_text: str | None
    error_location: str | None
    ack_code: str | None
    charset: str
    charset_flag: str | None
    duplicates: int
    reprocessed: int
    received_at: str
    updated_at: str


class MessageList(msgspec.Struct, frozen=True):
    messages: list[MessageView]


class Reprocessed(msgspec.Struct, frozen=True):
    id: str
    state: MessageState


class RawMessage(msgspec.Struct, frozen=True):
    id: str
    message: str  # segments separated by CR, as received (after charset decoding)


class OutboundView(msgspec.Struct, frozen=True):
    id: str
    interface: str
    control_id: str
    kind: str
    state: OutboundStateName
    attempts: int
    ack_code: str | None
    last_error: str | None
    updated_at: str
    # An attempt's fate was unknown (no ACK came, or its sender died mid-attempt): the
    # EHR may have it twice, with one control id.
    possible_duplicate: bool = False


class OutboundList(msgspec.Struct, frozen=True):
    messages: list[OutboundView]


def _caller(request: web.Request) -> Caller:
    return Caller.for_token(request[AUTH_RECORD])


def _service(request: web.Request) -> Hl7Service:
    hl7 = gateway_of(request).hl7
    if hl7 is None:
        raise ApiError(503, "not_ready", "the HL7 feeds are not running")
    return hl7


def _choice(request: web.Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.query.get(name)
    if value is None:
        return None
    if value not in allowed:
        raise ApiError(
            400, "invalid_query", f"{name}: expected one of {', '.join(allowed)}", field=name
        )
    return value


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIST:
        raise ApiError(400, "invalid_query", f"limit: 1 to {MAX_LIST}", field="limit")
    return int(raw)


def _message_view(m: messages_sql.Listed) -> MessageView:
    return MessageView(
        m.id,
        m.interface,
        m.sending_app,
        m.sending_facility,
        m.control_id,
        m.msg_type,
        m.event,
        m.version,
        m.state,  # type: ignore[arg-type]  # the table's CHECK keeps it one of these
        m.error_code,
        m.error_text,
        m.error_location,
        m.ack_code,
        m.charset,
        m.charset_flag,
        m.duplicates,
        m.reprocessed,
        iso_ms(m.received_at) or "",
        iso_ms(m.updated_at) or "",
    )


async def get_interfaces(request: web.Request) -> web.Response:
    rows = await _service(request).interfaces()
    views = [
        InterfaceView(r.name, "in" if r.direction == "in" else "out", r.address, r.counters)
        for r in rows
    ]
    return json_response(InterfaceList(views))


async def get_messages(request: web.Request) -> web.Response:
    state = _choice(request, "state", messages_sql.STATES)
    names = tuple(i.name for i in gateway_of(request).config.hl7.inbound())
    interface = _choice(request, "interface", names) if names else None
    found = await _service(request).messages(state, interface, _limit(request))
    return json_response(MessageList([_message_view(m) for m in found]))


async def get_message(request: web.Request) -> web.Response:
    found = await _service(request).message(request.match_info["id"])
    if found is None:
        raise ApiError(404, "not_found", "no HL7 message with this id")
    return json_response(_message_view(found))


async def reprocess(request: web.Request) -> web.Response:
    service, row_id = _service(request), request.match_info["id"]
    found = await service.message(row_id)
    if found is None:
        raise ApiError(404, "not_found", "no HL7 message with this id")
    state = await service.reprocess(row_id, _caller(request))
    if state is None:
        raise ApiError(409, "not_quarantined", "only a quarantined message is reprocessed")
    return json_response(Reprocessed(row_id, state))  # type: ignore[arg-type]  # a state


async def get_raw(request: web.Request) -> web.Response:
    row_id = request.match_info["id"]
    text = await _service(request).raw(row_id, _caller(request))
    if text is None:
        raise ApiError(404, "not_found", "no HL7 message with this id")
    return json_response(RawMessage(row_id, text))


async def get_outbound(request: web.Request) -> web.Response:
    state = _choice(request, "state", ("pending", "acked", "parked", "cancelled"))
    rows = await _service(request).outbound(state, _limit(request))
    return json_response(
        OutboundList(
            [
                OutboundView(
                    r.id,
                    r.interface,
                    r.control_id,
                    r.kind,
                    r.state,  # type: ignore[arg-type]  # the table's CHECK
                    r.attempts,
                    r.ack_code,
                    r.last_error,
                    iso_ms(r.updated_at) or "",
                    r.possible_duplicate,
                )
                for r in rows
            ]
        )
    )


async def resend(request: web.Request) -> web.Response:
    row_id, service = request.match_info["id"], _service(request)
    if not await service.outbound_exists(row_id):
        raise ApiError(404, "not_found", "no HL7 outbound message with this id")
    if not await service.resend(row_id, _caller(request)):
        raise ApiError(409, "not_parked", "only a parked message is re-sent")
    return json_response({"id": row_id, "state": "pending"})
