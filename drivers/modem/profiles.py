"""What the emulator knows about real modem models: identity strings, boot and periodic
unsolicited result codes, and the quirks their AT manuals (and the field) show.

Profiles are data; `drivers.modem.emulator` reads them. Add a model by adding an entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["PROFILES", "ModemProfile", "PeriodicUrc"]

IccidCommand = Literal["+CCID", "+QCCID", "^ICCID", "+CICCID"]


@dataclass(frozen=True, slots=True)
class PeriodicUrc:
    """An unsolicited line sent every `interval` seconds; `{signal}` is the CSQ rssi."""

    text: str
    interval: float


@dataclass(frozen=True, slots=True)
class ModemProfile:
    manufacturer: str  # AT+CGMI
    model: str  # AT+CGMM
    revision: str  # AT+CGMR (as the model prints it, prefix included)
    # Lines the modem sends once its AT port is up, in order; "{cpin}" becomes the SIM
    # state ("READY", "SIM PIN", "SIM PUK").
    boot_urcs: tuple[str, ...]
    periodic_urcs: tuple[PeriodicUrc, ...] = ()
    iccid_commands: tuple[IccidCommand, ...] = ("+CCID",)
    # AT+CFUN=1,1 re-enumerates the USB device: the port vanishes for `reset_seconds`.
    # Otherwise the port stays and the boot lines come again after `reset_seconds`.
    reset_drops_port: bool = True
    reset_seconds: float = 5.0
    # AT+CMGR on an empty slot answers OK with no +CMGR line instead of +CMS ERROR: 321.
    empty_read_ok: bool = False
    storage_sizes: dict[str, int] = field(default_factory=lambda: {"SM": 30, "ME": 100})
    extra_commands: tuple[str, ...] = ()  # vendor commands this model answers
    # AT+CPIN? gives its +CPIN line and no final result (no OK).
    cpin_read_without_ok: bool = False


PROFILES: dict[str, ModemProfile] = {
    # Huawei E3372 (stick mode, firmware 21.180): no RDY line; reports SIM and service
    # state with ^SIMST/^SRVST at boot and pushes ^RSSI and ^BOOT on its own until
    # AT^CURC=0 turns them off. ^SYSINFO gives service and SIM state in one line.
    "huawei-e3372": ModemProfile(
        manufacturer="huawei",
        model="E3372",
        revision="21.180.01.00.00",
        boot_urcs=("^SIMST: 1", "^SRVST: 2"),
        periodic_urcs=(
            PeriodicUrc("^RSSI: {signal}", 20.0),
            PeriodicUrc("^BOOT:25312354,0,0,0,75", 30.0),
        ),
        iccid_commands=("^ICCID",),
        reset_drops_port=True,
        extra_commands=("^SYSINFO", "^CURC"),
    ),
    # Quectel EC25 (EC25EFAR06A06M4G): RDY once the AT port is up, then +CFUN, +CPIN,
    # +QUSIM and +QIND "SMS DONE"/"PB DONE" once the SIM's phonebook and SMS are loaded.
    # AT+QCFG holds vendor settings; AT+QCCID and AT+CCID both give the ICCID.
    "quectel-ec25": ModemProfile(
        manufacturer="Quectel",
        model="EC25",
        revision="EC25EFAR06A06M4G",
        boot_urcs=(
            "RDY",
            "+CFUN: 1",
            "+CPIN: {cpin}",
            "+QUSIM: 1",
            "+QIND: SMS DONE",
            "+QIND: PB DONE",
        ),
        iccid_commands=("+QCCID", "+CCID"),
        reset_drops_port=True,
        extra_commands=("+QCFG", "+QURCCFG"),
    ),
    # SIMCom SIM7600E-H (LE20B04SIM7600M22): *ATREADY when the AT port is up, then
    # +CPIN, "SMS DONE" and "PB DONE". AT+CGMR answers with a "+CGMR: " prefix; the
    # ICCID is AT+CICCID ("+ICCID: ..."). AT+CFUN=1,1 keeps the USB port on this
    # firmware; AT+CMGR of an empty slot answers a bare OK.
    "simcom-sim7600": ModemProfile(
        manufacturer="SIMCOM INCORPORATED",
        model="SIMCOM_SIM7600E-H",
        revision="+CGMR: LE20B04SIM7600M22",
        boot_urcs=("*ATREADY: 1", "+CPIN: {cpin}", "SMS DONE", "PB DONE"),
        iccid_commands=("+CICCID", "+CCID"),
        reset_drops_port=False,
        reset_seconds=3.0,
        empty_read_ok=True,
    ),
    # Wavecom Fastrack M1306B (firmware R7.43, a serial modem: AT+CFUN=1,1 keeps the
    # port): +WIND lines at boot (3 product ready, 1 SIM inserted, 4 ready for AT
    # commands) and for calls and the SIM later on; AT+CPIN? answers "+CPIN: READY"
    # without the OK that should end it.
    "wavecom-fastrack": ModemProfile(
        manufacturer="WAVECOM MODEM",
        model="MULTIBAND  900E  1800",
        revision="R7.43.0.201003231718.FXT002 1966548 032310 17:18",
        boot_urcs=("+WIND: 3", "+WIND: 1", "+WIND: 4"),
        iccid_commands=("+CCID",),
        reset_drops_port=False,
        reset_seconds=3.0,
        cpin_read_without_ok=True,
    ),
}
