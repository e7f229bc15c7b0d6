"""The routes' cluster keys (`eligible_nodes`, `max_binds`, `bind_grace_seconds`,
`account`) and `[[cluster.accounts]]`, checked together: each problem names its key."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import Config, RouteConfig

_CLUSTER_ONLY = ("eligible_nodes", "max_binds", "account")
DEFAULT_GRACE = 60.0  # RouteConfig.bind_grace_seconds' default


def route_problem(config: Config) -> str | None:
    """The first bad cluster key of a route or account, or None."""
    cluster = config.cluster
    names = [a.name for a in cluster.accounts]
    for i, name in enumerate(names):
        if name in names[:i]:
            return f"cluster.accounts[{i}].name: duplicate account name {name!r}"
    for i, account in enumerate(cluster.accounts):
        if account.reserve() > account.burst - 1:
            return (
                f"cluster.accounts[{i}].critical_reserve: at most burst - 1 (bulk claims"
                " take only the tokens above it)"
            )
    for i, route in enumerate(config.routes):
        if problem := _one(f"routes[{i}]", route, config, set(names)):
            return problem
    return None


def _one(where: str, route: RouteConfig, config: Config, accounts: set[str]) -> str | None:
    cluster = config.cluster
    if not cluster.enabled:
        for key in _CLUSTER_ONLY:
            if getattr(route, key) not in (None, ()):
                return f"{where}.{key}: only with cluster.enabled = true (several nodes)"
    if route.max_binds is None and route.bind_grace_seconds != DEFAULT_GRACE:
        return f"{where}.bind_grace_seconds: only with max_binds (the slots it frees)"
    if not cluster.enabled:
        return None
    from gateway.cluster.settings import _NODE_ID  # here: settings imports this module

    for j, node in enumerate(route.eligible_nodes):
        if not _NODE_ID.fullmatch(node):
            return (
                f"{where}.eligible_nodes[{j}]: not a node id (1-63 letters, digits, '.', '_', '-')"
            )
        if node in route.eligible_nodes[:j]:
            return f"{where}.eligible_nodes[{j}]: {node!r} is listed twice"
    if route.max_binds is not None and route.type != "smpp":
        return f"{where}.max_binds: only for smpp routes (a carrier's cap on sessions)"
    if route.account is not None and route.account not in accounts:
        return f"{where}.account: no [[cluster.accounts]] is named {route.account!r}"
    return None
