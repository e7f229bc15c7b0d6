"""An SMSC simulator: the server side of SMPP 3.4, for `make run` and fault tests.

Theory of operation. Each TCP connection gets a `_Link`, an asyncio Protocol around a
`Session(Role.SMSC)`. Every callback (octets in, a session timer, a call from a test)
ends in `_Link.sync`: write out `data_to_send()`, close the transport once the session
is closed, re-arm one loop timer at `next_deadline()`. Session time is loop time, so
session timers run in real seconds whatever the clock; only receipt and redelivery
delays use the injected clock, and a test on a `FakeClock` releases them by `advance()`.

A bind must present the one credential pair of `SimulatorConfig`. A submit_sm or data_sm
is recorded in `submitted` (decoded with `decode_inbound`; parts stay apart) and answered
at once with a fresh message id, unless a fault control queued a refusal for it. One
that asks for a receipt (registered_delivery bit 0) gets one `receipt_delay` later:
Appendix B text with an empty `text:` field, plus receipted_message_id and message_state.
Receipts and `inject_mo` messages go through the outbox, which drains into sessions bound
as receiver or transceiver, within each one's window; only one system_id can bind, so
each is the submitter's. Until one binds, the outbox waits. A deliver_sm refused or
unanswered (response timer) goes back after `redelivery_delay`, as a real SMSC retries
one answered with a temporary error (ESME_RX_T_APPN); one refused as permanently
undeliverable (ESME_RX_P_APPN, ESME_RX_R_APPN), or sent `max_delivery_attempts` times,
is given up (`abandoned`). One in doubt when its connection ends goes back at once.
Each send after the first counts in `redelivered`; `receipts_sent` and `mo_sent` count
deliver_sm the ESME accepted, `deliveries` every deliver_sm written (so one sent and not
yet answered can be seen), `delivery_errors` every error answer (`delivery_error_statuses`
by status).

Faults. `throttle` and `reject_next` queue the statuses the next submits get;
`throttle_storm` throttles every other one of the next submits (or every n-th);
`limit_rate` accepts so many a second (on the injected clock) and throttles the excess.
`arrivals` records when each submit arrived (loop time) and the status it got, so a
test can count the rate a route really sends at; `submit_log` adds the connection and
the bind's system_type (which gateway node sent it, when each names itself there).
`max_sessions` is a carrier's session cap: a bind while that many are bound gets
ESME_RALYBND (counted in `already_bound`); a bound connection lost without an unbind
keeps counting for `lost_session_hold` seconds, as a carrier's session lingers until
its own timers drop it. `peak_sessions` is the most sessions counted at once (bound and
lingering), `session_log` when each bound session began and ended, and by which node.
`stop_answering` pauses reading on every transport (octets wait in the kernel and the
stream stays in step) and holds back what we would write; `resume_answering` undoes
both. `drop_connections` aborts every transport: stop answering first to lose a window
of unanswered submits. `send_garbage` writes a frame of unknown command_id, then one
whose command_length no reader accepts.

Bodies and numbers stay in memory for tests and are never logged: log lines carry
connection, bind and counter events only.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import struct
from collections import Counter, deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Self, cast

import structlog

from drivers.clock import Clock, SystemClock
from drivers.smpp.encoding import (
    DC_DEFAULT,
    DC_UCS2,
    ESM_UDHI,
    concat_from_tlvs,
    decode_inbound,
    part_limit,
)
from drivers.smpp.pdu import Command, Pdu, Tag, Value
from drivers.smpp.session import (
    BindRequest,
    Event,
    InFlight,
    Request,
    Response,
    ResponseTimeout,
    Role,
    Session,
    SessionEnded,
    State,
    Unbound,
)
from drivers.smpp.sim_records import (
    SessionRecord,
    SimulatorConfig,
    SubmitRecord,
    SubmittedMessage,
)
from drivers.smpp.status import Status, status_name
from drivers.text import encode_gsm7_septets, encode_ucs2, is_gsm7

__all__ = [
    "SessionRecord",
    "SimulatorConfig",
    "SmscSimulator",
    "SubmitRecord",
    "SubmittedMessage",
    "run_forever",
]
log = structlog.get_logger("smsgw.simulator")

SMSC_SYSTEM_ID = "smsgw-sim"  # what bind_resp says the SMSC is called
ESM_RECEIPT = 0x04  # esm_class message type: SMSC delivery receipt
FIRST_MESSAGE_ID = 1_000_000  # large enough that its hex and decimal spellings differ
# stat word -> (message_state TLV, err): SMPP 3.4 5.2.28 and Appendix B.
_OUTCOMES = {"DELIVRD": (2, "000"), "EXPIRED": (3, "000"), "UNDELIV": (5, "001")}
_ENCODERS: Mapping[int, Callable[[str], bytes]] = {0: encode_gsm7_septets, 8: encode_ucs2}
# A receipt's address fields are its submit's, the other way round.
_REPLY = {"source_addr": "destination_addr", "source_addr_ton": "dest_addr_ton"}
_REPLY |= {"source_addr_npi": "dest_addr_npi"}
_REPLY |= {value: key for key, value in _REPLY.items()}
_BOUND = frozenset({State.BOUND_TX, State.BOUND_RX, State.BOUND_TRX})
# deliver_sm answers that mean "never send this again" (SMPP 3.4 5.1.3); any other
# error is retried.
_PERMANENT = frozenset({Status.ESME_RX_P_APPN, Status.ESME_RX_R_APPN})


@dataclass(eq=False)
class _Delivery:
    """A deliver_sm waiting in the outbox or in flight (the token of its request)."""

    kind: Literal["receipt", "mo"]
    params: dict[str, Value]
    tlvs: dict[int, Value]
    attempts: int = 0


class _Link(asyncio.Protocol):
    """One TCP connection and its SMSC session."""

    def __init__(self, sim: SmscSimulator, loop: asyncio.AbstractEventLoop) -> None:
        self.sim = sim
        self.loop = loop
        self.session = Session(Role.SMSC, sim.config.session, now=loop.time())
        self.transport: asyncio.Transport | None = None
        self.system_id: str | None = None
        self.system_type = ""
        self.number = 0  # the simulator's connection count when it opened
        self.closed: asyncio.Future[None] = loop.create_future()
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not an asyncio.Transport subclass).
        self.transport = cast(asyncio.Transport, transport)
        sim = self.sim
        sim._links.append(self)
        sim.connections += 1
        self.number = sim.connections
        log.info("simulator_connected", connections=sim.connections, open=len(sim._links))
        if not sim.answering:
            self.transport.pause_reading()
        self.handle([])

    def data_received(self, data: bytes) -> None:
        self.handle(self.session.receive_data(data, self.loop.time()))

    def connection_lost(self, exc: Exception | None) -> None:
        self.sim._links.remove(self)
        if self.session.state in _BOUND:  # no unbind: the carrier keeps it a while
            self.sim._lingering.append(self.loop.time() + self.sim.config.lost_session_hold)
        self.handle(self.session.receive_data(b"", self.loop.time()))
        log.info("simulator_disconnected", system_id=self.system_id, open=len(self.sim._links))
        self.closed.set_result(None)

    def handle(self, events: list[Event]) -> None:
        for event in events:
            self.sim._on_event(self, event)
        self.sync()
        self.sim._notify()

    def sync(self) -> None:
        """Write what the session queued (unless not answering), close the transport if
        the session is closed, and re-arm the timer."""
        if self.transport is None:
            return
        data = self.session.data_to_send() if self.sim.answering else b""
        if data and not self.transport.is_closing():
            self.transport.write(data)
        if self.session.closed:
            self.transport.close()
        self._disarm()
        deadline = self.session.next_deadline()
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._fire, deadline)

    def _fire(self, deadline: float) -> None:
        self._timer = None  # the loop may run it a clock tick early; the session must not see that
        self.handle(self.session.on_timer(max(self.loop.time(), deadline)))

    def abort(self) -> None:
        """Drop the connection at once, unanswered requests and all."""
        self.sim._requeue(self.session.close())
        self._disarm()
        if self.transport is not None:
            self.transport.abort()

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class SmscSimulator:
    """An SMPP 3.4 SMSC on a TCP port; see the module docstring. Start it with
    `start()` or `async with`; call everything else from the event loop's thread."""

    def __init__(self, config: SimulatorConfig | None = None, clock: Clock | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.clock: Clock = clock or SystemClock()
        self.submitted: list[SubmittedMessage] = []
        self.arrivals: list[tuple[float, int]] = []  # (loop time, status answered)
        self.submit_log: list[SubmitRecord] = []
        self.already_bound = 0  # binds refused with ESME_RALYBND (the session cap)
        self._lingering: list[float] = []  # loop times lost sessions stop counting
        self.peak_sessions = 0  # the most bound (and lingering) sessions at once
        self.session_log: list[SessionRecord] = []
        self.binds = self.submits = self.receipts_sent = self.mo_sent = 0
        self.throttled = self.connections = self.redelivered = self.deliveries = 0
        self.delivery_errors = self.abandoned = 0  # deliver_sm answered with an error; given up
        self.delivery_error_statuses: Counter[int] = Counter()  # those errors by status
        self._random = random.Random(self.config.seed)  # noqa: S311 - simulation, not security
        self._ids = itertools.count(FIRST_MESSAGE_ID)
        self._mo_refs = itertools.count(1)
        self._refusals: deque[int] = deque()
        self._limit: tuple[float, float, float, float] | None = None  # rate, burst, tokens, at
        self._outbox: deque[_Delivery] = deque()
        self._links: list[_Link] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.answering = True  # False between stop_answering and resume_answering
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._port: int | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        loop = asyncio.get_running_loop()
        host, port = self.config.host, self.config.port
        self._server = await loop.create_server(
            lambda: _Link(self, loop), host, port, ssl=self.config.tls
        )
        self._port = int(self._server.sockets[0].getsockname()[1])
        log.info("simulator_started", port=self._port)

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the simulator has not started")
        return self._port

    async def aclose(self) -> None:
        """Stop listening, unbind bound clients (waiting `shutdown_grace` for their
        unbind_resp), drop the rest, cancel pending receipts. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        links, now = list(self._links), asyncio.get_running_loop().time()
        for link in links:
            if self.answering and link.session.state in _BOUND:
                link.session.unbind(now=now)  # its unbind_resp closes the session
                link.sync()
            else:
                link.abort()
        closed = [link.closed for link in links]
        if closed:
            await asyncio.wait(closed, timeout=self.config.shutdown_grace)
        for link in list(self._links):
            link.abort()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*closed, *self._tasks, return_exceptions=True)
        await server.wait_closed()
        counts = {"binds": self.binds, "submits": self.submits, "mo_sent": self.mo_sent}
        log.info("simulator_stopped", receipts_sent=self.receipts_sent, **counts)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` holds, checked after every event; bound it with
        `asyncio.wait_for`."""
        while not predicate():
            await self._changed.wait()

    @property
    def open_connections(self) -> int:
        return len(self._links)

    # -- injection and faults ----------------------------------------------------------

    def inject_mo(
        self,
        source: str,
        destination: str,
        text: str,
        *,
        data_coding: int | None = None,
        parts: int = 1,
        reference: int | None = None,
        seqs: Collection[int] | None = None,
    ) -> None:
        """Queue an MO deliver_sm from `source` to `destination` (a leading + means
        international). data_coding 0 (GSM) or 8 (UCS-2) is chosen from the text unless
        given (0 or 8); `parts` > 1 splits it evenly, each part with a concatenation
        UDH (8-bit `reference`, a fresh one unless given). `seqs` sends only those parts,
        in that order (a part lost on the way, or the rest of a message sent later).
        ValueError if a part does not fit one SMS."""
        if data_coding is None:
            data_coding = DC_DEFAULT if is_gsm7(text) else DC_UCS2
        encoder = _ENCODERS.get(data_coding)
        if encoder is None:
            raise ValueError("data_coding must be 0 or 8")
        if not 1 <= parts <= min(255, max(len(text), 1)):
            raise ValueError("parts must be in 1..255 and at most one per character")
        size, extra = divmod(len(text), parts)
        bounds = [i * size + min(i, extra) for i in range(parts + 1)]
        bodies = [encoder(text[a:b]) for a, b in itertools.pairwise(bounds)]
        udh_size = 0 if parts == 1 else 6
        if max(map(len, bodies)) > part_limit(data_coding, udh_size).octets:
            raise ValueError(f"the text does not fit in {parts} part(s)")
        if reference is None:
            reference = next(self._mo_refs) & 0xFF
        elif not 0 <= reference <= 0xFF:
            raise ValueError("reference must be in 0..255")
        chosen = list(range(1, parts + 1)) if seqs is None else list(seqs)
        if not all(1 <= seq <= parts for seq in chosen):
            raise ValueError("seqs must be in 1..parts")
        for seq in chosen:
            body = bodies[seq - 1]
            udh = bytes((5, 0, 3, reference, parts, seq)) if udh_size else b""
            params: dict[str, Value] = {
                **_addresses(source, destination),
                "esm_class": ESM_UDHI if udh_size else 0,
                "data_coding": data_coding,
                "short_message": udh + body,
            }
            self._outbox.append(_Delivery("mo", params, {}))
        self._pump()

    def throttle(self, count: int) -> None:
        """Answer the next `count` submits with ESME_RTHROTTLED (after any queued)."""
        self.reject_next(Status.ESME_RTHROTTLED, count)

    def throttle_storm(self, submits: int, every: int = 2) -> None:
        """Of the next `submits` submits (after any queued refusal), answer the first and
        then every `every`-th with ESME_RTHROTTLED; accept the others."""
        if every < 1:
            raise ValueError("every must be at least 1")
        self._refusals.extend(
            Status.ESME_RTHROTTLED if i % every == 0 else Status.ESME_ROK for i in range(submits)
        )

    def limit_rate(self, rate: float | None, burst: float = 1.0) -> None:
        """Accept at most `rate` submits a second, `burst` at once (a token bucket on the
        injected clock), answering the excess with ESME_RTHROTTLED; None: no limit."""
        self._limit = None if rate is None else (rate, burst, burst, self.clock.monotonic())

    def _within_limit(self) -> bool:
        if self._limit is None:
            return True
        rate, burst, tokens, at = self._limit
        now = self.clock.monotonic()
        tokens = min(burst, tokens + (now - at) * rate)
        self._limit = (rate, burst, tokens - 1 if tokens >= 1 else tokens, now)
        return tokens >= 1

    def reject_next(self, status: int, count: int = 1) -> None:
        """Answer the next `count` submits with `status` (after any queued)."""
        if status == Status.ESME_ROK or not 0 < status <= 0xFFFFFFFF:
            raise ValueError("a rejection needs an error status")
        self._refusals.extend([status] * count)

    def drop_connections(self) -> None:
        """Abort every connection without answering what is outstanding."""
        for link in list(self._links):
            link.abort()
        log.info("simulator_dropped_connections", connections=self.connections)

    def stop_answering(self) -> None:
        """Keep every connection open but read and write nothing (a half-open link)."""
        self.answering = False
        for link in self._links:
            if link.transport is not None:
                link.transport.pause_reading()

    def resume_answering(self) -> None:
        self.answering = True
        for link in list(self._links):
            if link.transport is not None:
                link.transport.resume_reading()
            link.sync()
        self._pump()

    def send_garbage(self, *, fatal: bool = True) -> None:
        """Write to every connection a frame of unknown command_id (the peer answers
        generic_nack) and, if `fatal`, one with a command_length of 0xFFFFFFF0."""
        unknown = struct.pack(">IIII", 16, 0xFF, 0, 0x7FFFFFF0)  # 0xFF: reserved, 5.1.2.1
        absurd = struct.pack(">IIII", 0xFFFFFFF0, Command.ENQUIRE_LINK, 0, 0x7FFFFFF1)
        for link in self._links:
            link.sync()  # whatever the session queued goes first, whole
            if link.transport is not None and not link.transport.is_closing():
                link.transport.write(unknown + absurd if fatal else unknown)

    # -- events ------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _on_event(self, link: _Link, event: Event) -> None:
        if isinstance(event, BindRequest):
            self._on_bind(link, event)
        elif isinstance(event, Request):
            self._on_request(link, event.pdu)
        elif isinstance(event, Response) and isinstance(event.token, _Delivery):
            pdu = event.pdu
            if pdu.command is Command.DELIVER_SM_RESP and pdu.status == Status.ESME_ROK:
                self.receipts_sent += event.token.kind == "receipt"
                self.mo_sent += event.token.kind == "mo"
                self._pump()  # a window slot is free
            else:
                self.delivery_errors += 1
                self.delivery_error_statuses[pdu.status] += 1
                self._again(event.token, final=pdu.status in _PERMANENT)
        elif isinstance(event, ResponseTimeout) and isinstance(event.token, _Delivery):
            self._again(event.token)
        elif isinstance(event, SessionEnded):
            if link.system_id is not None:  # a bound session ended
                kind = "unbound" if isinstance(event, Unbound) else "lost"
                now = link.loop.time()
                self.session_log.append(SessionRecord(now, kind, link.number, link.system_type))
            self._requeue(event.in_doubt)

    def _on_bind(self, link: _Link, event: BindRequest) -> None:
        status: int = Status.ESME_ROK
        if event.system_id != self.config.system_id:
            status = Status.ESME_RINVSYSID
        elif event.password != self.config.password:
            status = Status.ESME_RINVPASWD
        elif self._sessions_full(link):
            status = Status.ESME_RALYBND
            self.already_bound += 1
        if status != Status.ESME_ROK:
            link.session.reject_bind(event.pdu, status)
            log.info("simulator_bind_refused", mode=event.mode, status=status_name(status))
            return
        link.session.accept_bind(event.pdu, SMSC_SYSTEM_ID)
        link.system_id = event.system_id
        link.system_type = event.pdu.param("system_type", str)
        self.binds += 1
        now = link.loop.time()
        self.session_log.append(SessionRecord(now, "bound", link.number, link.system_type))
        lingering = sum(1 for t in self._lingering if t > now)
        others = sum(1 for lk in self._links if lk is not link and lk.session.state in _BOUND)
        self.peak_sessions = max(self.peak_sessions, others + 1 + lingering)
        log.info("simulator_bound", system_id=link.system_id, mode=event.mode, binds=self.binds)
        self._pump()

    def _sessions_full(self, binding: _Link) -> bool:
        if self.config.max_sessions is None:
            return False
        now = binding.loop.time()
        self._lingering = [t for t in self._lingering if t > now]
        bound = sum(1 for lk in self._links if lk is not binding and lk.session.state in _BOUND)
        return bound + len(self._lingering) >= self.config.max_sessions

    def _on_request(self, link: _Link, pdu: Pdu) -> None:
        if link.session.closed:
            return  # arrived behind an unbind: the peer gets no answer, as from a real SMSC
        if pdu.command not in (Command.SUBMIT_SM, Command.DATA_SM):
            link.session.respond(pdu, Status.ESME_RQUERYFAIL)  # query_sm: nothing is kept
            return
        self.submits += 1
        status = self._refusals.popleft() if self._refusals else Status.ESME_ROK
        if status == Status.ESME_ROK and not self._within_limit():
            status = Status.ESME_RTHROTTLED
        self.arrivals.append((link.loop.time(), status))
        self.submit_log.append(SubmitRecord(*self.arrivals[-1], link.number, link.system_type))
        if status != Status.ESME_ROK:  # an ESME_ROK queued by `throttle_storm` accepts
            self.throttled += status == Status.ESME_RTHROTTLED
            link.session.respond(pdu, status)
            return
        number = next(self._ids)
        message_id = f"{number:x}" if self.config.hex_ids else str(number)
        short_message = pdu.params.get("short_message", b"")
        assert isinstance(short_message, bytes)
        payload = pdu.tlvs.get(Tag.MESSAGE_PAYLOAD)
        body = short_message or (payload if isinstance(payload, bytes) else b"")
        data_coding, esm_class = pdu.param("data_coding", int), pdu.param("esm_class", int)
        decoded = decode_inbound(body, data_coding, esm_class)
        record = SubmittedMessage(
            command=pdu.command,
            system_id=link.system_id or "",
            message_id=message_id,
            source=pdu.param("source_addr", str),
            destination=pdu.param("destination_addr", str),
            data_coding=data_coding,
            esm_class=esm_class,
            registered_delivery=pdu.param("registered_delivery", int),
            short_message=short_message,
            tlvs=dict(pdu.tlvs),
            text=decoded.text,
            concat=decoded.concat or concat_from_tlvs(pdu.tlvs),
        )
        self.submitted.append(record)
        link.session.respond(pdu, Status.ESME_ROK, {"message_id": message_id})
        if record.registered_delivery & 1:
            self._schedule_receipt(record, pdu)

    # -- receipts and the outbox -------------------------------------------------------

    def _schedule_receipt(self, record: SubmittedMessage, pdu: Pdu) -> None:
        """The receipt goes from the recipient back to the sender; its done date is the
        submit's time plus `receipt_delay`, when it is released."""
        config, roll = self.config, self._random.random()
        stat = "UNDELIV" if roll < config.undeliverable else "DELIVRD"
        if config.undeliverable <= roll < config.undeliverable + config.expired:
            stat = "EXPIRED"
        state, err = _OUTCOMES[stat]
        text_id = record.message_id
        if config.hex_ids and config.receipt_ids_decimal:
            text_id = str(int(text_id, 16))
        submitted = self.clock.time()
        text = (
            f"id:{text_id} sub:001 dlvrd:{'001' if stat == 'DELIVRD' else '000'} "
            f"submit date:{_date(submitted)} done date:{_date(submitted + config.receipt_delay)} "
            f"stat:{stat} err:{err} text:"
        )
        params = {name: pdu.params[other] for name, other in _REPLY.items()}
        params.update(esm_class=ESM_RECEIPT, short_message=text.encode("ascii"))
        tlvs: dict[int, Value] = {Tag.RECEIPTED_MESSAGE_ID: record.message_id}
        tlvs[Tag.MESSAGE_STATE] = state
        self._later(config.receipt_delay, _Delivery("receipt", params, tlvs))

    def _again(self, item: _Delivery, *, final: bool = False) -> None:
        """A deliver_sm refused or unanswered: sent again after `redelivery_delay`,
        unless refused for good or out of attempts."""
        limit = self.config.max_delivery_attempts
        if final or (limit is not None and item.attempts >= limit):
            self.abandoned += 1
            log.info("simulator_delivery_abandoned", kind=item.kind, attempts=item.attempts)
            self._notify()
            return
        self._later(self.config.redelivery_delay, item)

    def _later(self, delay: float, item: _Delivery) -> None:
        """Put `item` in the outbox after `delay` on the injected clock; at once for 0."""
        if delay <= 0:
            self._outbox.append(item)
            self._pump()
            return

        async def release() -> None:
            await self.clock.sleep(delay)
            self._outbox.append(item)
            self._pump()

        task = asyncio.get_running_loop().create_task(release())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _requeue(self, in_doubt: tuple[InFlight, ...]) -> None:
        items = [f.token for f in in_doubt if isinstance(f.token, _Delivery)]
        self._outbox.extendleft(reversed(items))
        if items:
            self._pump()

    def _pump(self) -> None:
        """Send what the outbox holds to bound receivers, as their windows allow."""
        if not self.answering:
            return
        for link in list(self._links):
            sent = False
            # Only a receiver or transceiver may be sent deliver_sm, within its window.
            while self._outbox and link.session.can_send_request(Command.DELIVER_SM):
                item = self._outbox.popleft()
                self.redelivered += item.attempts > 0
                self.deliveries += 1
                item.attempts += 1
                now = link.loop.time()
                link.session.send_request(
                    Command.DELIVER_SM, item.params, item.tlvs, token=item, now=now
                )
                sent = True
            if sent:
                link.sync()
        self._notify()


def _addresses(source: str, destination: str) -> dict[str, Value]:
    """Address fields; a leading + makes a number international (TON 1), ISDN plan."""
    return {
        "source_addr_ton": int(source.startswith("+")),
        "source_addr_npi": 1,
        "source_addr": source.removeprefix("+"),
        "dest_addr_ton": int(destination.startswith("+")),
        "dest_addr_npi": 1,
        "destination_addr": destination.removeprefix("+"),
    }


def _date(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%y%m%d%H%M")


async def run_forever(config: SimulatorConfig) -> None:
    """Run a simulator on `config` until cancelled (the `smsgw simulate smsc` command)."""
    async with SmscSimulator(config):
        await asyncio.Event().wait()
