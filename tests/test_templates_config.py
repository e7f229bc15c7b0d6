"""`[templates]` keys: checked at load, with errors that name the key."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, from_mapping


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"default_language": "Spanish"}, "templates.default_language:"),
        ({"time_zone": "Mars/Olympus"}, "templates.time_zone:"),
        ({"values": {"Clinic": "Mercy"}}, "templates.values.Clinic:"),
        ({"values": {"clinic": " "}}, "templates.values.clinic: 1 to 160"),
        ({"allow_drug_names": "yes"}, "templates.allow_drug_names: expected true or false"),
        ({"colour": "red"}, "templates.colour: unknown key"),
    ],
)
def test_bad_template_settings_are_refused_naming_the_key(
    section: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        from_mapping({"templates": section})


def test_good_template_settings_load() -> None:
    config = from_mapping(
        {
            "templates": {
                "default_language": "es-MX",
                "time_zone": "America/Chicago",
                "allow_drug_names": True,
                "values": {"clinic": "Mercy Clinic", "portal_url": "https://p.example.org"},
            }
        }
    )
    assert config.templates.default_language == "es-MX"
    assert config.templates.values["clinic"] == "Mercy Clinic"
