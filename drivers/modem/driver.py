"""One GSM/LTE modem over a serial port, around the sans-I/O AT engine.

Theory of operation. A `Modem` owns one port (pyserial-asyncio-fast) and one
`AtEngine`. A supervisor task opens the port, initialises the modem, ingests what was
left on the SIM, then serves until the port is lost or a reset is due, and starts over:

- open: a port that is missing (unplugged, re-enumerating) is polled with back-off,
  so a modem that comes back is used again without restarting the daemon;
- initialise: `AT` until it answers, `ATE0`, `AT+CMEE=1`, the SIM (`AT+CPIN?`; a PIN
  from the credential file is tried once in the modem's life, a PUK never; SIM busy is
  asked again a few times), `AT+CMGF=0`, `AT+CSMS=0`, `AT+CPMS`, `AT+CNMI`, identity
  (IMEI, IMSI, ICCID: kept, logged only as their last four digits), registration,
  signal and operator;
- serve: every `probe_interval` seconds signal and registration are polled, which also
  shows a hung modem; URCs are handled by a worker task.

Commands go one at a time (a lock around the engine), so a `+CMTI` that arrives in the
middle of an `AT+CMGS` is read with `AT+CMGR` right after it. Each command waits for
its answer or for the engine's deadline on the injected clock. `hang_limit` timeouts
in a row mean the modem has stopped answering: it gets `AT+CFUN=1,1` and the port is
reopened.

Sending (`send`) writes each part as an SMS-SUBMIT PDU via `AT+CMGS`; the part's
carrier id is `<modem>:<TP-MR>`, the message reference the modem answered with, which
is what its status report quotes. Failures come out as `SendFailed`, saying how bad
(`errors.Kind`) and whether the message may have gone (`maybe_sent`: a part was
accepted, or the PDU was written and then the answer never came or the port went).

Inbound: `+CMTI`/`+CDSI` name a storage index, read with `AT+CMGR`; `+CMT`/`+CDS`
carry the PDU. A status report becomes `EventSink.receipt`, a message
`EventSink.inbound`; only after the sink returned (the gateway committed) is the SIM
copy deleted with `AT+CMGD`. Parts of a long message stay on the SIM until the whole
message is stored. If the sink fails, the message stays on the SIM and storage is
scanned again (`AT+CMGL=4`) after `rescan_interval`; it is also scanned at every start.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import serial
import serial_asyncio_fast
import structlog

from drivers.base import EventSink, InboundSms, OutboundSms, Receipt, ReceiptState
from drivers.clock import Clock, wait_event
from drivers.credentials import read_secret
from drivers.modem import commands as cmd
from drivers.modem.atcodec import (
    Abandoned,
    AtEngine,
    Event,
    Garbled,
    Response,
    Stray,
    Timeout,
    Unsolicited,
)
from drivers.modem.errors import ErrorInfo, Kind
from drivers.modem.inbound import PartStore, Whole
from drivers.modem.options import ModemBankOptions, ModemOptions
from drivers.modem.pdu import (
    Concat,
    PduError,
    SmsDeliver,
    StatusReport,
    decode_incoming,
    encode_submit,
)

log = structlog.get_logger("smsgw.modem")

# Only these say the modem restarted; ^BOOT (Huawei) and +QIND repeat in normal running.
_BOOT_URCS = frozenset({"RDY", "*ATREADY"})
_REG_URCS = frozenset({"+CREG", "+CGREG", "+CEREG"})
_EXPIRED_STATUS = 0x46  # TP-ST "SM validity period expired" (TS 23.040 §9.2.3.15)


class ModemState(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    NO_NETWORK = "no_network"
    UNPLUGGED = "unplugged"
    RESETTING = "resetting"
    SIM_ERROR = "sim_error"
    CLOSED = "closed"


class SendFailed(Exception):
    """A send did not complete: `info` says why, `maybe_sent` whether it may have gone."""

    def __init__(self, info: ErrorInfo, *, maybe_sent: bool) -> None:
        super().__init__(info.description)
        self.info = info
        self.maybe_sent = maybe_sent


class _PortLost(Exception):
    def __init__(self, pdu_written: bool = False) -> None:
        super().__init__("port lost")
        self.pdu_written = pdu_written


class _CommandTimeout(Exception):
    def __init__(self, pdu_written: bool) -> None:
        super().__init__("no answer")
        self.pdu_written = pdu_written


class _SimProblem(Exception):
    """The SIM cannot be used without an operator: stop this modem."""


class _InitFailed(Exception):
    """A set-up command was refused; the port is reopened after a pause."""


_TIMEOUT = ErrorInfo("modem:timeout", Kind.MODEM, "the modem did not answer")
_LOST = ErrorInfo("modem:port_lost", Kind.MODEM, "the modem's port went away")
_BAD_PDU = ErrorInfo("modem:bad_pdu", Kind.PERMANENT, "the message cannot be encoded")
_NOT_READY = ErrorInfo("modem:not_ready", Kind.MODEM, "the modem is not ready")


@dataclass(slots=True)
class ModemInfo:
    """What the modem told about itself; identifiers only masked."""

    manufacturer: str | None = None
    model: str | None = None
    imei: str | None = field(default=None, repr=False)
    imsi: str | None = field(default=None, repr=False)
    iccid: str | None = field(default=None, repr=False)
    signal: int | None = None  # RSSI 0-31
    registration: cmd.Registration | None = None
    operator: str | None = None


class _Port(asyncio.Protocol):
    def __init__(self, modem: Modem) -> None:
        self._modem = modem

    def data_received(self, data: bytes) -> None:
        self._modem._on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._modem._on_lost()


class Modem:
    def __init__(
        self,
        route: str,
        options: ModemOptions,
        bank: ModemBankOptions,
        sink: EventSink,
        clock: Clock,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.route = route
        self.name = options.name
        self.options = options
        self._bank = bank
        self._sink = sink
        self._clock = clock
        self._on_change = on_change
        self.state = ModemState.STARTING
        self.detail = ""
        self.info = ModemInfo()
        self.sending = False
        self.counters = dict.fromkeys(
            ("sent_parts", "send_errors", "inbound", "receipts", "timeouts", "resets",
             "reopens", "garbled"),
            0,
        )  # fmt: skip
        self._engine = AtEngine()
        self._transport: asyncio.Transport | None = None
        self._attention = asyncio.Event()
        self._reset_requested = False
        self._reinit_requested = False
        self._closing = False
        self._pin_refused = False  # a PIN attempt failed or never answered: never again
        self._timeouts_in_a_row = 0
        self._command_lock = asyncio.Lock()
        self._send_lock = asyncio.Lock()
        # One reader of the storage at a time: a scan and a +CMTI must not both take the
        # same message (read, store, delete is one step).
        self._storage_lock = asyncio.Lock()
        self._urcs: asyncio.Queue[Unsolicited] = asyncio.Queue()
        self._parts = PartStore(bank.reassembly_timeout)
        self._rescan_at: float | None = None
        self._message_ref = 0
        self._task: asyncio.Task[None] | None = None
        # Set after every answered command and state change; observers (tests, the
        # bank) clear it and wait, instead of polling.
        self.progress = asyncio.Event()

    # -- life ----------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name=f"modem-{self.name}")

    async def aclose(self) -> None:
        self._closing = True
        self._attention.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._close_port()
        self._set_state(ModemState.CLOSED, "closed")

    @property
    def ready(self) -> bool:
        return self.state is ModemState.READY and not self._closing

    def snapshot(self) -> dict[str, object]:
        """Per-modem health for the API and metrics: no identifier in full."""
        return {
            "state": self.state.value,
            "detail": self.detail,
            "signal": self.info.signal,
            "registration": self.info.registration,
            "operator": self.info.operator,
            "manufacturer": self.info.manufacturer,
            "model": self.info.model,
            "imei": cmd.mask(self.info.imei),
            "iccid": cmd.mask(self.info.iccid),
            "sending": self.sending,
            **self.counters,
        }

    async def _supervise(self) -> None:
        delay = self._bank.reopen_min
        while not self._closing:
            try:
                await self._open()
            except (OSError, serial.SerialException):
                self._set_state(ModemState.UNPLUGGED, "port not available")
                await self._clock.sleep(delay)
                delay = min(self._bank.reopen_max, delay * 2)
                continue
            delay = self._bank.reopen_min
            why = "reopening"
            try:
                await self._session()
            except _SimProblem as e:
                self._close_port()
                self._set_state(ModemState.SIM_ERROR, str(e))
                log.error("modem_sim_problem", route=self.route, modem=self.name, detail=str(e))
                return
            except _PortLost:
                why = "port lost"
            except _CommandTimeout:
                why = "no answer"
            except _InitFailed as e:
                why = f"set-up refused: {e}"
                log.warning("modem_init_refused", route=self.route, modem=self.name, code=str(e))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a bug must not end the modem for good
                why = "driver error"
                log.error("modem_failed", route=self.route, modem=self.name, error=repr(e)[:200])
            lost = self._transport is None
            if self._reset_requested and not lost and not self._closing:
                await self._reset()
            self._close_port()
            if self._closing:
                return
            if self._reset_requested:
                self.counters["resets"] += 1
                self._set_state(ModemState.RESETTING, "reset: the modem stopped answering")
            elif lost:
                self._set_state(ModemState.UNPLUGGED, "port lost")
            else:
                self._set_state(ModemState.STARTING, why)
            self.counters["reopens"] += 1
            await self._clock.sleep(self._bank.reopen_min)

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        self._engine = AtEngine()
        self._attention.clear()
        self._reset_requested = False
        self._reinit_requested = False
        self._timeouts_in_a_row = 0
        transport, _ = await serial_asyncio_fast.create_serial_connection(
            loop, lambda: _Port(self), url=self.options.port, baudrate=self.options.baud
        )
        self._transport = transport
        log.info("modem_port_open", route=self.route, modem=self.name)

    def _close_port(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
        for event in self._engine.abandon():
            self._dispatch(event)

    async def _session(self) -> None:
        if self.state is not ModemState.RESETTING:
            self._set_state(ModemState.STARTING, "initialising")
        worker = asyncio.create_task(self._urc_worker())
        try:
            await self._initialise()
            now = self._clock.monotonic()
            self._rescan_at, probe_at = now, now + self._bank.probe_interval
            while not self._closing:
                if self._transport is None:
                    raise _PortLost()
                if self._reset_requested or self._reinit_requested:
                    return
                now = self._clock.monotonic()
                rescan = self._rescan_at is not None and now >= self._rescan_at
                try:
                    if rescan:
                        await self._scan_storage()
                        continue
                    if now >= probe_at or self._attention.is_set():
                        self._attention.clear()
                        probe_at = now + self._bank.probe_interval
                        await self._probe()
                        continue
                except _CommandTimeout:
                    # Counted; `hang_limit` of them in a row request the reset.
                    if rescan:
                        self._rescan_at = now + self._bank.rescan_interval
                    continue
                due = min(probe_at, self._rescan_at if self._rescan_at is not None else probe_at)
                await wait_event(self._clock, self._attention, max(0.0, due - now))
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)

    async def _reset(self) -> None:
        """Ask the modem to restart; a hung one will not answer, and is reopened anyway."""
        log.warning("modem_reset", route=self.route, modem=self.name)
        with contextlib.suppress(_PortLost, _CommandTimeout):
            await self._command("AT+CFUN=1,1", count_timeout=False)

    # -- initialising --------------------------------------------------------------------

    async def _initialise(self) -> None:
        await self._sync()
        await self._ok("ATE0")
        await self._ok("AT+CMEE=1")
        await self._unlock_sim()
        await self._ok("AT+CMGF=0")
        await self._command("AT+CSMS=0")  # phase 2: no +CNMA needed; some firmware refuses
        store = self.options.storage
        await self._sim_busy_retry(f'AT+CPMS="{store}","{store}","{store}"')
        await self._ok(f"AT+CNMI={self._bank.cnmi}")
        await self._identify()
        await self._probe()

    async def _sync(self) -> None:
        """`AT` until the modem answers (it may still be booting)."""
        for _ in range(3):
            try:
                response = await self._command("AT", count_timeout=False)
            except _CommandTimeout:
                continue
            if response.final.ok:
                self._timeouts_in_a_row = 0
                return
        self._request_reset()
        raise _CommandTimeout(False)

    async def _unlock_sim(self) -> None:
        entered = False
        for _ in range(self._bank.sim_busy_retries):
            response = await self._command("AT+CPIN?")
            if response.final.ok:
                sim = cmd.parse_cpin(response.lines)
                if sim == "ready":
                    return
                if sim == "pin" and not entered:
                    await self._enter_pin()
                    entered = True
                    continue
                raise _SimProblem("SIM needs its PUK" if sim == "puk" else "SIM is locked")
            info = response.final.info()
            if info.kind is Kind.SIM_BUSY:
                self._set_state(self.state, "SIM busy")
                await self._clock.sleep(self._bank.sim_busy_delay)
                continue
            raise _SimProblem(f"SIM not usable ({info.code}: {info.description})")
        raise _SimProblem("SIM stayed busy")

    async def _enter_pin(self) -> None:
        if self._pin_refused:
            raise _SimProblem("a PIN attempt failed before; not retried")
        opts = self.options
        pin = read_secret(file=opts.pin_file, credential=opts.pin_credential)
        if pin is None:
            raise _SimProblem("SIM needs a PIN and none is configured")
        self._pin_refused = True  # until the SIM accepts it: a failed try is never repeated
        try:
            command = cmd.quote_pin(pin)
        except ValueError as e:
            raise _SimProblem(str(e)) from None
        response = await self._command(command)
        if not response.final.ok:
            raise _SimProblem(f"SIM refused the PIN ({response.final.info().code})")
        self._pin_refused = False
        log.info("modem_pin_accepted", route=self.route, modem=self.name)

    async def _identify(self) -> None:
        info = self.info
        info.manufacturer = cmd.first_text((await self._command("AT+CGMI")).lines)
        info.model = cmd.first_text((await self._command("AT+CGMM")).lines)
        info.imei = cmd.parse_identifier((await self._command("AT+CGSN")).lines)
        info.imsi = cmd.parse_identifier((await self._command("AT+CIMI")).lines)
        for ask in ("AT+CCID", "AT+QCCID", "AT^ICCID", "AT+CICCID"):
            response = await self._command(ask)
            if response.final.ok:
                info.iccid = cmd.parse_identifier(response.lines)
                break
        await self._command("AT+COPS=3,0")
        log.info(
            "modem_identified",
            route=self.route,
            modem=self.name,
            manufacturer=info.manufacturer,
            model=info.model,
            imei=cmd.mask(info.imei),
            imsi=cmd.mask(info.imsi),
            iccid=cmd.mask(info.iccid),
        )

    async def _probe(self) -> None:
        info = self.info
        info.signal = cmd.parse_csq((await self._command("AT+CSQ")).lines)
        registration: cmd.Registration | None = None
        for ask, name in (("AT+CREG?", "+CREG"), ("AT+CEREG?", "+CEREG")):
            values = cmd.prefixed((await self._command(ask)).lines, name)
            found = cmd.parse_registration(values[0]) if values else None
            registration = found or registration
            if registration in ("registered", "roaming"):
                break
        info.registration = registration
        info.operator = cmd.parse_cops((await self._command("AT+COPS?")).lines)
        self._update_network_state()

    def _update_network_state(self) -> None:
        if self.state in (ModemState.SIM_ERROR, ModemState.CLOSED):
            return
        if self.info.registration in ("registered", "roaming"):
            self._set_state(ModemState.READY, self.info.operator or "registered")
        else:
            self._set_state(ModemState.NO_NETWORK, f"not registered ({self.info.registration})")

    async def _sim_busy_retry(self, command: str) -> Response:
        for _ in range(self._bank.sim_busy_retries):
            response = await self._command(command)
            if response.final.ok or response.final.info().kind is not Kind.SIM_BUSY:
                return response
            await self._clock.sleep(self._bank.sim_busy_delay)
        return response

    # -- sending -------------------------------------------------------------------------

    async def send(self, sms: OutboundSms) -> tuple[str, ...]:
        """Send every part; one carrier id per part, or `SendFailed`."""
        async with self._send_lock:
            self.sending = True
            try:
                if not self.ready:
                    raise SendFailed(_NOT_READY, maybe_sent=False)
                return await self._send_parts(sms)
            finally:
                self.sending = False
                self._on_change()

    async def _send_parts(self, sms: OutboundSms) -> tuple[str, ...]:
        total = len(sms.parts)
        encoding: Literal["gsm7", "ucs2"] = "ucs2" if sms.encoding == "ucs2" else "gsm7"
        ids: list[str] = []
        for seq, text in enumerate(sms.parts, start=1):
            sent_before = bool(ids)
            concat = Concat(ref=sms.reference & 0xFF, total=total, seq=seq) if total > 1 else None
            self._message_ref = (self._message_ref + 1) & 0xFF
            try:
                pdu = encode_submit(
                    to=sms.to,
                    text=text,
                    encoding=encoding,
                    message_ref=self._message_ref,
                    concat=concat,
                    request_report=sms.want_receipt,
                    validity_minutes=self._bank.validity_minutes,
                )
            except PduError:
                raise SendFailed(_BAD_PDU, maybe_sent=sent_before) from None
            try:
                response = await self._command(
                    f"AT+CMGS={pdu.tpdu_length}", limit=self._bank.send_timeout, pdu=pdu.hex
                )
            except _CommandTimeout as e:
                self.counters["send_errors"] += 1
                raise SendFailed(_TIMEOUT, maybe_sent=sent_before or e.pdu_written) from None
            except _PortLost as e:
                self.counters["send_errors"] += 1
                raise SendFailed(_LOST, maybe_sent=sent_before or e.pdu_written) from None
            if not response.final.ok:
                self.counters["send_errors"] += 1
                info = response.final.info()
                if info.kind is Kind.SIM:
                    self._request_reset()
                else:
                    self._attention.set()  # probe registration and signal now
                raise SendFailed(info, maybe_sent=sent_before)
            # Most modems set TP-MR themselves; the one they answer is what reports quote.
            mr = cmd.parse_cmgs(response.lines)
            self.counters["sent_parts"] += 1
            ids.append(f"{self.name}:{self._message_ref if mr is None else mr}")
        return tuple(ids)

    # -- commands ------------------------------------------------------------------------

    async def _ok(self, command: str) -> Response:
        response = await self._command(command)
        if not response.final.ok:
            info = response.final.info()
            if info.kind is Kind.SIM:
                raise _SimProblem(f"{info.code}: {info.description}")
            raise _InitFailed(info.code)
        return response

    async def _command(
        self,
        command: str,
        *,
        limit: float | None = None,
        pdu: str | None = None,
        count_timeout: bool = True,
    ) -> Response:
        async with self._command_lock:
            if self._transport is None:
                raise _PortLost()
            answer: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
            self._engine.send(
                command,
                now=self._clock.monotonic(),
                timeout=limit or self._bank.command_timeout,
                pdu=pdu,
                token=answer,
            )
            self._flush()
            try:
                while not answer.done():
                    deadline = self._engine.next_deadline()
                    if deadline is None:
                        break
                    sleeper = asyncio.ensure_future(
                        self._clock.sleep(max(0.0, deadline - self._clock.monotonic()))
                    )
                    try:
                        waiting: set[asyncio.Future[Any]] = {answer, sleeper}
                        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        sleeper.cancel()
                    if not answer.done():
                        for event in self._engine.on_timer(self._clock.monotonic()):
                            self._dispatch(event)
                        self._flush()
            finally:
                if not answer.done():
                    for event in self._engine.abandon():
                        self._dispatch(event)
            event = answer.result()
        self.progress.set()
        if isinstance(event, Response):
            self._timeouts_in_a_row = 0
            return event
        if isinstance(event, Timeout):
            self.counters["timeouts"] += 1
            log.warning("modem_no_answer", route=self.route, modem=self.name, command=event.name)
            if count_timeout:
                self._timeouts_in_a_row += 1
                if self._timeouts_in_a_row >= self._bank.hang_limit:
                    self._request_reset()
            self._attention.set()  # probe now: one more silence means the modem hangs
            raise _CommandTimeout(event.pdu_written)
        assert isinstance(event, Abandoned)
        raise _PortLost(event.pdu_written)

    def _request_reset(self) -> None:
        self._reset_requested = True
        self._attention.set()

    def _flush(self) -> None:
        data = self._engine.data_to_send()
        if data and self._transport is not None:
            self._transport.write(data)

    def _on_data(self, data: bytes) -> None:
        for event in self._engine.receive_data(data, self._clock.monotonic()):
            self._dispatch(event)
        self._flush()

    def _on_lost(self) -> None:
        if self._transport is None:
            return
        self._transport = None
        log.warning("modem_port_lost", route=self.route, modem=self.name)
        for event in self._engine.abandon():
            self._dispatch(event)
        self._attention.set()

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, Response | Timeout | Abandoned):
            token = event.token
            if isinstance(token, asyncio.Future) and not token.done():
                token.set_result(event)
        elif isinstance(event, Unsolicited):
            self._urcs.put_nowait(event)
        elif isinstance(event, Garbled):
            self.counters["garbled"] += 1
            log.warning(
                "modem_garbled", route=self.route, modem=self.name, reason=event.reason,
                size=len(event.data),
            )  # fmt: skip
        elif isinstance(event, Stray):
            log.info("modem_stray_line", route=self.route, modem=self.name)

    # -- unsolicited ---------------------------------------------------------------------

    async def _urc_worker(self) -> None:
        while True:
            urc = await self._urcs.get()
            try:
                await self._on_urc(urc)
            except (_PortLost, _CommandTimeout):
                return
            except Exception as e:  # one bad message must not stop the worker
                log.error("modem_urc_failed", route=self.route, modem=self.name, urc=urc.name,
                          error=type(e).__name__)  # fmt: skip

    async def _on_urc(self, urc: Unsolicited) -> None:
        name = urc.name
        if name in ("+CMTI", "+CDSI"):
            index = cmd.parse_storage_index(urc.value)
            if index is not None:
                await self._read_stored(index)
        elif name in ("+CMT", "+CDS") and urc.pdu is not None:
            async with self._storage_lock:
                await self._ingest(urc.pdu, None)
        elif name in _REG_URCS:
            self.info.registration = cmd.parse_registration(urc.value)
            self._update_network_state()
        elif name == "^RSSI":
            self.info.signal = cmd.parse_rssi_urc(urc.value)
            self._on_change()
        elif self.state is ModemState.READY and (
            name in _BOOT_URCS or (name == "+CPIN" and "READY" not in urc.value.upper())
        ):
            # The modem restarted by itself: initialise it again.
            log.warning("modem_rebooted", route=self.route, modem=self.name, urc=name)
            self._reinit_requested = True
            self._attention.set()

    async def _read_stored(self, index: int) -> None:
        async with self._storage_lock:
            response = await self._command(f"AT+CMGR={index}")
            pdu = cmd.parse_cmgr(response.lines) if response.final.ok else None
            if pdu is not None:
                await self._ingest(pdu, index)

    async def _scan_storage(self) -> None:
        async with self._storage_lock:
            self._rescan_at = None
            response = await self._command("AT+CMGL=4", limit=self._bank.command_timeout * 3)
            for stored in cmd.parse_cmgl(response.lines):
                await self._ingest(stored.pdu, stored.index)
            for whole in self._parts.expired(self._clock.monotonic()):
                await self._deliver(whole, sender=whole.key[0])

    async def _ingest(self, pdu: str, index: int | None) -> None:
        try:
            message = decode_incoming(pdu)
        except PduError:
            log.error("modem_pdu_undecodable", route=self.route, modem=self.name, index=index)
            await self._delete(index)
            return
        if isinstance(message, StatusReport):
            await self._on_status_report(message, index)
        elif isinstance(message, SmsDeliver):
            await self._on_deliver(message, index)

    async def _on_status_report(self, report: StatusReport, index: int | None) -> None:
        outcome = report.outcome
        if outcome != "pending":
            if outcome == "delivered":
                state, code = ReceiptState.DELIVERED, None
            elif report.status == _EXPIRED_STATUS:
                state, code = ReceiptState.EXPIRED, f"tp-st:{report.status:#04x}"
            else:
                state, code = ReceiptState.FAILED, f"tp-st:{report.status:#04x}"
            receipt = Receipt(f"{self.name}:{report.message_ref}", state, code)
            if not await self._to_sink(self._sink.receipt(self.route, receipt)):
                return
            self.counters["receipts"] += 1
        await self._delete(index)

    async def _on_deliver(self, message: SmsDeliver, index: int | None) -> None:
        sender = message.sender
        if message.sender_kind == "international" and not sender.startswith("+"):
            sender = "+" + sender
        concat = message.concat
        if concat is None or concat.total <= 1:
            whole = Whole(("", 0, False, 1), message.text, () if index is None else (index,))
            await self._deliver(whole, sender=sender)
            return
        done = self._parts.add(
            sender, concat.ref, concat.wide_ref, concat.total, concat.seq, message.text, index,
            self._clock.monotonic(),
        )  # fmt: skip
        if done is not None:
            await self._deliver(done, sender=sender)

    async def _deliver(self, whole: Whole, *, sender: str) -> None:
        if not await self._to_sink(self._sink.inbound(self.route, InboundSms(sender, whole.text))):
            return
        self._parts.stored(whole)
        self.counters["inbound"] += 1
        for index in whole.indices:
            await self._delete(index)

    async def _to_sink(self, stored: Awaitable[None]) -> bool:
        """Await the sink; on failure leave the SIM copy and scan again later."""
        try:
            await stored
        except Exception as e:
            log.error("modem_inbound_not_stored", route=self.route, modem=self.name,
                      error=type(e).__name__)  # fmt: skip
            self._rescan_at = self._clock.monotonic() + self._bank.rescan_interval
            self._attention.set()  # the serve loop takes the new deadline
            return False
        return True

    async def _delete(self, index: int | None) -> None:
        if index is not None:
            await self._command(f"AT+CMGD={index}")

    def _set_state(self, state: ModemState, detail: str) -> None:
        changed = (state, detail) != (self.state, self.detail)
        self.state, self.detail = state, detail
        self.progress.set()
        if changed:
            log.info("modem_state", route=self.route, modem=self.name, state=state.value)
            self._on_change()
