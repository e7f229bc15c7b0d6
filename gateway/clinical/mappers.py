"""Which mapper reads which message: routed by MSH-9 (type and trigger event), never by
EVN-1 (research §I: ADT-A08-01 must route by MSH-9).

A part registers its mappers with `@maps("SIU", "S12", "S13")`; `load()` imports
every module that registers some, so a listener needs only `mapper_for`. A mapper
that reads segments by name only (not by their grouping) may declare what it reads,
`segments={"SCH": (1, 2, 11), "PID": (3, 15), "NTE": None}` (field numbers, or None
for the whole segment): the pipeline then hands python-hl7 just those fields of just
those segments (with MSH whole and the profile's phone fields), the rest emptied in
place, as python-hl7 builds a container for every component of what it is given.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Mapping, Sequence

import hl7

from gateway.clinical.commands import Command
from gateway.clinical.profile import InterfaceProfile

Mapper = Callable[[hl7.Message, InterfaceProfile], Sequence[Command]]

_MAPPERS: dict[tuple[str, str], Mapper] = {}
# Segment name -> the field numbers a mapper reads (None: every field).
Reads = Mapping[str, frozenset[int] | None]
_SEGMENTS: dict[tuple[str, str], Reads] = {}

# The modules that register mappers; each part adds its own line.
MAPPER_MODULES: tuple[str, ...] = (
    "gateway.appointments.siu",
    "gateway.appointments.adt",
    "gateway.results.mapper",  # ORU^R01 (i13-results)
    "gateway.medication.mapper",  # RDE^O11/O25, RDS^O13 (i13-results)
)


def maps(
    message_type: str, *events: str, segments: Mapping[str, Collection[int] | None] | None = None
) -> Callable[[Mapper], Mapper]:
    reads = None
    if segments is not None:
        reads = {k: None if v is None else frozenset(v) for k, v in segments.items()}

    def register(fn: Mapper) -> Mapper:
        for event in events:
            key = (message_type, event)
            if key in _MAPPERS and _MAPPERS[key] is not fn:
                raise RuntimeError(f"two mappers for {message_type}^{event}")
            _MAPPERS[key] = fn
            if reads is not None:
                _SEGMENTS[key] = reads
        return fn

    return register


def load() -> None:
    for name in MAPPER_MODULES:
        importlib.import_module(name)


def mapper_for(message_type: str, event: str) -> Mapper | None:
    """The mapper for MSH-9.1 / MSH-9.2, or None (answered as an unsupported event)."""
    return _MAPPERS.get((message_type, event))


def segments_for(message_type: str, event: str) -> Reads | None:
    """What the mapper for MSH-9 declared it reads, or None (the whole message)."""
    return _SEGMENTS.get((message_type, event))


def supported() -> list[tuple[str, str]]:
    return sorted(_MAPPERS)
