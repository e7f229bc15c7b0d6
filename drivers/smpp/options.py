"""Options of an SMPP route (`type = "smpp"`, see config/smsgw.example.toml)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

Positive = Annotated[float, msgspec.Meta(gt=0)]
Octet = Annotated[int, msgspec.Meta(ge=0, le=255)]


class SmppOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Options of a `type = "smpp"` route (see config/smsgw.example.toml)."""

    host: str
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 2775
    system_id: str
    password_file: str | None = None
    password_credential: str | None = None
    password: str | None = None
    system_type: str = ""
    bind: Literal["transceiver", "transmitter+receiver"] = "transceiver"
    binds: Annotated[int, msgspec.Meta(ge=1, le=16)] = 1
    tls: bool = False
    tls_ca_file: str | None = None
    source_addr: str = ""
    source_addr_ton: Octet = 0
    source_addr_npi: Octet = 0
    dest_addr_ton: Octet = 1
    dest_addr_npi: Octet = 1
    gsm_coding: Literal[0, 3] = 0
    long_messages: Literal["udh", "sar", "payload"] = "udh"
    ref_bits: Literal[8, 16] = 8
    session_window: Annotated[int, msgspec.Meta(ge=1)] = 10
    enquire_link_interval: Positive = 30.0
    response_timeout: Positive = 30.0
    bind_timeout: Positive = 30.0
    inactivity_timeout: Positive = 300.0
    reconnect_min: Positive = 1.0
    reconnect_max: Positive = 60.0
    throttle_min: Positive = 0.1
    throttle_max: Positive = 30.0
    status_classes: dict[str, Literal["transient", "permanent", "throttle"]] = {}

    def overrides(self) -> dict[int, str]:
        return {int(k, 0): v for k, v in self.status_classes.items()}
