"""Operator command `analytics.report` (`smsgw analytics`): the figures over a range
of days, in total or per key of a dimension, as a table or CSV (audited), from the
same use case as the API and the panel. Counts only, never a number or a text."""

from __future__ import annotations

from typing import Any

from gateway.analytics.figures import Dimension
from gateway.analytics.rollup import Rollup
from gateway.analytics.usecase import Analytics, KeyFigures, dimension_of
from gateway.csv_safe import csv_text
from gateway.errors import ApiError
from gateway.ops.registry import OpContext, op
from gateway.usecases.caller import Caller

SHOWN = ("sent", "delivered", "failed", "blocked", "replied", "opted_out", "clicked", "parts")


CLUSTER_REFUSAL = (
    "analytics: on a cluster the figures are counted from the shared PostgreSQL tables:"
    " run it while the node runs (through its socket), or read GET /api/v1/analytics/..."
    " on any node"
)


def _analytics(ctx: OpContext) -> Analytics | None:
    """The gateway's (on a cluster node, over the shared tables); offline, one over the
    node's own store, unless that holds only part of the figures (a cluster node)."""
    if ctx.gateway is not None:
        return ctx.gateway.analytics
    if ctx.config.cluster.enabled:
        return None
    a = ctx.config.analytics
    zone = a.zone(ctx.config.appointments.time_zone)
    rollup = Rollup(ctx.store, ctx.clock, zone, interval=a.interval)
    return Analytics(store=ctx.store, clock=ctx.clock, audit=ctx.audit, rollup=rollup)


def _cells(k: KeyFigures) -> list[int]:
    c = k.figures.counts
    replied = c["replied_confirm"] + c["replied_cancel"] + c["replied_other"]
    return [replied if name == "replied" else c[name] for name in SHOWN]


@op("analytics.report")
async def analytics_report(ctx: OpContext, args: dict[str, Any]) -> int:
    a = _analytics(ctx)
    if a is None:
        ctx.err(CLUSTER_REFUSAL)
        return 2
    caller = Caller(ctx.actor, None, sees_all=True, may_send=False, may_read_phi=False)
    try:
        span = a.range_of(args.get("from"), args.get("to"))
        dimension = dimension_of(args.get("by"), "--by")
    except ApiError as e:
        ctx.err(f"analytics: {e.message.replace('from:', '--from:').replace('to:', '--to:')}")
        return 2
    if args.get("refresh"):
        ctx.out(f"counted {await a.refresh()} new rows")
    if args.get("csv"):
        for line in csv_text(await a.export(caller, [dimension], span)).splitlines():
            ctx.out(line)
        return 0
    if dimension is Dimension.TOTAL:
        rows = [KeyFigures("total", await a.summary(caller, span))]
    else:
        rows = await a.grouped(caller, dimension, span)
    ctx.out(f"{span.first} to {span.last} ({a.time_zone}), by {dimension.value}")
    width = max([len(dimension.value), *(len(r.key) for r in rows)]) + 2
    ctx.out(f"{dimension.value:<{width}}" + "".join(f"{n:>11}" for n in SHOWN))
    for r in rows:
        ctx.out(f"{r.key:<{width}}" + "".join(f"{v:>11}" for v in _cells(r)))
    if not rows:
        ctx.out("(nothing in this range)")
    return 0
