"""The queue as the API's `/queue` and the panel's dashboard show it: counts only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from drivers.clock import Clock
from gateway.models import Priority
from gateway.scheduler import Scheduler
from gateway.store.message_reads import MessageReads


@dataclass(frozen=True, slots=True)
class ClassDepth:
    name: str  # the priority class
    queued: int  # due, waiting for a route
    scheduled: int  # not yet due
    sending: int  # handed to a driver, no answer yet


@dataclass(frozen=True, slots=True)
class QueueStatus:
    classes: tuple[ClassDepth, ...]  # in priority order
    in_flight: int
    oldest_age: float | None  # seconds the oldest due message has waited
    possible_duplicates: int
    accepting: bool  # new sends are taken (not shutting down)
    not_ready: str | None  # why no message could go out now (`Gateway.not_ready`)


class Status:
    def __init__(
        self,
        *,
        reads: MessageReads,
        scheduler: Scheduler,
        clock: Clock,
        accepting: Callable[[], bool],
        not_ready: Callable[[], str | None],
        shared: bool = False,
    ) -> None:
        self._reads = reads
        # On a cluster the queue is in the shared store: this node's scheduler holds
        # only its part, so the waiting counts come from the rows.
        self._shared = shared
        self._scheduler = scheduler
        self._clock = clock
        self._accepting = accepting
        self._not_ready = not_ready

    async def queue(self) -> QueueStatus:
        now = self._clock.time()
        if self._shared:
            waiting = await self._reads.waiting(now)
            depths = {
                "queued": {p.label: waiting.due.get(int(p), 0) for p in Priority},
                "scheduled": {p.label: waiting.later.get(int(p), 0) for p in Priority},
            }
            oldest = waiting.oldest_due
        else:
            depths = self._scheduler.depths()
            oldest = self._scheduler.oldest_due()
        sending = await self._reads.sending_counts()
        return QueueStatus(
            classes=tuple(
                ClassDepth(
                    p.label,
                    depths["queued"][p.label],
                    depths["scheduled"][p.label],
                    sending.get(int(p), 0),
                )
                for p in Priority
            ),
            in_flight=self._scheduler.in_flight,
            oldest_age=None if oldest is None else max(0.0, now - oldest),
            possible_duplicates=await self._reads.possible_duplicates(),
            accepting=self._accepting(),
            not_ready=self._not_ready(),
        )

    async def sending_by_route(self) -> dict[str, int]:
        """Messages handed to each route's driver and not yet answered."""
        return await self._reads.sending_by_route()
