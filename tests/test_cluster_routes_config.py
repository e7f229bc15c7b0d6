"""The routes' cluster keys (issue 18 points 3 and 4): `eligible_nodes`, `max_binds`,
`bind_grace_seconds`, `account` and `[[cluster.accounts]]` (with the critical reserve's
default), each problem naming its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.cluster.settings import CRITICAL_RESERVE_S, RateAccount
from gateway.config import ConfigError, from_mapping
from gateway.scheduler import CRITICAL_AHEAD_S

SMPP = {"name": "carrier", "type": "smpp", "host": "127.0.0.1", "system_id": "s", "password": "p"}
ACCOUNTS = [{"name": "acme", "rate": 100, "burst": 2}]


def config(tmp_path: Path, route: dict[str, Any], *, cluster: bool = True, **more: Any) -> Any:
    raw: dict[str, Any] = {
        "data_dir": str(tmp_path),
        "source": str(tmp_path / "smsgw.toml"),
        "routes": [{**SMPP, **route}],
        "consent": {"enabled": False},
    }
    if cluster:
        raw["cluster"] = {"enabled": True, "node_id": "gw1", "conninfo": "host=db1", **more}
    return from_mapping(raw)


def test_a_route_on_a_cluster_declares_nodes_binds_and_account(tmp_path: Path) -> None:
    keys = {"eligible_nodes": ["gw1", "gw2"], "max_binds": 2, "bind_grace_seconds": 45}
    c = config(tmp_path, {**keys, "account": "acme"}, accounts=ACCOUNTS)
    (route,) = c.routes
    assert (route.eligible_nodes, route.max_binds, route.bind_grace_seconds) == (
        ("gw1", "gw2"),
        2,
        45.0,
    )
    assert route.account == "acme" and c.cluster.accounts[0].rate == 100
    assert route.options.host == "127.0.0.1"  # the driver's own keys stay its own


@pytest.mark.parametrize(
    ("route", "more", "key"),
    [
        ({"max_binds": 0}, {}, "routes[0].max_binds"),
        ({"eligible_nodes": ["gw 1"]}, {}, "routes[0].eligible_nodes[0]"),
        ({"eligible_nodes": ["gw1", "gw1"]}, {}, "routes[0].eligible_nodes[1]"),
        ({"account": "nobody"}, {"accounts": ACCOUNTS}, "routes[0].account"),
        ({"bind_grace_seconds": -1}, {}, "routes[0].bind_grace_seconds"),
        ({"bind_grace_seconds": 30}, {}, "routes[0].bind_grace_seconds"),
        ({}, {"accounts": [*ACCOUNTS, *ACCOUNTS]}, "cluster.accounts[1].name"),
        ({}, {"accounts": [{"name": "x", "rate": 0}]}, "cluster.accounts[0].rate"),
        ({}, {"accounts": [{"name": "x", "rate": 5, "burst": 0.5}]}, "cluster.accounts[0].burst"),
        (
            {},
            {"accounts": [{"name": "x", "rate": 5, "burst": 4, "critical_reserve": 3.5}]},
            "cluster.accounts[0].critical_reserve",
        ),
        (
            {},
            {"accounts": [{"name": "x", "rate": 5, "critical_reserve": -1}]},
            "cluster.accounts[0].critical_reserve",
        ),
    ],
)
def test_a_bad_cluster_key_of_a_route_names_it(
    tmp_path: Path, route: dict[str, Any], more: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError) as e:
        config(tmp_path, route, **more)
    assert str(e.value).startswith(key), str(e.value)


def test_max_binds_is_for_smpp_routes_only(tmp_path: Path) -> None:
    raw = {**{"name": "lo", "type": "loopback"}, "max_binds": 1}
    with pytest.raises(ConfigError, match=r"^routes\[0\]\.max_binds: only for smpp"):
        from_mapping(
            {
                "data_dir": str(tmp_path),
                "source": str(tmp_path / "smsgw.toml"),
                "routes": [raw],
                "consent": {"enabled": False},
                "cluster": {"enabled": True, "node_id": "gw1", "conninfo": "host=db1"},
            }
        )


@pytest.mark.parametrize("key", ["eligible_nodes", "max_binds", "account"])
def test_the_cluster_keys_are_refused_without_a_cluster(tmp_path: Path, key: str) -> None:
    value: Any = {"eligible_nodes": ["gw1"], "max_binds": 1, "account": "acme"}[key]
    with pytest.raises(ConfigError, match=rf"^routes\[0\]\.{key}: only with cluster.enabled"):
        config(tmp_path, {key: value}, cluster=False)


@pytest.mark.parametrize(
    ("rate", "burst", "reserve"),
    [
        (100, 10, 2),  # a quarter of the burst: bulk keeps 8 to save up
        (100, 40, 5),  # CRITICAL_RESERVE_S (50 ms) of the rate
        (10, 4, 1),  # at least one token
        (48, 2, 0),  # none under a burst of 4: bulk's bucket would be one token
    ],
)
def test_the_critical_reserve_defaults_to_50_ms_of_the_rate_within_a_quarter_of_the_burst(
    rate: float, burst: float, reserve: float
) -> None:
    assert CRITICAL_RESERVE_S == CRITICAL_AHEAD_S  # as long as one node takes ahead
    assert RateAccount(name="a", rate=rate, burst=burst).reserve() == reserve
    assert RateAccount(name="a", rate=rate, burst=burst, critical_reserve=0).reserve() == 0
