"""The embedded default's simulated peers, and what a newcomer may do to them.

`make run` (no config file) starts an SMSC simulator and two emulated modems in
process. So that a newcomer can see inbound messages and a failover without hardware,
the API offers a few `/api/v1/demo/...` calls (admin scope) that act on these peers:
inject a mobile-originated message, cut the carrier's SMPP links, unplug or replug an
emulated modem, move the gateway's clock forward (to see reminders due tomorrow). A
config file runs them only with `[demo] peers = true` (their routes added after its
own); otherwise these calls answer 404 `demo_off`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec

from drivers.text import is_gsm7

if TYPE_CHECKING:
    from drivers.clock import AdjustableClock
    from drivers.modem.emulator import EmulatedModem
    from drivers.smpp.simulator import SmscSimulator

DEMO_RECIPIENT = "4000"  # the short code the simulated carrier delivers MO messages to
EMBEDDED_MODEM_PROFILES = ("quectel-ec25", "huawei-e3372")


def embedded_modems(link_dir: Path) -> list[EmulatedModem]:
    """The embedded default's bank: two emulated modems, a second per part as a demo (a
    real modem takes about three). Each port is a link in `link_dir` (`modem-<n>`), the
    way udev names a real one under /dev/serial/by-id/: unplugging removes it, a replug
    re-points it. The pty's own name (/dev/pts/N) must not be the driver's port: the
    kernel hands a freed N to the next pty opened on the machine, and a driver reopening
    it after an unplug would send through whatever that is."""
    from drivers.modem.emulator import EmulatedModem

    link_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return [
        EmulatedModem(
            profile,
            link_path=link_dir / f"modem-{i}",
            imei=f"35209900176{i:04d}",
            imsi=f"00101000000{i:04d}",
            iccid=f"898821100000{i:07d}",
            signal=21 - 4 * i,
            send_latency=1.0,
            report_delay=2.0,
        )
        for i, profile in enumerate(EMBEDDED_MODEM_PROFILES, start=1)
    ]


class DemoInbound(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A message a simulated handset sends to the gateway."""

    sender: Annotated[str, msgspec.Meta(pattern=r"^\+[1-9][0-9]{6,14}$")]
    body: Annotated[str, msgspec.Meta(min_length=1, max_length=1600)]
    via: Literal["smsc", "modem"] = "smsc"
    parts: Annotated[int, msgspec.Meta(ge=1, le=8)] = 1


MAX_ADVANCE = 90 * 86400.0  # one call moves the demo clock at most 90 days


class DemoAdvance(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How far to move the demo's clock forward (seconds; it never goes back)."""

    seconds: Annotated[float, msgspec.Meta(gt=0, le=MAX_ADVANCE)]


class UnknownPeer(LookupError):
    pass


@dataclass
class DemoPeers:
    smsc: SmscSimulator | None = None
    modems: list[EmulatedModem] = field(default_factory=list)
    clock: AdjustableClock | None = None

    def advance_clock(self, seconds: float) -> float:
        """Move the gateway's clock forward; returns the total offset from real time."""
        if self.clock is None:
            raise UnknownPeer("this gateway runs on the real clock")
        self.clock.advance(seconds)
        return self.clock.offset

    def inject_inbound(self, request: DemoInbound) -> None:
        if request.via == "smsc":
            if self.smsc is None:
                raise UnknownPeer("no simulated SMSC is running")
            self.smsc.inject_mo(request.sender, DEMO_RECIPIENT, request.body, parts=request.parts)
            return
        if not self.modems:
            raise UnknownPeer("no emulated modem is running")
        encoding: Literal["gsm7", "ucs2"] = "gsm7" if is_gsm7(request.body) else "ucs2"
        self.modems[0].inject_inbound(
            request.sender, request.body, encoding=encoding, parts=request.parts
        )

    def counts(self) -> dict[str, object]:
        """What the simulated peers took in, to hold the gateway's figures against: the
        SMSC's submit_sm PDUs (throttled ones too) and each modem's SMS-SUBMITs, one per
        part, with the receipts each sent back. Counts only: no number, no text."""
        smsc = self.smsc
        return {
            "smsc": None if smsc is None else {
                "submits": smsc.submits, "throttled": smsc.throttled,
                "receipts": smsc.receipts_sent, "mo_sent": smsc.mo_sent,
            },
            "modems": [{"submits": len(m.sent), "receipts": m.reports_sent} for m in self.modems],
        }  # fmt: skip

    def drop_smsc_links(self) -> None:
        """Cut every SMPP connection to the simulated carrier, mid-window, as a carrier's
        network does: in-flight submits come back as possible duplicates, nothing is
        lost, and the route reconnects."""
        if self.smsc is None:
            raise UnknownPeer("no simulated SMSC is running")
        self.smsc.drop_connections()

    def modem(self, index: int) -> EmulatedModem:
        if not 0 <= index < len(self.modems):
            raise UnknownPeer(f"no emulated modem {index} (there are {len(self.modems)})")
        return self.modems[index]

    async def aclose(self) -> None:
        if self.smsc is not None:
            await self.smsc.aclose()
        for modem in self.modems:
            await modem.aclose()
