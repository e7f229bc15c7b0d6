"""`[campaigns]`: how fast a campaign may feed the queue."""

from __future__ import annotations

from typing import Annotated

import msgspec

Rate = Annotated[float, msgspec.Meta(gt=0, le=10_000)]


class CampaignsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """`default_rate`: messages a second a campaign queues when it names no rate.
    `max_rate`: the most any campaign may ask for, so bulk sends leave the routes room
    for clinical traffic (the scheduler serves higher classes first, but a queue kept
    short by the campaign's own rate is what keeps a clinical send from waiting behind
    a long backlog of bulk claims)."""

    default_rate: Rate = 10.0
    max_rate: Rate = 50.0

    def problems(self) -> str | None:
        if self.default_rate > self.max_rate:
            return (
                f"campaigns.default_rate: {self.default_rate:g} is above campaigns.max_rate"
                f" ({self.max_rate:g})"
            )
        return None
