"""A campaign's progress counts, reused while fresh, so that pollers cost little.

Counting a campaign reads every one of its messages in the `messages_campaign` index:
tens of milliseconds of the gateway's one core at 100,000 recipients. The panel's
progress panel polls itself, API clients poll `GET /campaigns/{id}`, and each poll
used to count again, on the core that also accepts and dispatches the clinical
messages (`make bench-campaign`: polls every 100 ms took over half that core by the
end of a 100,000-recipient campaign). A count is therefore reused for at least
`MIN_AGE` seconds, and for `COST_SHARE` times as long as it took when counting is
slow, so that polling costs at most about a tenth of the time whoever polls; never
longer than `MAX_AGE`. An action on the campaign (pause, resume, cancel) forgets it,
and a count is only reused for the campaign in the state it was counted in (the panel
stops polling once a campaign is done: its last count must be taken then).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from drivers.clock import Clock
from gateway.campaigns.model import CampaignState, Progress

MIN_AGE = 1.0  # seconds a count is reused at least
MAX_AGE = 10.0  # and at most
COST_SHARE = 10.0  # reused for this many times what counting took


class ProgressCache:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        # campaign id: (its state then, fresh until, the counts)
        self._counted: dict[str, tuple[CampaignState, float, Progress]] = {}

    async def get(
        self,
        campaign_id: str,
        state: CampaignState,
        count: Callable[[], Awaitable[Progress]],
    ) -> Progress:
        now = self._clock.time()
        found = self._counted.get(campaign_id)
        if found is not None and found[0] is state and now < found[1]:
            return found[2]
        started = time.perf_counter()
        progress = await count()
        took = time.perf_counter() - started
        fresh_for = min(MAX_AGE, max(MIN_AGE, COST_SHARE * took))
        for gone in [k for k, (_, until, _) in self._counted.items() if until <= now]:
            del self._counted[gone]
        self._counted[campaign_id] = (state, self._clock.time() + fresh_for, progress)
        return progress

    def forget(self, campaign_id: str) -> None:
        self._counted.pop(campaign_id, None)
