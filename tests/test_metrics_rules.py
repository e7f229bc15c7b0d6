"""The alert rules and the Grafana dashboard in config/: promtool checks the rules and
runs their unit tests (input series -> expected alerts), and every metric an alert or
a panel queries is one a real gateway exposes (so a rename cannot leave an alert that
never fires)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.app import Gateway
from tests.test_api import _api
from tests.test_metrics import scrape

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "config/prometheus/smsgw-alerts.yml"
RULE_TESTS = ROOT / "config/prometheus/smsgw-alerts.test.yml"
DASHBOARD = ROOT / "config/grafana/smsgw-dashboard.json"
# Metric names in PromQL: smsgw's own and the process collector's. `up` is Prometheus's.
METRIC = re.compile(r"\b((?:smsgw|process)_[a-z0-9_]+)\b")
# Alerts the issue asks for, each with a case in RULE_TESTS.
REQUIRED_ALERTS = {
    "SmsgwRouteDown",
    "SmsgwCriticalMessagesWaiting",
    "SmsgwCarrierThrottling",
    "SmsgwModemSimStopped",
    "SmsgwDiskFilling",
    "SmsgwAuditChainBroken",
    "SmsgwStoreUnavailable",
    "SmsgwWebhookBacklog",
    "SmsgwRestarting",
}


def promtool() -> str | None:
    local = ROOT / "tests/peers/bin/promtool"
    return shutil.which("promtool") or (str(local) if local.exists() else None)


needs_promtool = pytest.mark.skipif(promtool() is None, reason="make peers fetches promtool")


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = promtool()
    assert tool is not None
    return subprocess.run(
        [tool, *args], cwd=RULES.parent, capture_output=True, text=True, timeout=50, check=False
    )


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    done = run_promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@needs_promtool
def test_the_rules_unit_tests_pass() -> None:
    done = run_promtool("test", "rules", RULE_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_required_alert_exists_and_is_unit_tested() -> None:
    rules = RULES.read_text()
    tests = RULE_TESTS.read_text()
    for name in REQUIRED_ALERTS:
        assert f"alert: {name}\n" in rules, name
        assert f"alertname: {name}\n" in tests, name


def dashboard_exprs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            else:
                yield from dashboard_exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_exprs(item)


def exposed_names(types: dict[str, str]) -> set[str]:
    """The sample names Prometheus stores for these families."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    return {name + s for name, t in types.items() for s in suffixes.get(t, ("",))}


async def test_every_metric_the_rules_and_dashboard_query_is_exposed(
    open_gateway: Any,
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["panels"] and dashboard["templating"]["list"]
    exprs = list(dashboard_exprs(dashboard))
    assert len(exprs) > 20
    queried = {
        "dashboard": {n for e in exprs for n in METRIC.findall(e)},
        "rules": set(METRIC.findall(RULES.read_text())),
    }
    gw: Gateway = await open_gateway()
    async for api in _api(gw):
        exposed = exposed_names((await scrape(api)).types)
    for where, names in queried.items():
        assert names, where
        assert not names - exposed, f"{where} queries metrics no gateway exposes"
