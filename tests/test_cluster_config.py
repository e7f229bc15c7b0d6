"""`[cluster]`: its keys are checked with errors naming them, the password never comes
from the TOML, and what the cluster backend does not carry yet is refused at start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, from_mapping
from gateway.integrations.mqtt_names import MqttNames, names_for
from tests.conftest import smsgw_process
from tests.ports import free_port
from tests.test_directory_config import GOOD as GOOD_DIRECTORY

ROUTES = [{"name": "carrier", "type": "loopback"}]


def config(tmp_path: Path, cluster: dict[str, Any], **sections: Any) -> Any:
    raw: dict[str, Any] = {
        "data_dir": str(tmp_path),
        "source": str(tmp_path / "smsgw.toml"),
        "routes": ROUTES,
        "consent": {"enabled": False},
        "cluster": {"enabled": True, "node_id": "gw1", "conninfo": "host=db1 dbname=s", **cluster},
        **sections,
    }
    return from_mapping(raw)


def test_a_valid_block_is_accepted(tmp_path: Path) -> None:
    c = config(tmp_path, {"lease_seconds": 6, "margin_seconds": 2, "heartbeat_seconds": 1})
    assert c.cluster.enabled and c.cluster.node_id == "gw1"


@pytest.mark.parametrize(
    ("cluster", "key"),
    [
        ({"node_id": ""}, "cluster.node_id"),
        ({"node_id": "gw 1"}, "cluster.node_id"),
        ({"conninfo": ""}, "cluster.conninfo"),
        ({"conninfo": "host=db1 password=hunter2"}, "cluster.conninfo"),
        ({"conninfo": "postgresql://u:hunter2@db1/s"}, "cluster.conninfo"),
        ({"margin_seconds": 10}, "cluster.margin_seconds"),
        ({"heartbeat_seconds": 8}, "cluster.heartbeat_seconds"),
        ({"password_file": "a", "password_credential": "b"}, "cluster.password_file"),
        ({"pool_size": 1}, "cluster.pool_size"),
        ({"audit_anchor_seconds": 0}, "cluster.audit_anchor_seconds"),
        ({"request_timeout": 0}, "cluster.request_timeout"),
        ({"reconnect_max_delay": 0.1}, "cluster.reconnect_max_delay"),
        ({"reconnect_max_delay": 61}, "cluster.reconnect_max_delay"),
    ],
)
def test_a_bad_value_names_its_key_and_never_echoes_a_password(
    tmp_path: Path, cluster: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        config(tmp_path, cluster)
    assert key in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_features_not_on_the_cluster_backend_are_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        config(tmp_path, {}, demo={"peers": True})
    message = str(caught.value)
    assert message.startswith("cluster.enabled: not on the cluster backend yet")
    assert "demo.peers" in message


def test_appointments_and_hl7_inbound_and_write_back_run_on_a_cluster(
    tmp_path: Path,
) -> None:
    """Appointments, reminders, templates and notices are shared
    (tests/pg/test_appointments_cluster.py), and so are the inbound HL7 log
    (tests/pg/test_hl7_cluster.py) and the write-back queue
    (tests/pg/test_hl7_writeback_cluster.py)."""
    appointments = {"time_zone": "Europe/London", "cancel_debounce": 60.0}
    assert config(tmp_path, {}, appointments=appointments).appointments.cancel_debounce == 60.0
    inbound = {"name": "epic", "listen": "127.0.0.1:2575"}
    assert config(tmp_path, {}, hl7={"interfaces": [inbound]}).hl7.inbound()
    out = {"name": "epic-out", "direction": "out", "host": "127.0.0.1", "port": 2576}
    assert config(tmp_path, {}, hl7={"interfaces": [inbound, out]}).hl7.outbound()


def test_the_kannel_listener_runs_on_a_cluster(tmp_path: Path) -> None:
    """Its dlr-urls are kept with the shared messages (tests/pg/test_kannel_cluster.py)."""
    user = {"username": "his", "password_file": "his.pw", "token": "his"}
    assert config(tmp_path, {}, kannel={"enabled": True, "users": [user]}).kannel.enabled


def test_mqtt_runs_on_a_cluster_under_names_of_the_node(tmp_path: Path) -> None:
    """Issue 18 pt 1/5: a client id and a status topic per node, the send topic shared
    out by the broker (tests/pg/test_mqtt_cluster.py)."""
    mqtt = {"enabled": True, "topic_prefix": "hosp", "client_id": "ward/1"}
    names = names_for(config(tmp_path, {}, mqtt=mqtt))
    assert names == MqttNames(
        "ward/1-gw1", "hosp/status/gw1", "$share/ward%2F1/hosp/send", "hosp/status/+", "ward/1-"
    )
    assert names.client_id_of("hosp/status/gw2") == "ward/1-gw2"
    alone = from_mapping({"data_dir": str(tmp_path), "routes": ROUTES, "mqtt": mqtt})
    assert names_for(alone) == MqttNames("ward/1", "hosp/status", "hosp/send")


def test_webhooks_run_on_a_cluster_with_every_event(tmp_path: Path) -> None:
    """Their events come from the shared outbox (tests/pg/test_outbox_nodes_e2e.py),
    inbound ones too (tests/pg/test_outbox_cluster.py)."""
    hook = {"name": "w", "url": "https://example.org/h", "secret_file": "w.key"}
    (kept,) = config(tmp_path, {}, webhooks=[hook]).webhooks  # the default events
    assert "message.inbound" in kept.events


def test_campaigns_run_on_a_cluster(tmp_path: Path) -> None:
    """Contacts, groups, audiences and campaigns are shared by every node
    (tests/pg/test_campaigns_cluster.py)."""
    assert config(tmp_path, {}, campaigns={"default_rate": 20.0}).campaigns.default_rate == 20


def test_consent_runs_on_a_cluster(tmp_path: Path) -> None:
    """i18-consent: one consent list for every node (tests/pg/test_consent_cluster.py)."""
    assert config(tmp_path, {}, consent={"enabled": True}).consent.enabled


def test_links_and_directory_sign_in_run_on_a_cluster(tmp_path: Path) -> None:
    """Their tables are shared (tests/pg/test_links_cluster.py,
    tests/pg/test_directory_cluster.py)."""
    links = {"enabled": True, "base_url": "https://go.example.org", "allow": ["example.org"]}
    c = config(tmp_path, {}, links=links, directory=GOOD_DIRECTORY)
    assert c.links.enabled and c.directory.enabled


def test_the_embedded_default_cannot_be_a_cluster_node(tmp_path: Path) -> None:
    raw = {
        "data_dir": str(tmp_path),
        "routes": ROUTES,
        "consent": {"enabled": False},
        "cluster": {"enabled": True, "node_id": "gw1", "conninfo": "host=db1"},
    }
    with pytest.raises(ConfigError, match=r"cluster\.enabled: needs a config file"):
        from_mapping(raw)


def test_the_password_comes_from_its_file_or_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pg.pass").write_text("s3cret\n")
    c = config(tmp_path, {"password_file": "pg.pass"})
    assert c.cluster.password(tmp_path) == "s3cret"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "smsgw-pg").write_text("from-systemd")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    c = config(tmp_path, {"password_credential": "smsgw-pg"})
    assert c.cluster.password(tmp_path) == "from-systemd"
    missing = config(tmp_path, {"password_file": "nope"})
    with pytest.raises(ValueError, match=r"cluster\.password_file: cannot read it"):
        missing.cluster.password(tmp_path)
    assert config(tmp_path, {}).cluster.password(tmp_path) is None


async def test_a_node_that_cannot_reach_postgresql_stops_with_one_line(tmp_path: Path) -> None:
    init = await smsgw_process("init", "--data-dir", str(tmp_path))
    await init.communicate()
    conf = tmp_path / "smsgw.toml"
    (tmp_path / "pg.pass").write_text("hunter2")
    conf.write_text(
        f'data_dir = "{tmp_path}"\n[http]\nlisten = "127.0.0.1:{free_port()}"\n'
        "[consent]\nenabled = false\n"
        f'[cluster]\nenabled = true\nnode_id = "gw1"\n'
        f'conninfo = "host=127.0.0.1 port={free_port()} dbname=x user=u"\n'
        'password_file = "pg.pass"\n'
        '[[routes]]\nname = "carrier"\ntype = "loopback"\n'
    )
    proc = await smsgw_process("run", "--config", str(conf))
    out, err = await proc.communicate()
    text = (out + err).decode()
    assert proc.returncode != 0
    assert "cluster.conninfo: cannot reach PostgreSQL" in text
    assert "Traceback" not in text and "hunter2" not in text


def test_the_consent_command_refuses_a_cluster_nodes_local_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a cluster the ledger is PostgreSQL's: the local SQLite one would be stale."""
    import argparse

    from gateway.consent_cmd import run

    args = argparse.Namespace(action="export", file=str(tmp_path / "out.csv"))
    assert run(args, config(tmp_path, {}, consent={"enabled": True})) == 2
    assert "cluster" in capsys.readouterr().err
    assert not (tmp_path / "out.csv").exists()


async def test_an_offline_contacts_import_refuses_a_cluster_nodes_local_tables(
    tmp_path: Path,
) -> None:
    """With the node's service down, `smsgw import contacts` would write its SQLite,
    which no campaign reads on a cluster: refused, naming what to do instead."""
    from typing import Any, cast

    from drivers.clock import SystemClock
    from gateway.contacts.ops import import_contacts
    from gateway.ops.registry import OpContext

    said: list[str] = []
    nothing = cast(Any, None)  # refused before any store is touched
    ctx = OpContext(
        config(tmp_path, {}), nothing, b"", nothing, SystemClock(), "console", said.append
    )
    ctx.err = said.append
    assert await import_contacts(ctx, {"file": str(tmp_path / "c.csv")}) == 2
    assert "shared by every node" in said[0] and "POST /api/v1/contacts/imports" in said[0]
