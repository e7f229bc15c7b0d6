"""The SMPP route: asyncio TCP (or TLS) around the sans-I/O session.

Theory of operation. A route holds one or more links; each link is one TCP connection
with one `Session` (ESME role), bound as a transceiver, or as a transmitter or a
receiver when the carrier wants separate binds. A supervisor task per link connects,
binds, pumps octets between the socket and the session, fires the session's timers at
its deadlines, and reconnects with exponential back-off and jitter when the link
ends. All protocol decisions are the session's; this module only does I/O and turns
session events into the driver contract:

- `submit()` sends every part of a message on one transmitting link (round robin over
  bound ones), each part a `submit_sm` whose future the session's `Response` resolves.
  Parts use the message's concatenation reference, so a resend reuses it.
  `submit_many()` sends a group of one-part messages on one link in one write (one
  future per message, settled by its answer) without a task per message.
- A submit_sm_resp status is classed by the status table (overridable per link):
  permanent → `PermanentSendError`, transient → `TransientSendError`, throttle →
  the link pauses (once per overload: the rest of the window answered throttled does not
  lengthen it; overloads that follow each other with no accept between double it) and the
  message goes back to the queue without losing its place or an attempt
  (`DriverNotReady` with `retry_after`). The gateway lowers the route's rate meanwhile.
- With `BindSlots` (`use_bind_slots`, a cluster's shared session cap) a link binds only
  holding a slot, waits `retry_after` while none is free, and gives it back once its
  session has ended (after unbind or the connection's loss). When the slots are revoked
  (a fenced cluster node) every link unbinds at once, one bound meanwhile as soon as it
  is, and a link still open `within` seconds later is hung up: the carrier must have
  seen its session end before a peer binds in its place. Receipts the carrier still
  owes go to its other sessions of the account, on whichever node.
- A bind refused for its credentials (ESME_RINVPASWD, ESME_RINVSYSID, ESME_RBINDFAIL)
  is never retried on a timer, since carriers lock accounts after a few: the route
  parks (`PARKED`, `submit()` raises `DriverAuthFailed`) and the `CredentialGate`
  (`gate.py`) lets no link bind until `resume()` (an operator's action) or a changed
  secret; links after the first bind only once the credentials were accepted.
- A response timeout, or a link lost with submits outstanding or between the parts of
  a message, is a transient error with `maybe_sent`: the carrier may have the message
  (or some of its parts), so the resend is flagged as a possible duplicate.
- `deliver_sm`/`data_sm` carrying a receipt go to the sink's `receipt` (those read
  together as one group to a sink that takes groups); others are inbound messages
  handed to the sink's `inbound`, each part of a concatenated one on its own (UDH or
  sar_* TLVs, as an `InboundPart`): the gateway reassembles them on disk, so a part
  acknowledged here survives a crash before the rest arrive (`inbound.py`).
  The `*_resp` is sent only after the sink returned, i.e. after the gateway committed;
  if the sink fails, the answer is ESME_RX_T_APPN and the carrier redelivers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import structlog

from drivers.base import (
    BindSlots,
    DriverAuthFailed,
    DriverNotReady,
    EventSink,
    OutboundSms,
    PermanentSendError,
    RouteHealth,
    RouteState,
    SubmitResult,
    TransientSendError,
)
from drivers.clock import Clock
from drivers.credentials import SecretError
from drivers.smpp.encoding import (
    LinkEncoding,
    PartParams,
    submit_parts,
)
from drivers.smpp.gate import AUTH_REFUSALS, CredentialGate
from drivers.smpp.inbound import Inbound
from drivers.smpp.link import Link
from drivers.smpp.options import SmppOptions
from drivers.smpp.pdu import Command, Value
from drivers.smpp.session import (
    BindMode,
    BindRejected,
    Bound,
    Event,
    LocalProtocolError,
    Request,
    Response,
    ResponseTimeout,
    Session,
    SessionConfig,
    SessionEnded,
    Unbound,
)
from drivers.smpp.session import Role as SessionRole
from drivers.smpp.status import Status, classify, status_code

log = structlog.get_logger("smsgw.smpp")


class SmppDriver:
    Options: ClassVar[type[SmppOptions]] = SmppOptions

    def __init__(self, name: str, options: SmppOptions, sink: EventSink, clock: Clock) -> None:
        self.name = name
        self._opts = options
        self._sink = sink
        self._clock = clock
        self._overrides = options.overrides()
        self._encoding = LinkEncoding(
            gsm_coding=options.gsm_coding,
            long_mode=options.long_messages,
            ref_bits=options.ref_bits,
        )
        modes: list[BindMode] = (
            ["transceiver"] if options.bind == "transceiver" else ["transmitter", "receiver"]
        )
        self._links = [Link(i, m) for i, m in enumerate(modes * options.binds)]
        self._turn = itertools.count()
        self._tasks: list[asyncio.Task[None]] = []
        self._room = asyncio.Event()  # set when a window slot frees or a link changes
        self._rng = random.Random()  # noqa: S311 - back-off jitter, not security
        self._state = RouteState.STARTING
        self._detail = "connecting"
        self._closing = False
        self._last_failure = ""  # why the route is down, for `health().detail`
        self._gate = CredentialGate(name, options, clock)
        self._counters = dict.fromkeys(
            ("submitted", "rejected", "throttled", "receipts", "inbound", "reconnects"), 0
        )
        self._inbound = Inbound(name, sink, self._counters)
        self._slots: BindSlots | None = None
        self._hang_ups: set[asyncio.Task[None]] = set()  # `_hang_up_dropped` pending

    def use_bind_slots(self, slots: BindSlots) -> None:
        self._slots = slots
        slots.on_revoke(self._drop_binds)

    def _drop_binds(self, within: float) -> None:
        """Our bind slots are revoked: unbind every session now, hang up those still
        open `within` seconds later; each link binds again only with a new slot."""
        log.warning("smpp_binds_revoked", route=self.name, within=within)
        for link in self._links:
            link.dropping = True
            link.unbind(self._now())
        task = asyncio.create_task(self._hang_up_dropped(within))
        self._hang_ups.add(task)
        task.add_done_callback(self._hang_ups.discard)

    async def _hang_up_dropped(self, within: float) -> None:
        await self._clock.sleep(within)
        for link in self._links:
            if link.dropping and link.writer is not None:
                log.warning("smpp_hang_up", route=self.name, link=link.index)
                link.hang_up()

    # -- the driver contract -------------------------------------------------------------

    async def start(self) -> None:
        self._gate.load()
        for link in self._links:
            self._tasks.append(asyncio.create_task(self._supervise(link)))

    def health(self) -> RouteHealth:
        in_flight = sum(lk.session.outstanding for lk in self._links if lk.session is not None)
        return RouteHealth(self._state, self._detail, in_flight, dict(self._counters))

    async def submit(self, sms: OutboundSms) -> SubmitResult:
        link = await self._link_with_room()
        parts = submit_parts(sms, self._encoding)
        ids: list[str] = []
        for i, part in enumerate(parts):
            params = self._submit_params(sms, part)
            try:
                response = await self._request(link, Command.SUBMIT_SM, params, part.tlvs)
            except TransientSendError as e:
                e.maybe_sent = e.maybe_sent or bool(ids)
                raise
            except DriverNotReady as e:
                if not ids:
                    raise
                # DriverNotReady means "nothing was sent", but the carrier already took
                # earlier parts (the link went between parts): the resend repeats them.
                raise TransientSendError(
                    "link lost mid-message", code="smpp:link_lost", maybe_sent=True
                ) from e
            status = response.pdu.status
            if status != Status.ESME_ROK:
                self._fail(link, status, sent_parts=i)
            ids.append(str(response.pdu.params.get("message_id", "")))
        link.throttle_backoff = 0.0
        self._counters["submitted"] += 1
        return SubmitResult(carrier_ids=tuple(ids))

    def submit_many(self, group: Sequence[OutboundSms]) -> list[asyncio.Future[SubmitResult]]:
        """`GroupSubmitter`: one-part messages go as submit_sm on one link while its
        window has room, encoded in one session call and written together at the end of
        this loop turn (`Link.nudge`), each answer settling its message's future; a long
        message, or one that finds no room, takes `submit()`'s way (which waits for room
        and keeps a message's parts on one link)."""
        try:
            link = self._pick_link()
        except (DriverNotReady, DriverAuthFailed):
            link = None  # each submit() raises it for its own message
        session = None if link is None else link.session
        if link is None or session is None:
            return [asyncio.ensure_future(self.submit(sms)) for sms in group]
        loop = asyncio.get_running_loop()
        room = session.window_free if session.can_send_request() else 0
        futures: list[asyncio.Future[SubmitResult]] = []
        requests: list[tuple[Mapping[str, Value], Mapping[int, Value], object]] = []
        answers: list[asyncio.Future[SubmitResult]] = []
        for sms in group:
            parts = submit_parts(sms, self._encoding)
            if len(parts) != 1 or len(requests) >= room:
                futures.append(asyncio.ensure_future(self.submit(sms)))
                continue
            part = parts[0]
            future: asyncio.Future[SubmitResult] = loop.create_future()
            requests.append((self._submit_params(sms, part), part.tlvs, _Answer(link, future)))
            answers.append(future)
            futures.append(future)
        if requests:
            try:
                refused = session.send_requests(Command.SUBMIT_SM, requests, now=self._now())
            except LocalProtocolError as e:  # refused before a byte was written
                refused = [e] * len(requests)
            for future, error in zip(answers, refused, strict=True):
                if error is not None:
                    future.set_exception(
                        DriverNotReady(f"route {self.name} cannot send now: {error}")
                    )
            if any(error is None for error in refused):
                link.nudge()
        return futures

    def _submit_params(self, sms: OutboundSms, part: PartParams) -> dict[str, Value]:
        return {
            "source_addr_ton": self._opts.source_addr_ton,
            "source_addr_npi": self._opts.source_addr_npi,
            "source_addr": sms.sender or self._opts.source_addr,
            "dest_addr_ton": self._opts.dest_addr_ton,
            "dest_addr_npi": self._opts.dest_addr_npi,
            "destination_addr": sms.to.removeprefix("+"),
            "registered_delivery": 1 if sms.want_receipt else 0,
            **part.params(),
        }

    def _answered(self, answer: _Answer, response: Response) -> None:
        """The carrier's answer to a submit sent in a group, as `submit()` would map it."""
        future, link = answer.future, answer.link
        if future.done():
            return
        status = response.pdu.status
        if status != Status.ESME_ROK:
            try:
                self._fail(link, status, sent_parts=0)
            except Exception as e:
                future.set_exception(e)
            return
        link.throttle_backoff = 0.0
        self._counters["submitted"] += 1
        future.set_result(SubmitResult((str(response.pdu.params.get("message_id", "")),)))

    def resume(self) -> bool:
        """Read the credentials again and let the links bind; False if not parked."""
        was = self._gate.refused
        if was is None:
            return False
        try:
            self._gate.reopen()
        except (DriverNotReady, SecretError) as e:
            log.error("smpp_resume_failed", route=self.name, error=str(e))
            return False
        log.info("smpp_resumed", route=self.name, was=was)
        self._last_failure = "resumed: binding"
        self._update_state()
        return True

    @property
    def parked_code(self) -> str | None:
        return self._gate.refused

    def credentials_mac(self, key: bytes) -> bytes:
        return self._gate.mac(key)

    def park(self, code: str) -> None:
        """Start parked: the carrier refused these credentials (`code`) before a restart."""
        log.error("smpp_still_parked", route=self.name, code=code)
        self._gate.refuse(code)
        self._update_state()

    async def aclose(self) -> None:
        self._closing = True
        self._gate.release()
        for task in self._hang_ups:
            task.cancel()
        for link in self._links:
            link.unbind(self._now())
        waiting = [t for t in (*self._tasks, *self._inbound.tasks) if not t.done()]
        if waiting:
            _, pending = await asyncio.wait(waiting, timeout=2.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._set_state(RouteState.DOWN, "closed")

    # -- submitting ----------------------------------------------------------------------

    async def _link_with_room(self) -> Link:
        """A bound link with a free window slot, waiting (up to the response timeout)
        while every bound link's window is full: the route's window may be larger than
        the binds' windows together, and a full window is not a reason to re-queue."""
        deadline = self._now() + self._opts.response_timeout
        while (link := self._pick_link()) is None:
            await self._wait_for_room(deadline)
        return link

    async def _wait_for_room(self, deadline: float) -> None:
        """Until a window slot frees or a link changes; DriverNotReady past `deadline`."""
        self._room.clear()
        try:
            await asyncio.wait_for(self._room.wait(), max(0.0, deadline - self._now()))
        except TimeoutError:
            raise DriverNotReady(
                f"route {self.name}: the carrier's window stayed full", code="smpp:window_full"
            ) from None

    def _pick_link(self) -> Link | None:
        """A link to send on now; None when bound links exist but their windows are
        full; raises DriverNotReady when none is bound or all are throttled."""
        now = self._now()
        bound = [
            lk
            for lk in self._links
            if lk.transmits and lk.bound and lk.session is not None and not lk.session.closed
        ]
        ready = [lk for lk in bound if lk.session is not None and lk.session.can_send_request()]
        if not ready:
            if bound and not any(lk.throttled_until > now for lk in bound):
                return None
            throttled = [lk.throttled_until - now for lk in self._links if lk.throttled_until > now]
            if throttled:
                raise DriverNotReady(
                    "carrier is throttling", code="smpp:throttled", retry_after=min(throttled)
                )
            if self._gate.refused is not None:
                raise DriverAuthFailed(self._gate.detail(), code=self._gate.refused)
            raise DriverNotReady(f"route {self.name} has no bound link with room")
        free = [lk for lk in ready if lk.throttled_until <= now]
        if not free:
            wait = min(lk.throttled_until for lk in ready) - now
            raise DriverNotReady("carrier is throttling", code="smpp:throttled", retry_after=wait)
        return free[next(self._turn) % len(free)]

    async def _request(
        self,
        link: Link,
        command: Command,
        params: Mapping[str, object],
        tlvs: Mapping[int, int | bytes],
    ) -> Response:
        session = link.session
        deadline = self._now() + self._opts.response_timeout
        while session is not None and link.bound and not session.can_send_request():
            # A later part of a long message waits for room on the link of the first.
            await self._wait_for_room(deadline)
            session = link.session
        if session is None or not link.bound or session.closed:
            raise DriverNotReady(f"route {self.name} lost its link")
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        try:
            session.send_request(command, params, tlvs, token=future, now=self._now())  # type: ignore[arg-type]  # params are codec values
        except LocalProtocolError as e:  # refused before a byte was written
            raise DriverNotReady(f"route {self.name} cannot send now: {e}") from None
        link.nudge()
        return await future

    def _fail(self, link: Link, status: int, *, sent_parts: int) -> None:
        kind = classify(status, self._overrides)
        code = status_code(status)
        maybe_sent = sent_parts > 0
        if kind == "throttle":
            self._counters["throttled"] += 1
            now = self._now()
            if now >= link.throttled_until:
                # A new overload. The rest of the window, sent before the pause, comes
                # back throttled too: that is the same overload and does not lengthen it.
                link.throttle_backoff = min(
                    self._opts.throttle_max,
                    max(self._opts.throttle_min, link.throttle_backoff * 2),
                )
                link.throttled_until = now + link.throttle_backoff
                log.warning(
                    "smpp_throttled",
                    route=self.name,
                    link=link.index,
                    code=code,
                    pause=link.throttle_backoff,
                )
            backoff = link.throttled_until - now
            if maybe_sent:
                raise TransientSendError(
                    "throttled mid-message", code=code, retry_after=backoff, maybe_sent=True
                )
            raise DriverNotReady(
                "carrier is throttling", code=code, retry_after=backoff, throttled=True
            )
        if kind == "permanent" and not maybe_sent:
            self._counters["rejected"] += 1
            raise PermanentSendError("carrier refused the message", code=code)
        raise TransientSendError(
            "carrier could not take the message now", code=code, maybe_sent=maybe_sent
        )

    # -- the link's life -----------------------------------------------------------------

    async def _supervise(self, link: Link) -> None:
        delay = self._opts.reconnect_min
        while not self._closing:
            if not await self._gate.wait_turn(
                link.index == 0, lambda: self._closing, self._secret_changed
            ):
                return
            link.dropping = False  # a revocation from here on drops what this slot binds
            slot = None if self._slots is None else await self._slots.acquire(link.index)
            if self._slots is not None and slot is None:
                self._last_failure = "waiting for a bind slot (the carrier's session cap)"
                self._update_state()
                await self._clock.sleep(self._slots.retry_after)
                continue
            try:
                bound = await self._run_link(link)
            except (OSError, TimeoutError, ssl.SSLError) as e:
                bound = False
                log.warning(
                    "smpp_connect_failed", route=self.name, link=link.index, error=type(e).__name__
                )
                self._last_failure = f"cannot connect: {type(e).__name__}"
            except Exception as e:  # a bug or a bad setting must not end the link for good
                bound = False
                self._last_failure = f"link error: {e}"
                log.error(
                    "smpp_link_failed",
                    route=self.name,
                    link=link.index,
                    error=type(e).__name__,
                    detail=str(e),
                )
            finally:  # the session has ended (its socket is closed): the slot is free
                if self._slots is not None and slot is not None:
                    await self._slots.release(slot)
            self._link_down(link)
            if self._closing:
                return
            if self._gate.refused is not None:  # parked: the gate holds the next bind
                delay = self._opts.reconnect_min
                continue
            delay = self._opts.reconnect_min if bound else min(self._opts.reconnect_max, delay * 2)
            self._counters["reconnects"] += 1
            await self._clock.sleep(delay / 2 + self._rng.uniform(0, delay / 2))

    def _secret_changed(self) -> None:
        log.info("smpp_credentials_changed", route=self.name)
        self.resume()

    async def _run_link(self, link: Link) -> bool:
        """Connect, bind and serve until the session ends; True if it was bound."""
        opts = self._opts
        context = None
        if opts.tls:
            context = ssl.create_default_context(cafile=opts.tls_ca_file)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(opts.host, opts.port, ssl=context), opts.bind_timeout
        )
        config = SessionConfig(
            window=opts.session_window,
            response_timeout=opts.response_timeout,
            enquire_link_interval=opts.enquire_link_interval,
            inactivity_timeout=opts.inactivity_timeout,
            session_init_timeout=opts.bind_timeout,
        )
        link.session = Session(SessionRole.ESME, config, now=self._now())
        link.writer = writer
        link.session.bind(
            link.mode, opts.system_id, self._gate.password, opts.system_type, now=self._now()
        )
        link.flush()
        was_bound = False
        read = asyncio.ensure_future(reader.read(65536))
        try:
            while link.session is not None and not link.session.closed:
                deadline = link.session.next_deadline()
                timeout = None if deadline is None else max(0.0, deadline - self._now())
                link.sleeps_until = deadline
                link.wake.clear()
                woke = asyncio.ensure_future(link.wake.wait())
                done, _ = await asyncio.wait(
                    {read, woke}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                woke.cancel()
                events: list[Event] = []
                if read in done:
                    data = read.result()
                    events += link.session.receive_data(data, self._now())
                    if data:
                        read = asyncio.ensure_future(reader.read(65536))
                events += link.session.on_timer(self._now())
                link.flush()
                for event in events:
                    was_bound = await self._on_event(link, event) or was_bound
                self._inbound.flush(link)
                link.flush()
                if not writer.is_closing():  # hung up (`_hang_up_dropped`): nothing to drain
                    await writer.drain()
        finally:
            read.cancel()
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
        return was_bound

    async def _on_event(self, link: Link, event: Event) -> bool:
        """Act on one session event; True when it bound the link."""
        if isinstance(event, Bound):
            link.bound = True
            self._last_failure = ""
            self._gate.accept()
            self._update_state()
            log.info("smpp_bound", route=self.name, link=link.index, mode=event.mode)
            if link.dropping:  # revoked while it bound
                link.unbind(self._now())
            return True
        if isinstance(event, Response):
            self._resolve(event.token, event)
            self._room.set()
        elif isinstance(event, ResponseTimeout):
            self._room.set()
            self._reject(
                event.token,
                TransientSendError(
                    "no answer from the carrier in time", code="smpp:timeout", maybe_sent=True
                ),
            )
        elif isinstance(event, BindRejected):
            code = status_code(event.status)
            auth = event.status in AUTH_REFUSALS
            log.error("smpp_bind_rejected", route=self.name, link=link.index, code=code, auth=auth)
            self._last_failure = f"bind rejected {code}"
            if auth:
                self._gate.refuse(code)
                if link.session is not None:
                    link.session.close()  # nothing is in flight before a bind: just hang up
                self._update_state()
            else:
                self._set_state(RouteState.DOWN, self._last_failure)
        elif isinstance(event, Request):
            await self._inbound.take(link, event.pdu)
        elif isinstance(event, SessionEnded):
            for item in event.in_doubt:
                self._reject(
                    item.token,
                    TransientSendError(
                        "link lost with the submit outstanding",
                        code="smpp:link_lost",
                        maybe_sent=True,
                    ),
                )
            ended_by_us = isinstance(event, Unbound) and not event.by_peer
            ours = (self._closing or link.dropping) and ended_by_us
            (log.info if ours else log.warning)(
                "smpp_session_ended",
                route=self.name,
                link=link.index,
                reason=type(event).__name__,
                in_doubt=len(event.in_doubt),
            )
        return False

    def _link_down(self, link: Link) -> None:
        if link.session is not None:
            for item in link.session.close():
                self._reject(
                    item.token,
                    TransientSendError(
                        "link lost with the submit outstanding",
                        code="smpp:link_lost",
                        maybe_sent=True,
                    ),
                )
        link.session, link.writer, link.bound = None, None, False
        self._update_state()

    # -- state ---------------------------------------------------------------------------

    def _update_state(self) -> None:
        self._room.set()
        if self._closing:
            return
        bound = [lk for lk in self._links if lk.bound]
        transmitting = [lk for lk in bound if lk.transmits]
        if not transmitting and self._gate.refused is not None:
            self._set_state(RouteState.PARKED, self._gate.detail())
        elif not transmitting:
            self._set_state(RouteState.DOWN, self._last_failure or "no bound transmitter")
        elif len(bound) < len(self._links):
            detail = f"{len(bound)} of {len(self._links)} bound"
            if self._gate.refused is not None:  # the bound links serve on; none rebinds
                detail += f"; {self._gate.detail()}"
            self._set_state(RouteState.DEGRADED, detail)
        else:
            self._set_state(RouteState.UP, f"{len(bound)} bound")

    def _set_state(self, state: RouteState, detail: str) -> None:
        changed = state != self._state or detail != self._detail
        self._state, self._detail = state, detail
        if changed:
            self._sink.health_changed(self.name, self.health())

    def _now(self) -> float:
        return self._clock.monotonic()

    def _resolve(self, token: object, response: Response) -> None:
        if isinstance(token, _Answer):
            self._answered(token, response)
        elif isinstance(token, asyncio.Future) and not token.done():
            token.set_result(response)

    @staticmethod
    def _reject(token: object, error: Exception) -> None:
        if isinstance(token, _Answer):
            token = token.future
        if isinstance(token, asyncio.Future) and not token.done():
            token.set_exception(error)


@dataclass(slots=True)
class _Answer:
    """The session token of a submit sent by `submit_many`: where its answer goes."""

    link: Link
    future: asyncio.Future[SubmitResult]
