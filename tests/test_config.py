"""Configuration: typed, frozen, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from gateway import config
from gateway.config import ConfigError, from_mapping

EXAMPLE = Path(__file__).parent.parent / "config" / "smsgw.example.toml"


def test_no_file_means_the_embedded_default() -> None:
    c = config.load(None)
    assert c.http.listen == "127.0.0.1:8080"
    assert c.store.synchronous == "FULL"
    assert [r.type for r in c.routes] == ["loopback"]
    assert c.db_path == Path("data/smsgw.db")


def test_config_is_frozen() -> None:
    c = config.load(None)
    with pytest.raises(AttributeError):
        c.http.listen = "0.0.0.0:80"  # type: ignore[misc]


def test_example_file_loads_and_documents_every_key() -> None:
    c = config.load(EXAMPLE)
    assert c.routes, "the example shows at least one route"
    text = EXAMPLE.read_text()
    for section in ("http", "store", "queue", "log", "admin", "replies", "links"):
        struct = getattr(c, section)
        for name in struct.__struct_fields__:
            assert f"{name} =" in text or f"{name}=" in text, f"{section}.{name} undocumented"
    for name in config.ClassPolicy.__struct_fields__:
        assert f"{name} =" in text, f"queue.classes.*.{name} undocumented"
    for name in config.RouteConfig.__struct_fields__:
        if name != "options":
            assert f"{name} =" in text, f"routes.{name} undocumented"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {
                "routes": [
                    {"name": "a", "type": "loopback"},
                    {"name": "b", "type": "loopback", "rate": "fast"},
                ]
            },
            'routes[1].rate: expected a positive number, got "fast"',
        ),
        (
            {"routes": [{"name": "a", "type": "loopback", "rate": -5}]},
            "routes[0].rate: expected a positive number, got -5",
        ),
        (
            {"routes": [{"name": "a", "type": "loopback", "window": 0}]},
            "routes[0].window: expected a positive integer, got 0",
        ),
        (
            {"routes": [{"name": "a", "type": "carrier-pigeon"}]},
            "routes[0].type: unknown route type 'carrier-pigeon'",
        ),
        (
            {"routes": [{"name": "a", "type": "loopback", "colour": "red"}]},
            "routes[0].colour: unknown key",
        ),
        ({"routes": [{"type": "loopback"}]}, "routes[0].name: missing"),
        ({"routes": [{"name": "a"}]}, "routes[0].type: missing"),
        (
            {"routes": [{"name": "a", "type": "loopback"}, {"name": "a", "type": "loopback"}]},
            "routes[1].name: duplicate route name 'a'",
        ),
        (
            {"routes": [{"name": "a", "type": "loopback", "reject_fraction": 2}]},
            "routes[0].reject_fraction: expected a number from 0.0 up to 1.0, got 2",
        ),
        (
            {"routes": [{"name": "a", "type": "loopback", "classes": ["vip"]}]},
            "routes[0].classes[0]: expected one of",
        ),
        ({"store": {"synchronous": "OFF"}}, "store.synchronous: expected one of"),
        ({"http": {"listen": 8080}}, "http.listen: expected a string, got 8080"),
        ({"htpp": {}}, "htpp: unknown key"),
        (
            {"queue": {"classes": {"bulk": {"expires_after": "a day", "max_attempts": 3}}}},
            'queue.classes.bulk.expires_after: expected a positive number, got "a day"',
        ),
        ({"queue": {"classes": {"urgent": {}}}}, "queue.classes.urgent: unknown key"),
        (
            {"replies": {"cancel_on_reply": "yes"}},
            "replies.cancel_on_reply: expected true or false",
        ),
        ({"replies": {"cancel_on_answer": True}}, "replies.cancel_on_answer: unknown key"),
    ],
)
def test_bad_config_names_the_key(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        config.from_mapping(raw)
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[http\nlisten=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(bad)
    with pytest.raises(ConfigError, match="no such file"):
        config.load(tmp_path / "nope.toml")


def test_relative_paths_resolve_against_data_dir(tmp_path: Path) -> None:
    f = tmp_path / "smsgw.toml"
    f.write_text('[store]\npath = "db/x.db"\nmaster_key_file = "/etc/smsgw/master.key"\n')
    c = config.load(f)
    assert c.db_path == tmp_path.resolve() / "db" / "x.db"
    assert c.master_key_path == Path("/etc/smsgw/master.key")


def test_route_options_are_typed_by_the_driver() -> None:
    c = config.from_mapping(
        {
            "routes": [
                {"name": "a", "type": "loopback", "latency": 0.5, "rate": 10, "prefixes": ["+44"]}
            ]
        }
    )
    route = c.routes[0]
    assert route.options.latency == 0.5
    assert route.rate == 10.0 and route.prefixes == ("+44",)
    assert isinstance(route.options, msgspec.Struct)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"queue": {"default_region": "XX"}}, 'queue.default_region: "XX" is not a region'),
        ({"queue": {"default_region": "us"}}, 'queue.default_region: "us" is not a region'),
        ({"queue": {"default_region": ""}}, 'queue.default_region: "" is not a region'),
        ({"http": {"listen": "localhost"}}, 'http.listen: "localhost" has no port'),
        ({"http": {"listen": "127.0.0.1"}}, 'http.listen: "127.0.0.1" has no port'),
        ({"http": {"listen": "localhost:"}}, 'http.listen: "localhost:" has no port'),
        ({"http": {"listen": "127.0.0.1:http"}}, 'http.listen: "127.0.0.1:http" has no port'),
        ({"http": {"listen": "127.0.0.1:70000"}}, "http.listen: port 70000 is out of range"),
        ({"http": {"listen": "::1:8080"}}, 'http.listen: "::1:8080": an IPv6 address goes in'),
        ({"http": {"listen": ":8080"}}, 'http.listen: ":8080" has no host'),
    ],
)
def test_region_and_listen_mistakes_name_the_key(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        config.from_mapping(raw)
    assert str(e.value).startswith(message), str(e.value)
    assert "loopback" not in str(e.value), "a missing port is not a non-loopback address"


@pytest.mark.parametrize("listen", ["127.0.0.1:8080", "[::1]:8443", "localhost:0", "gw.local:80"])
def test_good_listen_addresses_load(listen: str) -> None:
    assert config.from_mapping({"http": {"listen": listen}}).http.listen == listen


def test_known_regions_load() -> None:
    assert config.from_mapping({"queue": {"default_region": "GB"}}).queue.default_region == "GB"


def test_the_removed_default_priority_is_refused_with_what_replaced_it() -> None:
    with pytest.raises(ConfigError, match=r"queue.default_priority: .*consent.purposes"):
        from_mapping({"queue": {"default_priority": "normal"}})


def test_appointments_keys_are_documented_and_checked() -> None:
    text = EXAMPLE.read_text()
    for name in config.AppointmentsConfig.__struct_fields__:
        assert f"{name} =" in text, f"appointments.{name} undocumented"
    assert from_mapping({"appointments": {"time_zone": "Europe/Paris"}}).appointments.time_zone
    for raw, key in (
        ({"time_zone": "Mars/Olympus"}, "appointments.time_zone"),
        ({"cancel_debounce": -1}, "appointments.cancel_debounce"),
        ({"rebook_window_days": 400}, "appointments.rebook_window_days"),
        ({"default_language": "English"}, "appointments.default_language"),
    ):
        with pytest.raises(ConfigError, match=key):
            from_mapping({"appointments": raw})
