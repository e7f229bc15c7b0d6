"""The live dashboard: queues, routes, throughput and failures as one JSON snapshot.

Theory of operation:

- `EventTail` counts transitions (sent, delivered, failed, expired) and failure codes
  per minute over the last hour. It reads them through the application layer
  (`gw.usecases.activity`) by position: on first use the position of the hour's first
  event, then every refresh reads only the events after the last position it saw, so
  a refresh costs what happened since the previous one, not the size of the history,
  and the figures survive a restart.
- `build_snapshot()` joins those counts with the scheduler's in-memory depths and
  each route's health into a dict of numbers, names and error codes: never a phone
  number or a body, so viewers and auditors may see all of it.
- `DashboardHub` polls (every `POLL_SECONDS` on the gateway's clock) only while at
  least one browser listens, and hands every listener the newest snapshot when it
  differs from the one before. `GET /panel/events` streams it as server-sent events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog
from aiohttp import web

from drivers.clock import Clock
from gateway.admin.directory_card import sign_in_card
from gateway.admin.panel import panel, recheck_if_due
from gateway.admin.render import render
from gateway.admin.route_cards import route_cards
from gateway.admin.routing import ANY_ROLE, PanelRoute, current_session
from gateway.admin.sessions import Session
from gateway.app import Gateway
from gateway.usecases.activity import Activity
from gateway.web.context import GATEWAY

log = structlog.get_logger("smsgw.admin.dashboard")

BUCKET_SECONDS = 60
WINDOW_SECONDS = 3600
POLL_SECONDS = 0.5
TAIL_BATCH = 5000
OUTCOMES = ("sent", "delivered", "failed", "expired")
FAILURE_STATES = frozenset({"failed", "expired"})


@dataclass(slots=True)
class Bucket:
    counts: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)


class EventTail:
    """Per-minute transition counts over the last hour, fed from `activity`."""

    def __init__(self, activity: Activity, clock: Clock) -> None:
        self._activity = activity
        self._clock = clock
        self._position: int | None = None
        self.buckets: dict[int, Bucket] = {}
        self._reading = asyncio.Lock()  # two refreshes must not count the same events

    async def refresh(self) -> bool:
        """Read the events since the last refresh; True if any arrived or aged out."""
        async with self._reading:
            return await self._refresh()

    async def _refresh(self) -> bool:
        now = self._clock.time()
        first_minute = _minute(now) - WINDOW_SECONDS // BUCKET_SECONDS + 1
        if self._position is None:
            self._position = await self._activity.position_before(first_minute * 60)
        changed = False
        while True:
            events = await self._activity.after(self._position, TAIL_BATCH)
            for event in events:
                self._position = event.position
                if event.state not in OUTCOMES:
                    continue
                minute = _minute(event.at)
                if minute < first_minute:
                    continue
                bucket = self.buckets.setdefault(minute, Bucket())
                bucket.counts[event.state] += 1
                if event.state in FAILURE_STATES:
                    bucket.codes[event.error_code or "unknown"] += 1
                changed = True
            if len(events) < TAIL_BATCH:
                break
        for minute in [m for m in self.buckets if m < first_minute]:
            del self.buckets[minute]
            changed = True
        return changed

    def totals(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for bucket in self.buckets.values():
            total.update(bucket.counts)
        return total

    def failure_codes(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for bucket in self.buckets.values():
            total.update(bucket.codes)
        return total

    def sends_per_second(self, now: float) -> tuple[int, list[float]]:
        """(start of the first minute, sends per second in each of the last 60 minutes).

        The current minute is divided by the seconds it has lasted so far, so the line
        does not dip at its right end."""
        last = _minute(now)
        first = last - WINDOW_SECONDS // BUCKET_SECONDS + 1
        series = []
        for minute in range(first, last + 1):
            sent = self.buckets[minute].counts["sent"] if minute in self.buckets else 0
            seconds = BUCKET_SECONDS if minute < last else max(1.0, now - last * BUCKET_SECONDS)
            series.append(round(sent / seconds, 3))
        return first * BUCKET_SECONDS, series


def _minute(ts: float) -> int:
    return math.floor(ts / BUCKET_SECONDS)


def _share(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(part / whole, 4)


async def build_snapshot(gw: Gateway, tail: EventTail) -> dict[str, Any]:
    """Everything the dashboard shows; numbers, names and error codes only."""
    now = gw.clock.time()
    q = await gw.usecases.status.queue()
    classes = [
        {"name": c.name, "queued": c.queued, "scheduled": c.scheduled, "sending": c.sending}
        for c in q.classes
    ]
    totals = tail.totals()
    finals = totals["delivered"] + totals["failed"] + totals["expired"]
    start, series = tail.sends_per_second(now)
    return {
        "queue": {
            "classes": classes,
            "queued": sum(c.queued for c in q.classes),
            "scheduled": sum(c.scheduled for c in q.classes),
            "sending": sum(c.sending for c in q.classes),
            "oldest_age_seconds": None if q.oldest_age is None else int(q.oldest_age),
            "possible_duplicates": q.possible_duplicates,
            # The badge says "Accepting messages" only while some route can send them.
            "accepting": q.not_ready is None,
            "not_ready": q.not_ready,
        },
        "throughput": {
            "start": start,
            "step": BUCKET_SECONDS,
            "per_second": series,
            "sent_last_hour": totals["sent"],
        },
        "outcomes": {
            **{name: totals[name] for name in ("delivered", "failed", "expired")},
            **{
                f"{name}_rate": _share(totals[name], finals)
                for name in ("delivered", "failed", "expired")
            },
        },
        "failures": [
            {"code": code, "count": n} for code, n in tail.failure_codes().most_common(10)
        ],
        "routes": route_cards(gw, await gw.usecases.status.sending_by_route()),
        "sign_in": await sign_in_card(gw),  # None without a directory
    }


class DashboardHub:
    """One poller for every open dashboard; runs only while someone listens."""

    def __init__(self, gw: Gateway, interval: float = POLL_SECONDS) -> None:
        self._gw = gw
        self._interval = interval
        self._tail = EventTail(gw.usecases.activity, gw.clock)
        self._listeners: set[asyncio.Queue[bytes]] = set()
        self._task: asyncio.Task[None] | None = None
        self._last: bytes | None = None
        self._compared: bytes | None = None
        self._polling = asyncio.Lock()

    async def current(self) -> bytes:
        """The newest snapshot as JSON (computed now if nobody is polling)."""
        if self._task is None or self._last is None:
            await self._poll_once()
        assert self._last is not None
        return self._last

    def subscribe(self) -> asyncio.Queue[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)
        self._listeners.add(queue)
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        return queue

    def unsubscribe(self, queue: asyncio.Queue[bytes]) -> None:
        self._listeners.discard(queue)

    async def aclose(self) -> None:
        """Stop polling and tell every open stream to end (an empty message)."""
        for queue in self._listeners:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(b"")
        self._listeners.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        try:
            while self._listeners:
                try:
                    if await self._poll_once():
                        self._publish()
                except Exception as e:  # a failed poll must not end the live view
                    log.error("dashboard_poll_failed", error=type(e).__name__)
                await self._gw.clock.sleep(self._interval)
        finally:
            self._task = None

    async def _poll_once(self) -> bool:
        """Refresh the snapshot; True if what the dashboard shows changed."""
        async with self._polling:
            await self._tail.refresh()
            snapshot = await build_snapshot(self._gw, self._tail)
            compared = msgspec.json.encode(snapshot)
            changed = compared != self._compared
            self._compared = compared
            if changed or self._last is None:
                snapshot["at"] = self._gw.clock.time()
                self._last = msgspec.json.encode(snapshot)
            return changed

    def _publish(self) -> None:
        assert self._last is not None
        for queue in self._listeners:
            if queue.full():
                queue.get_nowait()  # a slow browser gets only the newest snapshot
            queue.put_nowait(self._last)


# -- pages ---------------------------------------------------------------------------------

DASHBOARD_HUB: web.AppKey[DashboardHub] = web.AppKey("dashboard_hub", DashboardHub)
KEEPALIVE_SECONDS = 15.0


def install(app: web.Application, gw: Gateway) -> None:
    """Give the app its one hub, closed with the app."""
    hub = DashboardHub(gw)
    app[DASHBOARD_HUB] = hub

    async def close(_: web.Application) -> None:
        await hub.aclose()

    # On shutdown, before aiohttp waits for open connections: the streams end at once.
    app.on_shutdown.append(close)


def _share_text(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


async def dashboard_page(request: web.Request) -> web.Response:
    snap = json.loads(await request.app[DASHBOARD_HUB].current())
    return render(request, "dashboard.html", snap=snap, fmt_share=_share_text)


async def _session_deadline(request: web.Request, session: Session) -> float | None:
    """When this session ends if nothing else touches it; None if it has ended.

    Read without touching: a stream left open must not keep a session alive."""
    p = panel(request)
    row = await p.repo.session(session.id_hash)
    if row is None:
        return None
    user = await p.repo.user_by_id(session.user_id)
    if user is None or await recheck_if_due(p, user[0]) is None:  # left the groups
        return None
    return min(row.last_seen + p.sessions.idle, row.created_at + p.sessions.absolute)


async def events_stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: `snapshot` (JSON) on every change; `logout` when the session
    ends, after which the browser goes to the sign-in page.

    The stream does not keep its session alive: it ends at the session's idle or
    absolute deadline unless another request moved it, and it looks again every
    `KEEPALIVE_SECONDS`, so a sign-out elsewhere (or a disabled user) ends it too."""
    gw = request.app[GATEWAY]
    hub = request.app[DASHBOARD_HUB]
    sessions = panel(request).sessions
    session = current_session(request)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    listener = hub.subscribe()
    deadline = min(session.last_seen + sessions.idle, session.created_at + sessions.absolute)
    try:
        await response.write(
            b"retry: 2000\nevent: snapshot\ndata: " + await hub.current() + b"\n\n"
        )
        check_at = gw.clock.time() + KEEPALIVE_SECONDS
        while True:
            now = gw.clock.time()
            if now >= min(deadline, check_at):
                found = await _session_deadline(request, session)
                if found is None or found <= now:
                    await response.write(b"event: logout\ndata: {}\n\n")
                    break
                deadline, check_at = found, now + KEEPALIVE_SECONDS
                await response.write(b": keepalive\n\n")
            data = await _next(gw.clock, listener, max(0.0, min(deadline, check_at) - now))
            if data == b"":  # the gateway is stopping
                break
            if data is not None:
                await response.write(b"event: snapshot\ndata: " + data + b"\n\n")
    except (ConnectionResetError, ConnectionError):
        pass  # the browser went away
    finally:
        hub.unsubscribe(listener)
    return response


async def _next(clock: Clock, listener: asyncio.Queue[bytes], limit: float) -> bytes | None:
    """The next snapshot, or None after `limit` seconds on `clock`."""
    getter = asyncio.ensure_future(listener.get())
    sleeper = asyncio.ensure_future(clock.sleep(limit))
    try:
        await asyncio.wait({getter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (getter, sleeper):
            if not task.done():
                task.cancel()
    if getter.done() and not getter.cancelled():
        return getter.result()
    return None


ROUTES: tuple[PanelRoute, ...] = (
    PanelRoute("GET", "/", dashboard_page, ANY_ROLE, False, "dashboard"),
    PanelRoute("GET", "/events", events_stream, ANY_ROLE, False, "dashboard_events"),
)
