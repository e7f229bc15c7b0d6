"""Options of a `type = "modem"` route: the bank's timers and one table per modem."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

Positive = Annotated[float, msgspec.Meta(gt=0)]
Count = Annotated[int, msgspec.Meta(ge=1)]
Limit = Annotated[int, msgspec.Meta(ge=0)]


class ModemOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One modem of the bank (see config/smsgw.example.toml).

    `port` is best a `/dev/serial/by-id/...` path, which survives re-enumeration; any
    tty works. The PIN comes from `pin_file` or the systemd credential
    `pin_credential`, is tried once, and is never logged. `per_minute`, `per_day` and
    `per_month` cap the parts this SIM sends (its plan); a modem over a cap is parked
    until the cap resets. `profile` names the model when its quirks matter.
    """

    name: str
    port: str
    baud: Annotated[int, msgspec.Meta(ge=300, le=4_000_000)] = 115200
    pin_file: str | None = None
    pin_credential: str | None = None
    per_minute: Limit | None = None
    per_day: Limit | None = None
    per_month: Limit | None = None
    profile: str | None = None
    storage: Literal["SM", "ME", "MT"] = "SM"


class ModemBankOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Options of a `type = "modem"` route: its modems and the timers they share."""

    modems: Annotated[tuple[ModemOptions, ...], msgspec.Meta(min_length=1)]
    command_timeout: Positive = 10.0
    send_timeout: Positive = 60.0
    probe_interval: Positive = 30.0
    hang_limit: Count = 2
    failure_limit: Count = 3
    drain_seconds: Positive = 300.0
    reopen_min: Positive = 1.0
    reopen_max: Positive = 30.0
    sim_busy_retries: Count = 10
    sim_busy_delay: Positive = 2.0
    cnmi: str = "2,1,0,2,0"
    rescan_interval: Positive = 60.0
    validity_minutes: Annotated[int, msgspec.Meta(ge=5, le=635040)] | None = None

    def __post_init__(self) -> None:
        for what in ("name", "port"):
            values = [getattr(m, what) for m in self.modems]
            if len(set(values)) != len(values):
                raise ValueError(f"two modems of the bank have the same {what}")
