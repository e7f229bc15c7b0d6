"""The shared HL7 v2 sample messages (Microsoft FHIR-Converter, MIT; see
tests/data/hl7v2-samples/LICENSE) and a parser that takes their LF line endings."""

from __future__ import annotations

from pathlib import Path

import hl7

SAMPLES = Path(__file__).resolve().parent / "data" / "hl7v2-samples"


def names() -> list[str]:
    return sorted(p.name for p in SAMPLES.glob("*.hl7"))


def text(name: str) -> str:
    """The sample as HL7 text: BOM dropped, segments separated by CR."""
    raw = (SAMPLES / name).read_bytes().decode("utf-8").lstrip("\ufeff")
    return raw.replace("\r\n", "\r").replace("\n", "\r").rstrip("\r") + "\r"


def parse(message: str) -> hl7.Message:
    return hl7.parse(message.lstrip("\ufeff").replace("\r\n", "\r").replace("\n", "\r"))


def sample(name: str) -> hl7.Message:
    return parse(text(name))
