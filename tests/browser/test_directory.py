"""Directory sign-in in a real browser against a real `smsgw run` and the suite's slapd
(StartTLS, test CA): a directory admin signs in with their directory password, enrols
the second factor their role requires, and lands on the dashboard, which shows the
directory answering; a directory user in no mapped group is told so."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest

from tests.browser.conftest import Gateway, start_gateway
from tests.browser.test_panel import new_page, shot, sign_in
from tests.peers.slapd import (
    GROUPS,
    PASSWORDS,
    PEOPLE,
    ROLE_GROUPS,
    SERVICE_DN,
    SERVICE_PASSWORD,
    Slapd,
)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, slapd_server: Slapd) -> Iterator[Gateway]:
    secrets = tmp_path_factory.mktemp("directory-secrets")
    password = secrets / "service.password"
    password.write_text(SERVICE_PASSWORD + "\n")
    roles = "".join(f'"{dn}" = "{role}"\n' for dn, role in ROLE_GROUPS.items())
    directory = (
        "\n[directory]\n"
        "enabled = true\n"
        f'urls = ["{slapd_server.url}"]\n'
        f'ca_file = "{slapd_server.pki.ca}"\n'
        f'bind_dn = "{SERVICE_DN}"\n'
        f'bind_password_file = "{password}"\n'
        f'user_base = "{PEOPLE}"\n'
        f'group_base = "{GROUPS}"\n'
        'login_attribute = "uid"\n'
        'user_filter = "(objectClass=inetOrgPerson)"\n'
        'id_attribute = "entryUUID"\n'
        'group_mode = "member"\n'
        "[directory.roles]\n" + roles
    )
    gw = start_gateway(tmp_path_factory.mktemp("directory"), users=(), extra_toml=directory)
    yield gw
    gw.stop()


def test_a_directory_admin_signs_in_with_totp(
    browser: Any, gateway: Gateway, artifacts: Path
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    try:
        page = new_page(context)
        sign_in(page, gateway, ("adam", PASSWORDS["adam"]))
        # The admin role requires a second factor: the first sign-in enrols one.
        page.wait_for_selector(".totp-secret")
        shot(page, artifacts, "directory-01-totp-enrol")
        secret = re.sub(r"\s", "", page.inner_text(".totp-secret"))
        page.fill("#code", pyotp.TOTP(secret).now())
        page.click("main form button[type=submit]")
        page.wait_for_url(re.compile(r"/$"))
        page.wait_for_selector("#directory-state")
        assert page.inner_text("#directory-state") == "Directory answering"
        assert page.inner_text("#break-glass-count") == "0"
        shot(page, artifacts, "directory-02-dashboard")
        page.goto(gateway.url + "/users")
        row = page.locator("tbody tr", has_text="adam")
        assert "(directory groups)" in row.inner_text()
    finally:
        context.close()


def test_a_directory_user_in_no_mapped_group_is_told_so(browser: Any, gateway: Gateway) -> None:
    context = browser.new_context()
    try:
        page = new_page(context)
        sign_in(page, gateway, ("nogroup", PASSWORDS["nogroup"]))
        page.wait_for_selector(".error")
        assert "not in a group that may use smsgw" in page.inner_text(".error")
        assert page.url.endswith("/login")
    finally:
        context.close()
