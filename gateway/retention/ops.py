"""Operator commands: `retention.run`, `retention.status`, `erase.number` (see
`gateway.ops.registry` for the contract). Answers name counts and a reference id,
never a number."""

from __future__ import annotations

from typing import Any

from gateway.intake import normalise_number
from gateway.ops.registry import OpContext, op
from gateway.retention.job import Retention
from gateway.retention.usecase import Erasures

_HALF = (
    "retention: the cluster's shared store holds messages and inbound too: run it while"
    " the node runs (through its socket)"
)


def _retention(ctx: OpContext) -> Retention | None:
    """The gateway's job (on a cluster node, with the shared store's sweep); offline,
    one over the node's own store, unless that is only half of it (a cluster node)."""
    if ctx.gateway is not None:
        return ctx.gateway.retention
    if ctx.config.cluster.enabled:
        return None
    return Retention(ctx.store, ctx.config.retention, ctx.clock, ctx.audit)


@op("retention.status")
async def retention_status(ctx: OpContext, args: dict[str, Any]) -> int:
    del args
    retention = _retention(ctx)
    if retention is None:
        ctx.out(_HALF)
        return 2
    status = await retention.status()
    cfg = ctx.config.retention
    ctx.out(f"hourly job: {'on' if cfg.enabled else 'off'}")
    ctx.out(f"texts kept {cfg.body_days:g} days, numbers {cfg.number_days:g} days")
    for name in sorted(cfg.purposes):
        body, number = cfg.periods(name)
        ctx.out(f"  {name}: texts {body:g} days, numbers {number:g} days")
    ctx.out(f"{'due now':<22}{'rows':>10}")
    for step, n in status.due.items():
        ctx.out(f"{step:<22}{n:>10}")
    ctx.out(f"free pages: {status.free_pages}; auto_vacuum: {status.auto_vacuum}")
    return 0


@op("retention.run")
async def retention_run(ctx: OpContext, args: dict[str, Any]) -> int:
    del args
    retention = _retention(ctx)
    if retention is None:
        ctx.out(_HALF)
        return 2
    outcome = await retention.run(ctx.actor, ctx.progress)
    ctx.out(f"{'removed':<22}{'rows':>10}")
    for step, n in outcome.removed.items():
        ctx.out(f"{step:<22}{n:>10}")
    ctx.out(f"pages freed: {outcome.pages_freed}")
    return 0


@op("erase.number")
async def erase_number(ctx: OpContext, args: dict[str, Any]) -> int:
    number = args.get("number")
    e164 = None
    if isinstance(number, str):
        e164 = normalise_number(number, ctx.config.queue.default_region)
    if e164 is None:
        ctx.out("erase: --number is not a valid phone number (write it in E.164, +CC...)")
        return 2
    if ctx.gateway is not None:
        erasures = ctx.gateway.erasures  # on a cluster node, the shared store's too
    elif ctx.config.cluster.enabled:
        ctx.out(
            "erase: the cluster's shared store holds the number too: run it while the node"
            " runs (through its socket), or POST /api/v1/erasures on any node"
        )
        return 2
    else:
        erasures = Erasures(ctx.store, ctx.audit, ctx.clock)
    done = await erasures.erase(e164, ctx.actor)
    ctx.out(f"erased; reference {done.reference} (in the audit trail)")
    ctx.out(f"{'what':<22}{'rows':>10}")
    for what, n in done.counts.items():
        ctx.out(f"{what:<22}{n:>10}")
    ctx.out("kept: the suppression entry (keyed hash and opt-out time): never texted again")
    return 0
