"""`[mqtt]` settings: documented, and errors that name the key."""

from __future__ import annotations

from typing import Any

import pytest

from gateway import config
from gateway.config import ConfigError
from tests.test_config import EXAMPLE


def test_every_mqtt_key_is_documented_in_the_example() -> None:
    c = config.load(EXAMPLE)
    assert c.mqtt.enabled is False
    text = EXAMPLE.read_text().split("[mqtt]", 1)[1].split("[[routes]]", 1)[0]
    for name in config.MqttConfig.__struct_fields__:
        assert f"{name} =" in text, f"mqtt.{name} undocumented"


@pytest.mark.parametrize(
    ("mqtt", "message"),
    [
        ({"qos": 0}, "mqtt.qos: expected one of 1, got 0"),
        ({"port": 70000}, "mqtt.port: expected a port from 1 to 65535, got 70000"),
        ({"colour": "red"}, "mqtt.colour: unknown key"),
        ({"topic_prefix": "a/#"}, "mqtt.topic_prefix: expected a string"),
        ({"enabled": True, "topic_prefix": "a/"}, "mqtt.topic_prefix: must not start or end"),
        ({"enabled": True, "send_topic": True}, "mqtt.send_token_file: missing"),
        ({"enabled": True, "username": "gw"}, "mqtt.password_file: missing"),
        ({"enabled": True, "password_file": "pw"}, "mqtt.username: missing"),
        ({"enabled": True, "tls": True, "cert_file": "c.pem"}, "mqtt.key_file: missing"),
        ({"enabled": True, "ca_file": "ca.pem"}, "mqtt.tls: must be true"),
        (
            {"enabled": True, "reconnect_min": 10, "reconnect_max": 5},
            "mqtt.reconnect_min: must not exceed",
        ),
        ({"phi": "yes"}, 'mqtt.phi: expected true or false, got "yes"'),
        ({"session_expiry": -5}, "mqtt.session_expiry: expected a integer from 0"),
    ],
)
def test_mistakes_name_the_key(mqtt: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        config.from_mapping({"mqtt": mqtt})
    assert str(e.value).startswith(message), str(e.value)
