"""`[directory]` validation with errors naming the key, and the LDAP pieces that need no
server: filter escaping, AD's nested-group filter and objectGUID, AD's disabled and
locked marks, the role ranking; a service password that cannot be read stops start-up."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, from_mapping
from gateway.directory.client import (
    IN_CHAIN,
    ad_groups_filter,
    blocked_state,
    id_filter,
    member_filter,
    normal_dn,
    stable_id_of,
    user_search_filter,
)
from gateway.directory.service import role_for
from gateway.directory.settings import DirectoryConfig
from gateway.panel_users import Role
from gateway.startup import StartupFault
from tests.conftest import GatewayFactory

GOOD: dict[str, Any] = {
    "enabled": True,
    "urls": ["ldaps://dc1.hospital.example"],
    "ca_file": "/etc/smsgw/ad-ca.pem",
    "bind_dn": "CN=svc-smsgw,OU=Service,DC=hospital,DC=example",
    "bind_password_file": "/etc/smsgw/ad.password",
    "user_base": "DC=hospital,DC=example",
    "login_attribute": "sAMAccountName",
    "id_attribute": "objectGUID",
    "group_mode": "ad_nested",
    "roles": {"CN=SMSGW Operators,OU=Groups,DC=hospital,DC=example": "operator"},
}


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"urls": []}, "directory.urls"),
        ({"urls": ["http://dc1"]}, "directory.urls[0]"),
        ({"urls": ["ldaps://"]}, "directory.urls[0]"),
        ({"ca_file": None}, "directory.ca_file"),
        ({"bind_dn": ""}, "directory.bind_dn"),
        ({"bind_password_credential": "ad"}, "directory.bind_password_file"),
        ({"bind_password_file": None}, "directory.bind_password_file"),
        ({"user_base": ""}, "directory.user_base"),
        ({"login_attribute": "uid)(x"}, "directory.login_attribute"),
        ({"user_filter": "objectClass=person"}, "directory.user_filter"),
        ({"roles": {}}, "directory.roles"),
        ({"roles": {"not a dn": "admin"}}, "directory.roles"),
        ({"roles": {"cn=x,dc=y": "superuser"}}, "directory.roles"),
        ({"group_mode": "nested"}, "directory.group_mode"),
        ({"max_failed_logins": 0}, "directory.max_failed_logins"),
        ({"bind_password": "hunter2"}, "directory.bind_password"),  # never in the file
    ],
)
def test_a_bad_key_is_named(change: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as e:
        from_mapping({"directory": {**GOOD, **change}})
    assert str(e.value).startswith(key), str(e.value)


def test_a_good_section_loads_and_off_needs_nothing() -> None:
    config = from_mapping({"directory": GOOD})
    assert config.directory.enabled and config.directory.max_failed_logins == 4
    assert from_mapping({"directory": {"enabled": False}}).directory.problems() is None


def test_the_typed_name_is_escaped_in_the_filter() -> None:
    c = DirectoryConfig(user_filter="(objectClass=user)", login_attribute="sAMAccountName")
    got = user_search_filter(c, "*)(|(sAMAccountName=*")
    assert got == "(&(objectClass=user)(sAMAccountName=\\2a\\29\\28|\\28sAMAccountName=\\2a))"
    assert user_search_filter(c, "a\\b\x00") == "(&(objectClass=user)(sAMAccountName=a\\5cb\\00))"


def test_ad_nested_groups_use_the_in_chain_rule_with_the_dn_escaped() -> None:
    dn = "CN=Smith\\, Jo (ICU),OU=Staff,DC=hospital,DC=example"
    got = ad_groups_filter(dn)
    assert got.startswith(f"(member:{IN_CHAIN}:=") and "\\28ICU\\29" in got
    assert member_filter("member", ["cn=a*,dc=x"]) == "(|(member=cn=a\\2a,dc=x))"


def test_object_guid_round_trips_as_the_searchable_little_endian_bytes() -> None:
    c = DirectoryConfig(id_attribute="objectGUID")
    guid = uuid.UUID("12345678-9abc-def0-1234-56789abcdef0")
    assert stable_id_of(c, [guid.bytes_le]) == str(guid)
    expected = "".join(f"\\{b:02x}" for b in guid.bytes_le)
    assert id_filter(c, str(guid)) == f"(objectGUID={expected})"
    assert id_filter(DirectoryConfig(), "a*b") == "(entryUUID=a\\2ab)"


@pytest.mark.parametrize(
    ("attributes", "state"),
    [
        ({"userAccountControl": [b"512"]}, None),  # a normal account
        ({"userAccountControl": [b"514"]}, "disabled"),  # ACCOUNTDISABLE
        ({"userAccountControl": [b"66050"]}, "disabled"),
        ({"lockoutTime": [b"0"]}, None),
        ({"lockoutTime": [b"133500000000000000"]}, "locked"),
        ({"pwdAccountLockedTime": [b"000001010000Z"]}, "locked"),
        ({}, None),
    ],
)
def test_disabled_and_locked_as_the_directory_marks_them(
    attributes: dict[str, list[bytes]], state: str | None
) -> None:
    assert blocked_state(attributes) == state


def test_the_highest_mapped_role_wins_and_dns_compare_loosely() -> None:
    mapping = {
        "CN=Viewers, OU=Groups,DC=h,DC=x": Role.VIEWER,
        "cn=admins,ou=groups,dc=h,dc=x": Role.ADMIN,
        "cn=auditors,ou=groups,dc=h,dc=x": Role.AUDITOR,
    }
    groups = {
        normal_dn("cn=viewers,ou=groups,dc=h,dc=x"),
        normal_dn("CN=Auditors,OU=Groups,DC=H,DC=X"),
    }
    assert role_for(groups, mapping) is Role.AUDITOR
    assert role_for(groups | {normal_dn("CN=ADMINS,OU=GROUPS,DC=H,DC=X")}, mapping) is Role.ADMIN
    assert role_for(set(), mapping) is None


async def test_an_unreadable_service_password_stops_start_up(
    open_gateway: GatewayFactory, tmp_path: Path
) -> None:
    section = {**GOOD, "bind_password_file": str(tmp_path / "missing.password")}
    gw = await open_gateway(directory=section, start=False)
    with pytest.raises(StartupFault) as e:
        await gw.start(dispatch=False)
    assert str(e.value).startswith("directory.bind_password_file: ")
    assert "missing.password" in str(e.value) and e.value.exit_code == 2


async def test_an_unreadable_ca_file_stops_start_up(
    open_gateway: GatewayFactory, tmp_path: Path
) -> None:
    password = tmp_path / "directory.password"
    password.write_text("service secret\n")
    section = {**GOOD, "bind_password_file": str(password), "ca_file": str(tmp_path / "no-ca.pem")}
    gw = await open_gateway(directory=section, start=False)
    with pytest.raises(StartupFault) as e:
        await gw.start(dispatch=False)
    assert str(e.value).startswith("directory.ca_file: cannot load")
    assert "service secret" not in str(e.value) and e.value.exit_code == 2
