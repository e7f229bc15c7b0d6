"""Driver type names → implementing classes, imported only when a route uses them."""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import msgspec

from drivers.base import Driver, EventSink
from drivers.clock import Clock

DRIVERS: dict[str, str] = {
    "loopback": "drivers.loopback:LoopbackDriver",
    "modem": "drivers.modem.bank:ModemBankDriver",
    "smpp": "drivers.smpp.driver:SmppDriver",
}


class DriverFactory(Protocol):
    """What a driver class offers: its options type and a constructor."""

    Options: type[msgspec.Struct]

    def __call__(self, name: str, options: Any, sink: EventSink, clock: Clock) -> Driver: ...


class UnknownDriver(LookupError):
    pass


def driver_types() -> tuple[str, ...]:
    return tuple(sorted(DRIVERS))


def load_driver(type_name: str) -> DriverFactory:
    try:
        target = DRIVERS[type_name]
    except KeyError:
        known = ", ".join(driver_types())
        raise UnknownDriver(f"unknown route type {type_name!r} (known: {known})") from None
    module_name, _, attr = target.partition(":")
    factory: DriverFactory = getattr(importlib.import_module(module_name), attr)
    return factory
