"""What a campaign is, the states it moves through, and what its progress reads as.

States: `draft` (saved, nothing queued) → `scheduled` (started, its start time not yet
come) → `running` ⇄ `paused` → `finished` (every recipient handled) | `ended` (its end
time came first) | `cancelled` (stopped by a user; its messages not yet sending are
withdrawn). Every change is one `UPDATE ... WHERE state IN (...)` on the writer, so a
pause and a runner's pass never interleave: a pass reads the state in its own
transaction and queues nothing unless it is `running`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from gateway.contacts.audience import AudienceSpec


class CampaignState(enum.StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"
    ENDED = "ended"
    CANCELLED = "cancelled"

    @property
    def live(self) -> bool:
        return self in (CampaignState.SCHEDULED, CampaignState.RUNNING)

    @property
    def done(self) -> bool:
        return self in DONE


DONE = frozenset({CampaignState.FINISHED, CampaignState.ENDED, CampaignState.CANCELLED})

# action -> the states it may leave from
FROM: dict[str, frozenset[CampaignState]] = {
    "start": frozenset({CampaignState.DRAFT}),
    "pause": frozenset({CampaignState.SCHEDULED, CampaignState.RUNNING}),
    "resume": frozenset({CampaignState.PAUSED}),
    "cancel": frozenset(
        {
            CampaignState.DRAFT,
            CampaignState.SCHEDULED,
            CampaignState.RUNNING,
            CampaignState.PAUSED,
        }
    ),
}


@dataclass(frozen=True, slots=True)
class Split:
    """A template variant and its weight (the campaign's split over the template's)."""

    name: str
    weight: int


@dataclass(frozen=True, slots=True)
class CampaignSpec:
    """A campaign as a front end asks for it. Exactly one of `template` and `text`.
    `priority`: a class name, or None (bulk; the emergency purpose's own class,
    critical). `rate`: messages a second (None: `campaigns.default_rate`). Times are
    Unix seconds; `starts_at` None: at once when started."""

    name: str
    audience: AudienceSpec
    purpose: str
    template: str | None = None
    text: str | None = None
    split: tuple[Split, ...] = ()
    variables: tuple[tuple[str, str], ...] = ()
    priority: str | None = None
    starts_at: float | None = None
    ends_at: float | None = None
    rate: float | None = None


@dataclass(frozen=True, slots=True)
class Campaign:
    id: str
    spec: CampaignSpec
    state: CampaignState
    priority: str  # the class its messages take
    rate: float
    audience_size: int | None
    created_by: str
    created_at: float
    updated_at: float
    started_at: float | None
    done_at: float | None


@dataclass(slots=True)
class Tally:
    """Counts of one variant (or of the whole campaign). `queued`: messages queued
    (not blocked), whatever became of them since; `waiting`: not yet handed to a
    carrier; `sent`: handed over (delivered ones included); `failed`: failed or
    expired; `blocked`/`skipped`: recipients the policy blocked (a `blocked` message is
    stored) or that got no message (no number, no template, ...), by reason;
    `replies`, `opt_outs`: recipients who replied or opted out after its message."""

    queued: int = 0
    waiting: int = 0
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    cancelled: int = 0
    blocked: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    replies: int = 0
    opt_outs: int = 0

    def add_state(self, state: str, count: int) -> None:
        if state == "blocked":
            return  # counted by reason
        self.queued += count
        if state in ("queued", "scheduled", "sending"):
            self.waiting += count
        elif state in ("sent", "delivered"):
            self.sent += count
            if state == "delivered":
                self.delivered += count
        elif state in ("failed", "expired"):
            self.failed += count
        elif state == "cancelled":
            self.cancelled += count


@dataclass(frozen=True, slots=True)
class Progress:
    campaign: Tally
    variants: dict[str, Tally]  # by variant name ("" for a text without variants)
    handled: int  # recipients handled so far
    audience_size: int | None


@dataclass(frozen=True, slots=True)
class Judgement:
    """What the send policy would decide for an audience now, without queuing: the
    recipients it would let through, and those it would block, by reason."""

    audience_size: int
    judged: int  # recipients judged (all, unless the preview stopped early)
    allowed: int
    blocked: dict[str, int]
    skipped: dict[str, int]  # no number, invalid number, no route
    # Of `allowed`, those the policy would hold for later, by reason (quiet_hours, ...).
    waiting: dict[str, int] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.judged >= self.audience_size
