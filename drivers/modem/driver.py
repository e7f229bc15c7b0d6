"""One GSM/LTE modem over a serial port, around the sans-I/O AT engine.

Theory of operation. A `Modem` owns one `AtPort` (its tty and AT engine). A
supervisor task opens the port, initialises the modem, ingests what was
left on the SIM, then serves until the port is lost or a reset is due, and starts over:

- open: a port that is missing (unplugged, re-enumerating) is polled with back-off,
  so a modem that comes back is used again without restarting the daemon;
- initialise: `AT` until it answers, `ATE0`, `AT+CMEE=1`, the SIM (`AT+CPIN?`; the PIN
  from the credential file is entered once per start of the SIM, and never again after
  the SIM refused it; a PUK never; SIM busy is asked again a few times), `AT+CMGF=0`,
  `AT+CSMS=0`, `AT+CPMS`, `AT+CNMI`, identity (IMEI, IMSI, ICCID: kept, logged only as
  their last four digits), registration, signal and operator;
- serve: every `probe_interval` seconds signal and registration are polled, which also
  shows a hung modem; URCs are handled by a worker task.

Commands go one at a time through the port (drivers/modem/port.py), so a `+CMTI`
that arrives in the middle of an `AT+CMGS` is read with `AT+CMGR` right after it.
`hang_limit` timeouts in a row mean the modem has stopped answering: it gets
`AT+CFUN=1,1` and the port is reopened.

Sending (`send`) writes each part as an SMS-SUBMIT PDU via `AT+CMGS`; the part's
carrier id is `<modem>:<TP-MR>`, the message reference the modem answered with, which
is what its status report quotes. Failures come out as `SendFailed`, saying how bad
(`errors.Kind`) and whether the message may have gone (`maybe_sent`: a part was
accepted, or the PDU was written and then the answer never came or the port went).

Inbound messages and status reports (+CMTI, +CDSI, +CMT, +CDS, and what is left in
storage at start) go through the `Inbox` (drivers/modem/inbound.py): made durable by
the sink, and only then deleted from the SIM.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import serial
import structlog

from drivers.base import EventSink, OutboundSms
from drivers.clock import Clock, wait_event
from drivers.credentials import read_secret
from drivers.modem import commands as cmd
from drivers.modem.atcodec import Final, Response, Unsolicited
from drivers.modem.errors import ErrorInfo, Kind
from drivers.modem.inbound import Inbox
from drivers.modem.options import ModemBankOptions, ModemOptions
from drivers.modem.pdu import (
    Concat,
    PduError,
    encode_submit,
)
from drivers.modem.port import AtPort, CommandTimeout, PortLost

log = structlog.get_logger("smsgw.modem")

# Only these say the modem restarted; ^BOOT (Huawei) and +QIND repeat in normal running.
# Wavecom says it with "+WIND: 3" (product ready), its other +WIND values come any time.
_BOOT_URCS = frozenset({"RDY", "*ATREADY"})
_REG_URCS = frozenset({"+CREG", "+CGREG", "+CEREG"})


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
            ("sent_parts", "send_errors", "timeouts", "resets", "reopens"),
            0,
        )  # fmt: skip
        self._port = AtPort(
            options.port,
            options.baud,
            clock,
            on_urc=self._urcs_put,
            on_lost=self._attention_set,
            log_keys={"route": route, "modem": options.name},
        )
        self._attention = asyncio.Event()
        self._reset_requested = False
        self._reinit_requested = False
        self._closing = False
        # A PIN attempt failed or never answered: that PIN is never tried again (only a
        # different one, after an operator changed it and asked for a retry).
        self._refused_pin: bytes | None = None
        self._timeouts_in_a_row = 0
        self._send_lock = asyncio.Lock()
        self._urcs: asyncio.Queue[Unsolicited] = asyncio.Queue()
        self._inbox = Inbox(
            route,
            options.name,
            sink,
            clock,
            self._command,
            rescan_interval=bank.rescan_interval,
            scan_limit=bank.command_timeout * 3,
            wake=self._attention_set,
        )
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

    def retry_sim(self) -> bool:
        """After an operator fixed a SIM problem (a new PIN file, a SIM reseated): start
        again. The PIN that was refused is still never tried twice. False if the modem
        was not stopped on its SIM."""
        if self.state is not ModemState.SIM_ERROR or self._closing:
            return False
        if self._task is not None and not self._task.done():
            return False
        log.info("modem_sim_retry", route=self.route, modem=self.name)
        self._set_state(ModemState.STARTING, "retrying the SIM")
        self.start()
        return True

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
            "garbled": self._port.garbled,
            "inbound": self._inbox.inbound,
            "receipts": self._inbox.receipts,
            "quarantined": self._inbox.quarantined,
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
            except PortLost:
                why = "port lost"
            except CommandTimeout:
                why = "no answer"
            except _InitFailed as e:
                why = f"set-up refused: {e}"
                log.warning("modem_init_refused", route=self.route, modem=self.name, code=str(e))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a bug must not end the modem for good
                why = "driver error"
                log.error("modem_failed", route=self.route, modem=self.name, error=repr(e)[:200])
            lost = not self._port.is_open
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
        self._attention.clear()
        self._reset_requested = False
        self._reinit_requested = False
        self._timeouts_in_a_row = 0
        await self._port.open()
        log.info("modem_port_open", route=self.route, modem=self.name)

    def _close_port(self) -> None:
        self._port.close()

    async def _session(self) -> None:
        if self.state is not ModemState.RESETTING:
            self._set_state(ModemState.STARTING, "initialising")
        worker = asyncio.create_task(self._urc_worker())
        try:
            await self._initialise()
            now = self._clock.monotonic()
            self._inbox.rescan_at, probe_at = now, now + self._bank.probe_interval
            while not self._closing:
                if not self._port.is_open:
                    raise PortLost()
                if self._reset_requested or self._reinit_requested:
                    return
                now = self._clock.monotonic()
                rescan = self._inbox.rescan_at is not None and now >= self._inbox.rescan_at
                try:
                    if rescan:
                        await self._inbox.scan()
                        continue
                    if now >= probe_at or self._attention.is_set():
                        self._attention.clear()
                        probe_at = now + self._bank.probe_interval
                        await self._probe()
                        continue
                except CommandTimeout:
                    # Counted; `hang_limit` of them in a row request the reset.
                    if rescan:
                        self._inbox.rescan_at = now + self._bank.rescan_interval
                    continue
                rescan_at = self._inbox.rescan_at
                due = probe_at if rescan_at is None else min(probe_at, rescan_at)
                await wait_event(self._clock, self._attention, max(0.0, due - now))
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)

    async def _reset(self) -> None:
        """Ask the modem to restart; a hung one will not answer, and is reopened anyway."""
        log.warning("modem_reset", route=self.route, modem=self.name)
        with contextlib.suppress(PortLost, CommandTimeout):
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
            except CommandTimeout:
                continue
            if response.final.ok:
                self._timeouts_in_a_row = 0
                return
        self._request_reset()
        raise CommandTimeout("AT", False)

    async def _unlock_sim(self) -> None:
        entered = False
        for _ in range(self._bank.sim_busy_retries):
            response = await self._ask_sim()
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

    async def _ask_sim(self) -> Response:
        """`AT+CPIN?`. Wavecom Fastrack M1306B (firmware R7.43) gives its `+CPIN:` line
        and never the OK that should end it: once the timeout passes, that line is the
        answer (start-up waits one command timeout longer on such a modem)."""
        try:
            return await self._command("AT+CPIN?", count_timeout=False)
        except CommandTimeout as e:
            if cmd.parse_cpin(e.lines) is None:
                raise
            log.info("modem_cpin_without_ok", route=self.route, modem=self.name)
            return Response("+CPIN", Final("ok"), e.lines)

    async def _enter_pin(self) -> None:
        opts = self.options
        pin = read_secret(file=opts.pin_file, credential=opts.pin_credential)
        if pin is None:
            raise _SimProblem("SIM needs a PIN and none is configured")
        digest = hashlib.sha256(pin.encode()).digest()
        if digest == self._refused_pin:
            raise _SimProblem("the PIN that failed before is still configured; not retried")
        self._refused_pin = digest  # until the SIM accepts it: a failed try is never repeated
        try:
            command = cmd.quote_pin(pin)
        except ValueError as e:
            raise _SimProblem(str(e)) from None
        response = await self._command(command)
        if not response.final.ok:
            raise _SimProblem(f"SIM refused the PIN ({response.final.info().code})")
        self._refused_pin = None
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
            except CommandTimeout as e:
                self.counters["send_errors"] += 1
                raise SendFailed(_TIMEOUT, maybe_sent=sent_before or e.pdu_written) from None
            except PortLost as e:
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
        try:
            response = await self._port.command(
                command, limit=limit or self._bank.command_timeout, pdu=pdu
            )
        except CommandTimeout as e:
            self.counters["timeouts"] += 1
            log.warning("modem_no_answer", route=self.route, modem=self.name, command=e.name)
            if count_timeout:
                self._timeouts_in_a_row += 1
                if self._timeouts_in_a_row >= self._bank.hang_limit:
                    self._request_reset()
            self._attention.set()  # probe now: one more silence means the modem hangs
            raise
        finally:
            self.progress.set()
        self._timeouts_in_a_row = 0
        return response

    def _request_reset(self) -> None:
        self._reset_requested = True
        self._attention.set()

    def _urcs_put(self, urc: Unsolicited) -> None:
        self._urcs.put_nowait(urc)

    def _attention_set(self) -> None:
        self._attention.set()

    # -- unsolicited ---------------------------------------------------------------------

    async def _urc_worker(self) -> None:
        while True:
            urc = await self._urcs.get()
            try:
                await self._on_urc(urc)
            except (PortLost, CommandTimeout):
                return
            except Exception as e:  # one bad message must not stop the worker
                log.error("modem_urc_failed", route=self.route, modem=self.name, urc=urc.name,
                          error=type(e).__name__)  # fmt: skip

    async def _on_urc(self, urc: Unsolicited) -> None:
        name = urc.name
        if name in ("+CMTI", "+CDSI"):
            index = cmd.parse_storage_index(urc.value)
            if index is not None:
                await self._inbox.read(index)
        elif name in ("+CMT", "+CDS") and urc.pdu is not None:
            await self._inbox.take(urc.pdu)
        elif name in _REG_URCS:
            self.info.registration = cmd.parse_registration(urc.value)
            self._update_network_state()
        elif name == "^RSSI":
            self.info.signal = cmd.parse_rssi_urc(urc.value)
            self._on_change()
        elif self.state is ModemState.READY and (
            name in _BOOT_URCS
            or (name == "+WIND" and urc.value.strip() == "3")
            or (name == "+CPIN" and "READY" not in urc.value.upper())
        ):
            # The modem restarted by itself: initialise it again.
            log.warning("modem_rebooted", route=self.route, modem=self.name, urc=name)
            self._reinit_requested = True
            self._attention.set()

    def _set_state(self, state: ModemState, detail: str) -> None:
        changed = (state, detail) != (self.state, self.detail)
        self.state, self.detail = state, detail
        self.progress.set()
        if changed:
            log.info("modem_state", route=self.route, modem=self.name, state=state.value)
            self._on_change()
