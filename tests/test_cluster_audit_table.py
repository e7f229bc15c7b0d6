"""Issue 18: every API endpoint and panel page has a cluster decision.

docs/ops/cluster.md ("What a node still keeps in its own store") lists what each
endpoint, page and loop reads or writes on a cluster node. An endpoint or a panel
module added later must be placed here too: shared, per node by design, or refused
(`gateway/cluster/local_only.py`), never a silent answer from one node's SQLite.
"""

from __future__ import annotations

from gateway.admin.panel import ROUTE_MODULES
from gateway.api.server import ENDPOINTS
from gateway.cluster.local_only import LOCAL_FEATURES, feature_of_module, feature_of_path

SHARED_API = (
    "/api/v1/messages", "/api/v1/inbound/{", "/api/v1/inbound", "/api/v1/queue",
    "/api/v1/metrics", "/api/v1/openapi.json", "/api/v1/healthz", "/api/v1/optouts",
    "/api/v1/consents", "/api/v1/contacts", "/api/v1/erasures", "/api/v1/links",
    "/api/v1/cluster", "/api/v1/analytics/",
    # the clinical and campaign ports (cluster migrations 17 and 18)
    "/api/v1/appointments", "/api/v1/templates", "/api/v1/reminder-rules",
    "/api/v1/groups", "/api/v1/audiences", "/api/v1/campaigns",
    "/api/v1/surveys",  # cluster migration 20
    # the HL7 inbound feeds' log (cluster migration 21), the write-back queue (23)
    "/api/v1/hl7/interfaces", "/api/v1/hl7/messages", "/api/v1/hl7/outbound",
    # results, medication and replies (cluster migration 22)
    "/api/v1/events/results-available", "/api/v1/medications", "/api/v1/replies",
)  # fmt: skip
PER_NODE_API = ("/api/v1/routes", "/api/v1/inbound/undecodable", "/api/v1/demo/")

SHARED_PANEL = {
    "gateway.admin.views_auth", "gateway.admin.views_users", "gateway.admin.views_audit",
    "gateway.admin.dashboard", "gateway.admin.pages", "gateway.admin.views_session",
    "gateway.admin.views_webhooks", "gateway.admin.views_consent", "gateway.admin.views_links",
    "gateway.admin.views_analytics", "gateway.admin.views_cluster",
    "gateway.admin.views_appointments", "gateway.admin.views_templates",
    "gateway.admin.views_reminders", "gateway.admin.views_contacts",
    "gateway.admin.views_groups", "gateway.admin.views_campaigns",
    "gateway.admin.views_surveys", "gateway.admin.views_hl7",
    "gateway.admin.views_worklist",
}  # fmt: skip


def test_every_api_endpoint_has_a_cluster_decision() -> None:
    undecided = []
    for e in ENDPOINTS:
        decided = feature_of_path(e.path) is not None or any(
            e.path.startswith(p) for p in (*SHARED_API, *PER_NODE_API)
        )
        if not decided:
            undecided.append(f"{e.method} {e.path}")
    assert undecided == []


def test_every_panel_module_has_a_cluster_decision() -> None:
    undecided = [m for m in ROUTE_MODULES if feature_of_module(m) is None and m not in SHARED_PANEL]
    assert undecided == []


def test_each_refused_feature_still_names_what_exists() -> None:
    paths = [e.path for e in ENDPOINTS]
    for feature in LOCAL_FEATURES:
        for prefix in feature.api_prefixes:
            assert any(p.startswith(prefix) for p in paths), prefix
        assert set(feature.panel_modules) <= set(ROUTE_MODULES)
