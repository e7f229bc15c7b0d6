"""What a cluster node refuses because its data would stay in the node's own SQLite.

On a cluster node (`[cluster] enabled = true`) these features' rows are not in the
shared PostgreSQL yet: answering from the node's SQLite would be a split brain (what is
posted on node A is invisible on node B, and lost with A) or a silently empty answer.
Their API endpoints answer 501 `not_on_cluster` (after the token check, as any error)
and their panel pages show the same notice, naming the feature and
`docs/ops/cluster.md`. Their configuration sections are refused at start
(`settings.refused_features`); these are the endpoints that need no configuration to
write, or answer from what an unconfigured node keeps.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import ApiError

CODE = "not_on_cluster"
DOCS = "docs/ops/cluster.md"


@dataclass(frozen=True, slots=True)
class LocalFeature:
    """A feature whose data is node-local: its API paths (by prefix) and the panel
    modules whose routes (`ROUTES`) serve it."""

    name: str  # as the refusal says it
    api_prefixes: tuple[str, ...]
    panel_modules: tuple[str, ...]


# None left: HL7 write-back, the last, is shared since cluster migration 23. The
# mechanism stays for a feature added later before its rows are shared.
LOCAL_FEATURES: tuple[LocalFeature, ...] = ()


def refusal(feature: LocalFeature) -> ApiError:
    return ApiError(
        501,
        CODE,
        f"{feature.name}: not on a cluster node yet (its data would stay in this node's"
        f" own store, unseen by the other nodes); see {DOCS}",
    )


def feature_of_path(path: str) -> LocalFeature | None:
    """The node-local feature an API endpoint's path belongs to, if any."""
    for feature in LOCAL_FEATURES:
        if any(path.startswith(p) for p in feature.api_prefixes):
            return feature
    return None


def feature_of_module(module: str) -> LocalFeature | None:
    """The node-local feature a panel route module serves, if any."""
    for feature in LOCAL_FEATURES:
        if module in feature.panel_modules:
            return feature
    return None
