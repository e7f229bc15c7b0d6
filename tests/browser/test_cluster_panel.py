"""The panel's Cluster page (issue 18 point 7): a `[cluster]` node shows every node with
its incarnation, lease and last heartbeat, the bind slots it holds and its routes.

One real `smsgw run` node on the suite's PostgreSQL (tests/pg_server.py) and an SMSC
simulator (`smsgw simulate smsc`); a viewer signs in with Debian's Chromium."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.store import crypto
from tests.browser.conftest import (
    SMSGW,
    VIEWER,
    Gateway,
    end_process,
)
from tests.browser.test_accessibility import (
    VIEWPORTS,
    axe_context,
    axe_violations,
    overflow,
)
from tests.browser.test_panel import new_page, operator_context, shot
from tests.conftest import FAST_PASSWORD_HASH
from tests.pg_server import SKIP_REASON, PgServer, find_bindir
from tests.ports import free_port


@pytest.fixture(scope="module")
def cluster_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(SKIP_REASON)
    pg = PgServer(bindir)
    pg.start()
    root = tmp_path_factory.mktemp("cluster-panel")
    smsc_port, port = free_port(), free_port()
    smsc = subprocess.Popen(
        [*SMSGW, "simulate", "smsc", "--port", str(smsc_port), "--password", "pw"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    config = root / "smsgw.toml"
    config.write_text(
        f'data_dir = "{root}"\n[http]\nlisten = "127.0.0.1:{port}"\nshutdown_grace = 1.0\n'
        '[log]\nformat = "json"\n[admin]\ntotp_required_roles = ["admin"]\n'
        + "".join(f"{k} = {v}\n" for k, v in FAST_PASSWORD_HASH.items())
        + '[consent]\nenabled = false\ndefault_purpose = "informational"\n'
        f'[cluster]\nenabled = true\nnode_id = "ward-a"\nconninfo = "{pg.create_database()}"\n'
        "lease_seconds = 8\nmargin_seconds = 2\nheartbeat_seconds = 0.5\n"
        f'[[routes]]\nname = "carrier"\ntype = "smpp"\nhost = "127.0.0.1"\nport = {smsc_port}\n'
        'system_id = "smsgw"\npassword = "pw"\nreconnect_min = 0.05\nreconnect_max = 0.2\n'
        "max_binds = 1\n"
        '[[routes]]\nname = "ward-b-bank"\ntype = "loopback"\neligible_nodes = ["ward-b"]\n'
    )
    crypto.generate_master_key(root / "master.key")
    gw = Gateway(
        subprocess.Popen(
            [*SMSGW, "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        ),
        f"http://127.0.0.1:{port}",
        config,
        root / "smsgw.db",
    )
    gw.start_reader()
    try:
        gw.wait_log(lambda e: e.get("event") == "listening", limit=60)
        gw.wait_log(lambda e: e.get("event") == "smpp_bound", limit=30)
        secret = root / "victor.password"
        secret.write_text(VIEWER[1] + "\n")
        gw.cli("user", "add", "--role", "viewer", "--password-file", str(secret), VIEWER[0])
        yield gw
    finally:
        gw.stop()
        end_process(smsc)
        pg.stop()


def test_the_cluster_page_shows_each_node_its_binds_and_routes(
    browser: Any, cluster_node: Gateway, artifacts: Path
) -> None:
    context = operator_context(browser, cluster_node, VIEWER)
    page = new_page(context)
    page.goto(cluster_node.url + "/cluster")
    assert page.locator("nav.sidenav a[aria-current=page]").inner_text().endswith("Cluster")
    row = page.locator("tr[data-node=ward-a]")
    # Routes are published each heartbeat: wait for the bound one, never for time.
    page.wait_for_selector("tr[data-node=ward-a] [data-route=carrier]:text('smpp): up')")
    assert row.locator("[data-field=lease]").inner_text() == "live"
    assert row.locator("[data-field=incarnation]").inner_text().isdigit()
    assert row.locator("[data-field=heartbeat]").inner_text().startswith("20")
    assert "carrier #0 (held)" in row.locator("[data-field=binds]").inner_text()
    # A bank this node may not use is not its to show.
    assert "ward-b-bank" not in row.locator("[data-field=routes]").inner_text()
    assert page.inner_text("#this-node") == "ward-a"
    shot(page, artifacts, "40-cluster")
    assert page.problems == []
    # Accessible, and no sideways scrolling on a phone (axe needs its script: no CSP).
    checked = axe_context(browser, storage_state=context.storage_state())
    context.close()
    problems = []
    for name in ("phone", "laptop"):
        page = checked.new_page()
        page.set_viewport_size(VIEWPORTS[name])
        page.goto(cluster_node.url + "/cluster")
        page.wait_for_selector("tr[data-node=ward-a]")
        problems += axe_violations(page)
        if wide := overflow(page):
            problems.append(f"{name}: wider than the viewport: {wide}")
        page.close()
    checked.close()
    assert problems == []
