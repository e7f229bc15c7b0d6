"""`[hl7]` and `[[hl7.interfaces]]`: the MLLP feeds (inbound) and the EHRs replies are
written back to (outbound). Each inbound interface carries its wire settings and the
`InterfaceProfile` keys its mappers read. Checked at load (`problems`), so a bad value
stops start-up naming its key."""

from __future__ import annotations

import ipaddress
import zoneinfo
from typing import Annotated, Literal

import msgspec

from gateway.clinical.profile import InterfaceProfile, TimingSource
from gateway.hl7.charset import codec_for
from gateway.hl7.framing import DEFAULT_MAX_SIZE

Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
Positive = Annotated[float, msgspec.Meta(gt=0)]


class Hl7Interface(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: Name
    direction: Literal["in", "out"] = "in"
    # -- inbound (direction = "in"): the listener ---------------------------------------
    listen: str = "127.0.0.1:2575"
    tls_cert_file: str | None = None  # both: the listener speaks TLS
    tls_key_file: str | None = None
    allowed_peers: tuple[str, ...] = ()  # IPs or networks; empty: any peer
    charset: str = "utf-8"  # when MSH-18 is empty: a table-0211 value or a codec name
    lenient: bool = False  # accept LF segment ends and an EB with no CR
    r2_commit: bool = False  # MLLP Release 2: commit blocks instead of HL7 ACKs
    on_mapping_error: Literal["reject", "accept_quarantine"] = "reject"
    ack_mode_override: Literal["original", "enhanced"] | None = None
    max_frame_bytes: Annotated[int, msgspec.Meta(ge=1024)] = DEFAULT_MAX_SIZE
    idle_timeout: Positive = 300.0
    # -- the profile (gateway.clinical.profile.InterfaceProfile) --------------------------
    timing_source: Literal["tq1", "sch11", "ais"] = "tq1"
    phone_fields: tuple[str, ...] = ("PID-13", "PID-14")
    phone_uses: tuple[str, ...] = ("PRN", "ORN", "NET")
    phone_equipment: tuple[str, ...] = ("CP",)
    accept_untyped_phone: bool = False
    mrn_authority: str | None = None
    time_zone: str = "UTC"
    processing_ids: tuple[Literal["P", "T", "D"], ...] = ("P",)
    cancel_debounce: Annotated[float, msgspec.Meta(ge=0)] = 300.0
    default_language: str = "en"
    region: str = "US"
    writeback: str | None = None  # an outbound interface's name
    writeback_message: Literal["siu_s14", "srm_s03", "srm_s04"] = "siu_s14"
    # the appointments' choices (gateway/appointments/settings.py reads them as `extra`)
    appointment_key: Literal["filler", "placer"] = "filler"  # SCH-2 or SCH-1
    notify_cancellation: bool = True
    rebook_window_days: Annotated[float, msgspec.Meta(gt=0, le=366)] = 30.0
    # -- outbound (direction = "out"): the MLLP client ----------------------------------
    host: str = ""
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    tls: bool = False
    tls_ca_file: str | None = None  # trust this CA (else the system's)
    ack_timeout: Positive = 30.0
    retries: Annotated[int, msgspec.Meta(ge=0)] = 10  # attempts after the first, then parked
    backoff_initial: Positive = 5.0
    backoff_max: Positive = 600.0

    def profile(self) -> InterfaceProfile:
        return InterfaceProfile(
            self.name,
            timing_source=TimingSource(self.timing_source),
            phone_fields=self.phone_fields,
            phone_uses=frozenset(self.phone_uses),
            phone_equipment=frozenset(self.phone_equipment),
            accept_untyped_phone=self.accept_untyped_phone,
            mrn_authority=self.mrn_authority,
            time_zone=self.time_zone,
            processing_ids=frozenset(self.processing_ids),
            cancel_debounce=self.cancel_debounce,
            default_language=self.default_language,
            region=self.region,
            writeback=self.writeback,
            writeback_message=self.writeback_message,
            extra={
                "appointment_key": self.appointment_key,
                "notify_cancellation": "true" if self.notify_cancellation else "false",
                "rebook_window_days": repr(self.rebook_window_days),
            },
        )

    @property
    def codec(self) -> str:
        return codec_for(self.charset) or "utf-8"


class Hl7Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    interfaces: tuple[Hl7Interface, ...] = ()

    def inbound(self) -> list[Hl7Interface]:
        return [i for i in self.interfaces if i.direction == "in"]

    def outbound(self) -> list[Hl7Interface]:
        return [i for i in self.interfaces if i.direction == "out"]

    def interface(self, name: str) -> Hl7Interface | None:
        return next((i for i in self.interfaces if i.name == name), None)

    def problems(self) -> str | None:
        """The first bad key, as `hl7.interfaces[i].key: problem`."""
        from gateway.config import listen_problem  # no import cycle at load

        names: list[str] = []
        for n, i in enumerate(self.interfaces):
            where = f"hl7.interfaces[{n}]"
            if i.name in names:
                return f"{where}.name: duplicate interface name {i.name!r}"
            names.append(i.name)
            if problem := _common_problem(i):
                return f"{where}.{problem}"
            if i.direction == "in":
                if problem := listen_problem(i.listen):
                    return f"{where}.listen: {problem}"
                if (i.tls_cert_file is None) != (i.tls_key_file is None):
                    return f"{where}.tls_key_file: TLS needs both tls_cert_file and tls_key_file"
            else:
                if not i.host or not i.port:
                    return f"{where}.host: an outbound interface needs host and port"
                if i.backoff_initial > i.backoff_max:
                    return f"{where}.backoff_initial: must not exceed backoff_max"
        for n, i in enumerate(self.interfaces):
            if i.writeback is not None:
                target = self.interface(i.writeback)
                if target is None or target.direction != "out":
                    return (
                        f"hl7.interfaces[{n}].writeback: {i.writeback!r} is not the name of"
                        ' an outbound interface (direction = "out")'
                    )
        return None


def _common_problem(i: Hl7Interface) -> str | None:
    for k, peer in enumerate(i.allowed_peers):
        try:
            ipaddress.ip_network(peer, strict=False)
        except ValueError:
            return f"allowed_peers[{k}]: not an IP address or network"
    if codec_for(i.charset) is None:
        return 'charset: not a character set (e.g. "8859/1", "UNICODE UTF-8", "utf-8")'
    try:
        zoneinfo.ZoneInfo(i.time_zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return 'time_zone: not an IANA time zone (e.g. "America/New_York")'
    for k, f in enumerate(i.phone_fields):
        if f not in ("PID-13", "PID-14", "NK1-5"):
            return f'phone_fields[{k}]: one of "PID-13", "PID-14", "NK1-5"'
    return None


# The embedded default's feed (`make run`): the shared sample files are accepted as
# sent (`smsgw hl7 send tests/data/hl7v2-samples/SIU-S12-01.hl7`), training messages
# included, numbers with no equipment type taken as mobiles.
DEMO_PORT = 2575
DEMO_INTERFACE: dict[str, object] = {
    "name": "demo-ehr",
    "listen": f"127.0.0.1:{DEMO_PORT}",
    "processing_ids": ["P", "T", "D"],
    "accept_untyped_phone": True,
    "lenient": True,
    "writeback": "demo-ehr-out",
}
# Where the demo feed's replies (C, R, N) are written back as SIU^S14: whatever listens
# there, e.g. `smsgw hl7 listen`; with nothing there they are retried, then parked.
DEMO_WRITEBACK_PORT = 2576
DEMO_OUTBOUND: dict[str, object] = {
    "name": "demo-ehr-out",
    "direction": "out",
    "host": "127.0.0.1",
    "port": DEMO_WRITEBACK_PORT,
    "backoff_initial": 1.0,
    "backoff_max": 30.0,
}
