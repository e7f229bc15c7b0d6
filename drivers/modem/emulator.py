"""GSM/LTE modems emulated on pseudo-terminals, for `make run`, the bank's tests and demos.

Theory of operation. An `EmulatedModem` owns a pty pair (`os.openpty`, raw mode). The
master end is the modem: a loop reader appends what the host typed to an input buffer,
and one task (`_serve`) takes a command line at a time from it and hands it to the
`AtInterpreter` (`emulator_commands`), which answers through `write`. The slave end is
the serial port a driver opens: `path`, or a symlink at `link_path` re-pointed on every
replug the way udev re-points `/dev/serial/by-id/`. We keep our own descriptor of the
slave open, so the port stays usable between a driver's close and its next open.

`AT+CMGS=<n>` answers `> ` and reads hex up to Ctrl-Z (ESC cancels). A part takes
`send_latency` on the injected clock, gets the next message reference and is recorded
in `sent`; with TP-SRR set, a status report comes `report_delay` later as `+CDS`
(AT+CNMI ds=1) or stored with `+CDSI` (ds=2; ds=0 stores it quietly). Inbound messages
(`inject_inbound`) are stored with `+CMTI` (mt=1) or sent directly as `+CMT` (mt=2).
While the port is gone or the modem hangs, the network holds inbound messages and
delivers them once the modem answers again; reports that fire then are stored.

Faults. `fail_next` and `interleave_next` are the interpreter's (the latter puts a
vendor notification such as `^CEND` between a +CMGL/+CMGR header and its PDU).
`preload_record` and `inject_record` put a record on the SIM, or deliver one, exactly
as given: real phones' records with FF fill or octets past TP-UDL, undecodable ones,
SMS-SUBMITs saved with status 2/3. `hang` makes the modem
answer nothing (input is lost) until `unhang` or a power cycle (`replug`). `unplug`
closes the master: the open slave reads EIO or EOF and `link_path` disappears; `replug`
opens a new pty, re-points the link and boots (boot lines, settings reset, the SIM and
its messages kept). `unplug_during_next_send` pulls the port after the next PDU was
taken but before `+CMGS` is answered: the part is in `sent` (the network has it), the
driver never hears so. AT+CFUN=1,1 resets as the profile says: the port vanishes for a
moment (USB re-enumeration) or stays and the boot lines come again.

Numbers and texts stay in memory for tests; nothing here logs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Literal

import structlog

from drivers.clock import Clock, SystemClock
from drivers.modem.emulator_commands import AtInterpreter, Failure, Identity, Network
from drivers.modem.emulator_pty import Pty
from drivers.modem.emulator_sim import MessageStatus, SimCard, Storage
from drivers.modem.pdu import (
    Concat,
    EncodedPdu,
    SmsSubmit,
    encode_deliver,
    encode_status_report,
    utc_timestamp,
)
from drivers.modem.profiles import PROFILES, ModemProfile
from drivers.text import is_gsm7

__all__ = ["PROFILES", "EmulatedModem", "ModemBankEmulator", "ModemProfile", "run_forever"]

log = structlog.get_logger("smsgw.modem.emulator")

CTRL_Z = 0x1A
ESC = 0x1B
SHUTDOWN_SECONDS = 0.1  # from answering AT+CFUN=1,1 to going down
SMSC = "+15550100000"  # the service centre the emulated network stamps on inbound PDUs


def _tpdu_length(pdu_hex: str) -> int:
    """The <length> a modem announces: the octets after the SMSC field."""
    try:
        smsc = int(pdu_hex[:2], 16)
    except ValueError:
        smsc = 0
    return max(0, len(pdu_hex) // 2 - smsc - 1)


class _PoweredOff(Exception):
    """The port was pulled in the middle of a command."""


class EmulatedModem:
    """One modem of `profile` on a pty. See the module docstring for the behaviour."""

    def __init__(
        self,
        profile: str = "quectel-ec25",
        *,
        clock: Clock | None = None,
        link_path: Path | None = None,
        imei: str = "352099001761481",
        imsi: str = "001010123456789",
        iccid: str = "8988211000000000017",
        operator: str = "Emulated",
        signal: int = 20,
        pin: str | None = None,
        send_latency: float = 3.0,
        report_delay: float = 2.0,
        report_status: int = 0,
        echo: bool = True,
        periodic_urcs: bool = True,
        first_message_ref: int = 0,
        seed: int | None = None,
    ) -> None:
        self.profile_name = profile
        self.profile = PROFILES[profile]
        self.clock: Clock = clock or SystemClock()
        self.link_path = link_path
        self.send_latency = send_latency
        self.report_delay = report_delay
        self.report_status = report_status
        self.periodic_urcs = periodic_urcs
        storages = {name: Storage(size) for name, size in self.profile.storage_sizes.items()}
        self.sim = SimCard(pin=pin, storages=storages)
        self.network = Network(operator=operator, signal=signal)
        self.at = AtInterpreter(
            self.profile, self.sim, self.network, Identity(imei, imsi, iccid), self, echo=echo
        )
        self.sent: list[SmsSubmit] = []
        self.sent_refs: list[int] = []  # the message reference +CMGS answered for each part
        self.reports_sent = 0
        self._next_ref = first_message_ref % 256
        self._next_concat_ref = 1
        self._random = random.Random(seed)  # noqa: S311 - part order in tests, not secrets
        self._pty: Pty | None = None
        self._input = bytearray()
        self._input_changed = asyncio.Event()
        self._sent_changed = asyncio.Event()
        self._plug_changed = asyncio.Event()
        self._hung = False
        self._booting = False
        self._unplug_on_send: float | Literal[False] | None = False
        self._held: list[EncodedPdu] = []  # inbound the network could not deliver yet
        self._port_tasks: set[asyncio.Task[None]] = set()  # end with the port
        self._tasks: set[asyncio.Task[None]] = set()  # network side: outlive the port
        self._periodic: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ life cycle

    @property
    def path(self) -> str:
        """The tty to open: `link_path` if given, else the pty slave (/dev/pts/N)."""
        if self.link_path is not None:
            return str(self.link_path)
        if self._pty is None:
            raise RuntimeError("the modem is not plugged in")
        return self._pty.name

    @property
    def plugged(self) -> bool:
        return self._pty is not None

    async def wait_plugged(self, plugged: bool = True) -> None:
        """Return once the port is there (or, with False, gone)."""
        while self.plugged != plugged:
            self._plug_changed.clear()
            await self._plug_changed.wait()

    async def start(self) -> None:
        await self._power_on()

    async def aclose(self) -> None:
        tasks = [*self._tasks, *self._port_tasks]
        self._power_off()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> EmulatedModem:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _power_on(self) -> None:
        if self._pty is not None:
            return
        self._hung = False
        self._input.clear()
        self._pty = Pty(self._received)
        if self.link_path is not None:
            temporary = self.link_path.with_name(self.link_path.name + ".new")
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            temporary.symlink_to(self._pty.name)
            temporary.replace(self.link_path)
        log.info("modem_plugged", profile=self.profile_name)
        self._plug_changed.set()
        self._spawn(self._serve(), port=True)
        self._boot()

    def _boot(self) -> None:
        self.at.boot()
        cpin = self.at.settings.pin_state.value
        for line in self.profile.boot_urcs:
            self.at.urc(line.replace("{cpin}", cpin))
        for task in self._periodic:
            task.cancel()
        if self.periodic_urcs:
            self._periodic = [
                self._spawn(self._repeat(periodic.text, periodic.interval), port=True)
                for periodic in self.profile.periodic_urcs
            ]
        self._flush_held()

    def _power_off(self) -> None:
        if self._pty is None:
            return
        current = asyncio.current_task()
        for task in list(self._port_tasks):
            if task is not current:
                task.cancel()
        self._pty.close()
        self._pty = None
        self._booting = False
        if self.link_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link_path.unlink()
        log.info("modem_unplugged", profile=self.profile_name)
        self._plug_changed.set()

    async def unplug(self) -> None:
        """Pull the USB plug: the open slave gets EIO/EOF, `link_path` goes away."""
        self._power_off()
        await asyncio.sleep(0)  # let cancelled port tasks finish

    async def replug(self) -> None:
        """Plug it back: a new pty (and link), a fresh boot, the SIM as it was."""
        self._power_off()
        await self._power_on()

    def _spawn(self, coroutine: Coroutine[Any, Any, None], *, port: bool) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coroutine)
        group = self._port_tasks if port else self._tasks
        group.add(task)
        task.add_done_callback(group.discard)
        return task

    # ------------------------------------------------------------------ octets

    def _received(self, data: bytes) -> None:
        if self._hung or self._booting:
            return  # a hung modem loses what it is sent
        self._input += data
        self._input_changed.set()

    def write(self, data: bytes) -> None:
        if self._pty is not None and not self._hung:
            self._pty.write(data)

    async def _wait_input(self, stop: Callable[[], int]) -> int:
        while (position := stop()) < 0:
            self._input_changed.clear()
            await self._input_changed.wait()
        return position

    async def _serve(self) -> None:
        while True:
            end = await self._wait_input(lambda: self._input.find(b"\r"))
            line = self._input[:end].decode("latin-1").lstrip("\n")
            del self._input[: end + 1]
            try:
                await self.at.execute_line(line)
            except _PoweredOff:
                return

    async def read_pdu(self) -> str | None:
        end = await self._wait_input(
            lambda: min(
                (i for i in (self._input.find(CTRL_Z), self._input.find(ESC)) if i >= 0), default=-1
            )
        )
        typed, terminator = bytes(self._input[:end]), self._input[end]
        del self._input[: end + 1]
        if self.at.settings.echo:
            self.write(typed)
        if terminator == ESC:
            return None
        return typed.decode("latin-1").strip()

    # ------------------------------------------------------------------ sending

    async def submit(self, sms: SmsSubmit, pdu_hex: str) -> int:
        reference = self._next_ref
        self._next_ref = (self._next_ref + 1) % 256
        unplug_after = self._unplug_on_send
        if unplug_after is not False:
            self._unplug_on_send = False
            self._record(sms, reference)
            self._power_off()
            if unplug_after is not None:
                self._spawn(self._replug_after(unplug_after), port=False)
            raise _PoweredOff()
        await self.clock.sleep(self.send_latency)
        self._record(sms, reference)
        return reference

    def _record(self, sms: SmsSubmit, reference: int) -> None:
        self.sent.append(sms)
        self.sent_refs.append(reference)
        self._sent_changed.set()
        if sms.request_report:
            self._spawn(self._report_later(reference, sms.to, self.clock.time()), port=False)

    async def _replug_after(self, seconds: float) -> None:
        await self.clock.sleep(seconds)
        await self._power_on()

    async def wait_sent(self, count: int, timeout: float = 5) -> None:  # noqa: ASYNC109 - a test helper's guard
        """Return once `count` parts were sent; TimeoutError after `timeout` real seconds."""
        async with asyncio.timeout(timeout):
            while len(self.sent) < count:
                self._sent_changed.clear()
                await self._sent_changed.wait()

    async def _report_later(self, reference: int, recipient: str, submitted: float) -> None:
        await self.clock.sleep(self.report_delay)
        report = encode_status_report(
            message_ref=reference,
            recipient=recipient,
            status=self.report_status,
            submitted=utc_timestamp(submitted),
            discharged=utc_timestamp(self.clock.time()),
            smsc=SMSC,
        )
        self.reports_sent += 1
        ds = self.at.settings.cnmi[3]
        if ds == 1 and self._answering():
            self.at.urc(f"+CDS: {report.tpdu_length}\r\n{report.hex}")
            return
        index = self.at.storage(2).put(report.hex, report.tpdu_length, MessageStatus.REC_UNREAD)
        if index is not None and ds == 2 and self._answering():
            self.at.urc(f'+CDSI: "{self.at.settings.cpms[2]}",{index}')

    # ------------------------------------------------------------------ inbound

    def inject_inbound(
        self,
        sender: str,
        text: str,
        *,
        encoding: Literal["gsm7", "ucs2"] = "gsm7",
        parts: int = 1,
        store: bool = True,
        order: Sequence[int] | Literal["shuffle"] | None = None,
    ) -> None:
        """A message from `sender` arrives, split into `parts` concatenated parts that
        come in `order` (part indexes from 0; "shuffle": a random order). With `store`
        False every part comes as +CMT whatever AT+CNMI says."""
        pdus = self._deliver_pdus(sender, text, encoding, parts)
        if order == "shuffle":
            self._random.shuffle(pdus)
        elif order is not None:
            pdus = [pdus[i] for i in order]
        for pdu in pdus:
            if not self._deliver(pdu, store):
                self._held.append(pdu)

    def preload_sim(self, sender: str, text: str) -> int:
        """A message already on the SIM (unread) before start; its index."""
        (pdu,) = self._deliver_pdus(sender, text, "gsm7" if is_gsm7(text) else "ucs2", 1)
        index = self.sim.storages["SM"].put(pdu.hex, pdu.tpdu_length, MessageStatus.REC_UNREAD)
        if index is None:
            raise ValueError("the SIM is full")
        return index

    def preload_record(self, pdu_hex: str, status: MessageStatus = MessageStatus.REC_UNREAD) -> int:
        """A record exactly as given (a real phone's dump: FF fill, octets past TP-UDL,
        a saved SMS-SUBMIT with status 2 or 3) already on the SIM; its index."""
        index = self.sim.storages["SM"].put(pdu_hex, _tpdu_length(pdu_hex), status)
        if index is None:
            raise ValueError("the SIM is full")
        return index

    def inject_record(self, pdu_hex: str, *, store: bool = True) -> None:
        """A record exactly as given arrives from the network (+CMTI or +CMT)."""
        pdu = EncodedPdu(pdu_hex, _tpdu_length(pdu_hex))
        if not self._deliver(pdu, store):
            self._held.append(pdu)

    @property
    def sim_messages(self) -> dict[int, str]:
        """What the SIM stores now: index -> PDU hex (SMSC field included)."""
        return {i: m.pdu for i, m in sorted(self.sim.storages["SM"].messages.items())}

    def _deliver_pdus(
        self, sender: str, text: str, encoding: Literal["gsm7", "ucs2"], parts: int
    ) -> list[EncodedPdu]:
        if not 1 <= parts <= max(1, len(text)) or parts > 255:
            raise ValueError("parts must be between 1 and the length of the text")
        chunks = [text[len(text) * i // parts : len(text) * (i + 1) // parts] for i in range(parts)]
        reference = self._next_concat_ref
        self._next_concat_ref = self._next_concat_ref % 255 + 1
        stamp = utc_timestamp(self.clock.time())
        return [
            encode_deliver(
                sender=sender,
                text=chunk,
                encoding=encoding,
                timestamp=stamp,
                concat=Concat(reference, parts, seq) if parts > 1 else None,
                smsc=SMSC,
            )
            for seq, chunk in enumerate(chunks, start=1)
        ]

    def _answering(self) -> bool:
        return self._pty is not None and not self._hung and not self._booting

    def _deliver(self, pdu: EncodedPdu, store: bool) -> bool:
        """Hand one part to the modem; False if it cannot take it now."""
        if not self._answering():
            return False
        mt = self.at.settings.cnmi[1]
        if not store or mt == 2:
            between = self.at.take_interleave("+CMT")
            lines = [f"+CMT: ,{pdu.tpdu_length}", *([between] if between else []), pdu.hex]
            self.at.urc("\r\n".join(lines))
            return True
        index = self.at.storage(2).put(pdu.hex, pdu.tpdu_length, MessageStatus.REC_UNREAD)
        if index is None:
            return False  # memory full: the network keeps it and tries again
        if mt in (1, 3):
            self.at.urc(f'+CMTI: "{self.at.settings.cpms[2]}",{index}')
        return True

    def _flush_held(self) -> None:
        held, self._held = self._held, []
        for pdu in held:
            if not self._deliver(pdu, True):
                self._held.append(pdu)

    def storage_changed(self) -> None:
        """Memory was freed (AT+CMGD): the network retries what it holds, after the OK."""
        if self._held:
            asyncio.get_running_loop().call_soon(self._flush_held)

    # ------------------------------------------------------------------ faults

    def fail_next(self, command_prefix: str, reply: str, times: int = 1) -> None:
        """The next `times` commands starting with `command_prefix` get `reply` (worded
        per AT+CMEE) instead of their answer; for AT+CMGS after the PDU was typed."""
        self.at.failures.append(Failure(command_prefix, reply, times))

    def interleave_next(self, command_prefix: str, urc: str) -> None:
        """Put `urc` after the first line of the next such command's response (after
        the `> ` prompt for AT+CMGS); with "+CMT", between the next +CMT and its PDU."""
        self.at.interleaves.append((command_prefix, urc))

    def set_registered(self, registered: bool) -> None:
        """Lose or regain the network: +C*REG stat 2 or 1, AT+CMGS gets +CMS ERROR: 331."""
        self.network.registered = registered
        if self._answering():
            self.at.registration_urcs()

    def set_signal(self, signal: int) -> None:
        self.network.signal = signal

    def hang(self) -> None:
        """Stop answering anything, and lose what is sent, until `unhang` or `replug`."""
        self._hung = True
        self._input.clear()

    def unhang(self) -> None:
        self._hung = False
        self._flush_held()

    def unplug_during_next_send(self, replug_after: float | None = None) -> None:
        """After the next PDU is typed, the port vanishes before +CMGS is answered; it
        comes back `replug_after` seconds later (clock) if given, else on `replug()`."""
        self._unplug_on_send = replug_after

    def after_reset_command(self) -> None:
        self._spawn(self._reset(), port=False)

    async def _reset(self) -> None:
        await self.clock.sleep(SHUTDOWN_SECONDS)  # the OK gets out before the port goes
        if self.profile.reset_drops_port:
            self._power_off()
            await self.clock.sleep(self.profile.reset_seconds)
            await self._power_on()
            return
        self._booting = True
        self._input.clear()
        await self.clock.sleep(self.profile.reset_seconds)
        self._booting = False
        if self._pty is not None:
            self._boot()

    async def _repeat(self, text: str, interval: float) -> None:
        while True:
            await self.clock.sleep(interval)
            if self._answering() and self.at.settings.curc:
                self.at.urc(text.replace("{signal}", str(self.network.signal)))


class ModemBankEmulator:
    """`count` emulated modems, profiles cycled, each with its own identity; with
    `link_dir`, each port also appears there as `modem-<n>` (a by-id style symlink)."""

    def __init__(
        self,
        count: int,
        *,
        profiles: Sequence[str] = tuple(PROFILES),
        link_dir: Path | None = None,
        clock: Clock | None = None,
        send_latency: float = 3.0,
        report_delay: float = 2.0,
        **modem_options: object,
    ) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        self.modems = [
            EmulatedModem(
                profiles[i % len(profiles)],
                clock=clock,
                link_path=None if link_dir is None else link_dir / f"modem-{i + 1}",
                imei=f"35209900176{i + 1:04d}",
                imsi=f"00101000000{i + 1:04d}",
                iccid=f"898821100000{i + 1:07d}",
                send_latency=send_latency,
                report_delay=report_delay,
                first_message_ref=i * 40,
                **modem_options,  # type: ignore[arg-type]  # the EmulatedModem keywords
            )
            for i in range(count)
        ]

    @property
    def paths(self) -> list[str]:
        return [modem.path for modem in self.modems]

    async def start(self) -> None:
        for modem in self.modems:
            await modem.start()

    async def aclose(self) -> None:
        for modem in self.modems:
            await modem.aclose()

    async def __aenter__(self) -> ModemBankEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def run_forever(
    count: int,
    link_dir: Path | None = None,
    *,
    profiles: Sequence[str] = tuple(PROFILES),
    send_latency: float = 3.0,
    on_ready: Callable[[ModemBankEmulator], None] | None = None,
) -> None:
    """Run a bank until cancelled (`smsgw simulate modem`); `link_dir` must exist.

    No worker thread here: `asyncio.run` catches Ctrl-C with a plain signal handler (no
    wake-up fd), so a SIGINT the kernel hands to an idle worker thread would leave the
    loop asleep in epoll and the first Ctrl-C lost."""
    bank = ModemBankEmulator(count, profiles=profiles, link_dir=link_dir, send_latency=send_latency)
    async with bank:
        if on_ready is not None:
            on_ready(bank)
        await asyncio.Event().wait()
