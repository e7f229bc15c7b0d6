"""`[[hl7.interfaces]]`: the example file's documented keys load as written, and bad
values stop start-up naming the key."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway.clinical.profile import TimingSource
from gateway.config import ConfigError, embedded_default, from_mapping

EXAMPLE = Path(__file__).parent.parent / "config" / "smsgw.example.toml"


def _example_hl7() -> dict[str, Any]:
    """The commented [[hl7.interfaces]] tables of the example, uncommented."""
    text = EXAMPLE.read_text()
    start = text.index("# [[hl7.interfaces]]")
    end = text.index("[demo]")
    lines = [re.sub(r"^# ?", "", ln) for ln in text[start:end].splitlines()]
    lines = [ln for ln in lines if not ln.lstrip().startswith("#")]
    return tomllib.loads("\n".join(lines))


def test_the_documented_keys_load_and_make_the_profile() -> None:
    raw = _example_hl7()
    config = from_mapping(raw)
    inbound, out = config.hl7.interfaces
    assert inbound.name == "cadence" and out.direction == "out"
    profile = inbound.profile()
    assert profile.timing_source is TimingSource.TQ1 and profile.writeback == "cadence-out"
    assert profile.time_zone == "America/New_York" and profile.mrn_authority == "HOSP"
    assert inbound.codec == "latin-1"


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"charset": "klingon"}, "hl7.interfaces[0].charset"),
        ({"time_zone": "Mars/Base"}, "hl7.interfaces[0].time_zone"),
        ({"allowed_peers": ["10.0.0.0/33"]}, "hl7.interfaces[0].allowed_peers[0]"),
        ({"listen": "2575"}, "hl7.interfaces[0].listen"),
        ({"writeback": "nowhere"}, "hl7.interfaces[0].writeback"),
        ({"on_mapping_error": "drop"}, "hl7.interfaces[0].on_mapping_error"),
        ({"processing_ids": ["X"]}, "hl7.interfaces[0].processing_ids"),
        ({"phone_fields": ["PID-99"]}, "hl7.interfaces[0].phone_fields[0]"),
        ({"tls_key_file": None}, "hl7.interfaces[0].tls_key_file"),
        ({"max_frame_bytes": 10}, "hl7.interfaces[0].max_frame_bytes"),
        ({"surprise": 1}, "hl7.interfaces[0]"),
    ],
)
def test_a_bad_value_names_its_key(change: dict[str, Any], key: str) -> None:
    raw = _example_hl7()
    raw["hl7"]["interfaces"][0].update(change)
    with pytest.raises(ConfigError) as e:
        from_mapping(raw)
    assert str(e.value).startswith(key), str(e.value)


def test_an_outbound_interface_needs_its_peer_and_names_are_unique() -> None:
    out = {"name": "o", "direction": "out"}
    with pytest.raises(ConfigError, match=r"^hl7.interfaces\[0\].host"):
        from_mapping({"hl7": {"interfaces": [out]}})
    twice = [{"name": "a"}, {"name": "a", "listen": "127.0.0.1:2576"}]
    with pytest.raises(ConfigError, match=r"^hl7.interfaces\[1\].name"):
        from_mapping({"hl7": {"interfaces": twice}})


def test_the_embedded_default_has_its_demo_feed() -> None:
    demo, out = embedded_default().hl7.interfaces
    assert demo.listen == "127.0.0.1:2575" and "T" in demo.processing_ids
    assert demo.writeback == out.name == "demo-ehr-out" and out.direction == "out"
    assert (out.host, out.port) == ("127.0.0.1", 2576)  # `smsgw hl7 listen`'s default
