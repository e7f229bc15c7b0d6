"""The AT command set of the emulated modems (TS 27.007, TS 27.005 in PDU mode, and the
vendor commands of `profiles`), answering in verbose form (ATV1).

Theory of operation. `AtInterpreter.execute_line` takes one command line as the modem
received it (without the final CR). It echoes the line if echo is on, runs each command
of the line (`AT+CMGF=0;+CNMI=2,1,0,1,0` is two) and ends with one final result: OK,
ERROR, or `+CME ERROR`/`+CMS ERROR` in the form AT+CMEE chose (0: plain ERROR, 1:
numeric, 2: verbose text). Information lines go out as `\\r\\n<first>\\r\\n<next>\\r\\n`,
then `\\r\\nOK\\r\\n`, the way modems frame them.

Everything that is not about parsing commands is the host's (`ModemHost`): writing
octets, reading the PDU after the `> ` prompt, what a submit does (latency, records,
status reports), resetting. Settings that a reset forgets live in `Settings`; the SIM
(`emulator_sim`) and the network state outlive it.

Faults a test arms here: `fail_next` replaces the next replies to a command (for AT+CMGS
the reply comes after the PDU, as a network refusal would), and `interleave_next` puts an
unsolicited line after the first line of a command's response (after `> ` for AT+CMGS).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from drivers.modem.emulator_sim import MessageStatus, PinState, SimCard, Storage
from drivers.modem.emulator_syntax import (
    CommandError,
    format_error,
    format_reply,
    ints,
    kind_and_args,
    quoted_values,
    split_commands,
)
from drivers.modem.pdu import PduError, SmsSubmit, decode_submit
from drivers.modem.profiles import ModemProfile

__all__ = [
    "AtInterpreter",
    "CommandError",
    "Failure",
    "Identity",
    "ModemHost",
    "Network",
    "Settings",
    "format_error",
]

_COMMAND = re.compile(r"([+^*$%#][A-Z0-9]+|&[A-Z]|[A-Z])(.*)", re.DOTALL)
REG_COMMANDS = ("+CREG", "+CGREG", "+CEREG")


@dataclass(slots=True)
class Settings:
    """What AT+CFUN=1,1, a power cycle or ATZ puts back."""

    echo: bool = True
    cmee: int = 0
    charset: str = "GSM"
    cnmi: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)
    reg_urc: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REG_COMMANDS, 0))
    cops_format: int = 0
    csms: int = 0
    cpms: tuple[str, str, str] = ("SM", "SM", "SM")
    curc: bool = True  # Huawei ^CURC: periodic unsolicited lines on
    functionality: int = 1
    pin_state: PinState = PinState.READY


@dataclass(slots=True)
class Network:
    operator: str
    signal: int
    registered: bool = True
    numeric: str = "00101"  # MCC/MNC of the test network (TS 23.003 test PLMN)


@dataclass(slots=True)
class Failure:
    prefix: str  # "AT+CMGS"
    reply: str  # "+CMS ERROR: 331"
    times: int


@dataclass(frozen=True, slots=True)
class Identity:
    imei: str
    imsi: str
    iccid: str


class ModemHost(Protocol):
    def write(self, data: bytes) -> None: ...

    async def read_pdu(self) -> str | None:
        """The hex typed after the prompt, up to Ctrl-Z; None if ESC cancelled it."""
        ...

    async def submit(self, sms: SmsSubmit, pdu_hex: str) -> int:
        """Send one part (takes the send latency); the message reference it got."""
        ...

    def after_reset_command(self) -> None:
        """AT+CFUN=1,1 was answered OK: reboot."""
        ...

    def storage_changed(self) -> None:
        """AT+CMGD freed memory."""
        ...


Handler = Callable[[str, str], Awaitable[None]]


class AtInterpreter:
    def __init__(
        self,
        profile: ModemProfile,
        sim: SimCard,
        network: Network,
        identity: Identity,
        host: ModemHost,
        *,
        echo: bool = True,
    ) -> None:
        self.profile = profile
        self.sim = sim
        self.network = network
        self.identity = identity
        self.host = host
        self.default_echo = echo
        self.settings = Settings(echo=echo)
        self.failures: list[Failure] = []
        self.interleaves: list[tuple[str, str]] = []  # (prefix, unsolicited line)
        self._lines_out = 0
        self._pending_interleave: str | None = None
        self._last_stat: int | None = None
        self._handlers: dict[str, Handler] = {
            "E": self._echo,
            "Z": self._reset_settings,
            "&F": self._reset_settings,
            "I": self._identification,
            "V": self._accept,
            "Q": self._accept,
            "+CMEE": self._cmee,
            "+CGMI": self._fixed(lambda: self.profile.manufacturer),
            "+GMI": self._fixed(lambda: self.profile.manufacturer),
            "+CGMM": self._fixed(lambda: self.profile.model),
            "+GMM": self._fixed(lambda: self.profile.model),
            "+CGMR": self._fixed(lambda: self.profile.revision),
            "+GMR": self._fixed(lambda: self.profile.revision),
            "+CGSN": self._fixed(lambda: self.identity.imei),
            "+GSN": self._fixed(lambda: self.identity.imei),
            "+CIMI": self._cimi,
            "+CPIN": self._cpin,
            "+CSQ": self._csq,
            "+COPS": self._cops,
            "+CMGF": self._cmgf,
            "+CSCS": self._cscs,
            "+CNMI": self._cnmi,
            "+CPMS": self._cpms,
            "+CSMS": self._csms,
            "+CMGS": self._cmgs,
            "+CMGR": self._cmgr,
            "+CMGL": self._cmgl,
            "+CMGD": self._cmgd,
            "+CFUN": self._cfun,
            "+CNMA": self._accept,
        }
        for name in REG_COMMANDS:
            self._handlers[name] = self._registration(name)
        iccid_prefix: dict[str, str] = {"+CCID": "+CCID", "+QCCID": "+QCCID", "^ICCID": "^ICCID"}
        iccid_prefix["+CICCID"] = "+ICCID"
        for command in profile.iccid_commands:
            self._handlers[command] = self._iccid(iccid_prefix[command])
        vendor = {"^SYSINFO": self._sysinfo, "^CURC": self._curc, "+QCFG": self._qcfg}
        vendor["+QURCCFG"] = self._qurccfg
        for extra in profile.extra_commands:
            self._handlers[extra] = vendor[extra]

    # ------------------------------------------------------------------ framing

    def boot(self) -> None:
        self.settings = Settings(echo=self.default_echo, pin_state=self.sim.state_at_boot())
        self._last_stat = None

    def urc(self, line: str) -> None:
        self.host.write(f"\r\n{line}\r\n".encode())

    def info(self, line: str) -> None:
        self.host.write((line + "\r\n" if self._lines_out else f"\r\n{line}\r\n").encode())
        self._lines_out += 1
        self._flush_interleave()

    def _flush_interleave(self) -> None:
        if self._pending_interleave is not None:
            line, self._pending_interleave = self._pending_interleave, None
            self.urc(line)
            self._lines_out = 0

    def final(self, line: str) -> None:
        self.host.write(f"\r\n{line}\r\n".encode())

    async def execute_line(self, line: str) -> None:
        if self.settings.echo:
            self.host.write(line.encode("latin-1", "replace") + b"\r")
        text = line.strip()
        if text[:2].upper() != "AT":
            return  # modems ignore what does not start with AT
        try:
            for command in split_commands(text[2:]):
                await self._execute(command)
        except CommandError as error:
            self.final(format_error(error.kind, error.code, self.settings.cmee))
            return
        except _Replied:
            return
        self._flush_interleave()
        self.final("OK")
        if self._reset_requested:
            self._reset_requested = False
            self.host.after_reset_command()

    _reset_requested = False

    async def _execute(self, command: str) -> None:
        self._lines_out = 0
        upper = command.upper()
        self._pending_interleave = self.take_interleave("AT" + upper)
        if not command:
            return
        match = _COMMAND.fullmatch(upper)
        if match is None:
            raise CommandError()
        name, rest = match.group(1), match.group(2)
        handler = self._handlers.get(name)
        if handler is None:
            raise CommandError()
        if name != "+CMGS":
            self.check_failure("AT" + upper)
        await handler(*kind_and_args(rest, command[len(name) :]))

    def check_failure(self, command: str) -> None:
        for failure in self.failures:
            if command.startswith(failure.prefix.upper()):
                failure.times -= 1
                if failure.times <= 0:
                    self.failures.remove(failure)
                self.final(format_reply(failure.reply, self.settings.cmee))
                raise _Replied()

    def take_interleave(self, command: str) -> str | None:
        for entry in self.interleaves:
            if command.startswith(entry[0].upper()):
                self.interleaves.remove(entry)
                return entry[1]
        return None

    # ------------------------------------------------------------------ state

    def registration_stat(self) -> int:
        """+CREG <stat>: 1 registered (home), 2 searching, 0 not searching."""
        if self.settings.functionality != 1 or self.settings.pin_state is not PinState.READY:
            return 0
        return 1 if self.network.registered else 2

    def registration_urcs(self) -> None:
        """Tell the registration change to every +C*REG set to report it."""
        stat = self.registration_stat()
        if stat == self._last_stat:
            return
        self._last_stat = stat
        for name, mode in self.settings.reg_urc.items():
            if mode:
                self.urc(f"{name}: {self._reg_fields(name, mode == 2, stat)}")

    def _reg_fields(self, name: str, location: bool, stat: int) -> str:
        if not location or stat not in (1, 5):
            return str(stat)
        return f'{stat},"1A2B","01C3D4E5",7'

    def _need_sim(self, kind: Literal["CME", "CMS"]) -> None:
        state = self.settings.pin_state
        if state is PinState.SIM_PIN:
            raise CommandError(kind, 11 if kind == "CME" else 311)
        if state is PinState.SIM_PUK:
            raise CommandError(kind, 12 if kind == "CME" else 316)

    def storage(self, which: int) -> Storage:
        return self.sim.storages[self.settings.cpms[which]]

    # ------------------------------------------------------------------ handlers

    def _fixed(self, value: Callable[[], str]) -> Handler:
        async def handler(kind: str, args: str) -> None:
            if kind == "test":
                return
            if kind != "exec":
                raise CommandError()
            self.info(value())

        return handler

    async def _accept(self, kind: str, args: str) -> None:
        return

    async def _echo(self, kind: str, args: str) -> None:
        if args not in ("", "0", "1"):
            raise CommandError()
        self.settings.echo = args == "1"

    async def _reset_settings(self, kind: str, args: str) -> None:
        state = self.settings.pin_state
        self.settings = Settings(echo=self.default_echo, pin_state=state)

    async def _identification(self, kind: str, args: str) -> None:
        for line in (self.profile.manufacturer, self.profile.model, self.profile.revision):
            self.info(line)

    async def _cmee(self, kind: str, args: str) -> None:
        if kind == "read":
            self.info(f"+CMEE: {self.settings.cmee}")
        elif kind == "test":
            self.info("+CMEE: (0-2)")
        elif args in ("0", "1", "2"):
            self.settings.cmee = int(args)
        else:
            raise CommandError("CME", 3)

    async def _cimi(self, kind: str, args: str) -> None:
        self._need_sim("CME")
        if kind == "exec":
            self.info(self.identity.imsi)

    def _iccid(self, prefix: str) -> Handler:
        async def handler(kind: str, args: str) -> None:
            if kind in ("exec", "read"):
                self.info(f"{prefix}: {self.identity.iccid}")

        return handler

    async def _cpin(self, kind: str, args: str) -> None:
        state = self.settings.pin_state
        if kind == "read":
            self.info(f"+CPIN: {state.value}")
            if self.profile.cpin_read_without_ok:
                raise _Replied()  # the model's quirk: no final result
            return
        if kind != "set":
            return
        values = quoted_values(args)
        if state is PinState.READY or self.sim.blocked:
            raise CommandError("CME", 3 if state is PinState.READY else 13)
        if state is PinState.SIM_PIN:
            if not self.sim.try_pin(values[0]):
                if self.sim.pin_attempts == 0:
                    self.settings.pin_state = PinState.SIM_PUK
                raise CommandError("CME", 16)
        elif len(values) < 2 or not self.sim.try_puk(values[0], values[1]):
            raise CommandError("CME", 16)
        self.settings.pin_state = PinState.READY

    def _registration(self, name: str) -> Handler:
        async def handler(kind: str, args: str) -> None:
            mode = self.settings.reg_urc[name]
            if kind == "read":
                stat = self.registration_stat()
                self.info(f"{name}: {mode},{self._reg_fields(name, mode == 2, stat)}")
            elif kind == "test":
                self.info(f"{name}: (0-2)")
            elif args in ("0", "1", "2"):
                self.settings.reg_urc[name] = int(args)
            else:
                raise CommandError("CME", 3)

        return handler

    async def _csq(self, kind: str, args: str) -> None:
        if kind == "test":
            self.info("+CSQ: (0-31,99),(0-7,99)")
        elif kind == "exec":
            self.info(f"+CSQ: {self.network.signal},99")
        else:
            raise CommandError()

    async def _cops(self, kind: str, args: str) -> None:
        net = self.network
        if kind == "read":
            if self.registration_stat() != 1:
                self.info("+COPS: 0")
                return
            fmt = self.settings.cops_format
            name = net.numeric if fmt == 2 else net.operator
            self.info(f'+COPS: 0,{fmt},"{name}",7')
        elif kind == "test":
            self.info(
                f'+COPS: (2,"{net.operator}","{net.operator}","{net.numeric}",7),,(0-4),(0-2)'
            )
        else:
            parts = args.split(",")
            if parts[0] == "3" and len(parts) == 2 and parts[1] in ("0", "1", "2"):
                self.settings.cops_format = int(parts[1])
            elif parts[0] not in ("0", "2"):
                raise CommandError("CME", 3)

    async def _cmgf(self, kind: str, args: str) -> None:
        if kind == "read":
            self.info("+CMGF: 0")
        elif kind == "test":
            self.info("+CMGF: (0)")
        elif args != "0":
            raise CommandError()  # text mode is not emulated: the gateway speaks PDU

    async def _cscs(self, kind: str, args: str) -> None:
        if kind == "read":
            self.info(f'+CSCS: "{self.settings.charset}"')
        elif kind == "test":
            self.info('+CSCS: ("GSM","IRA","UCS2")')
        elif (values := quoted_values(args)) and values[0] in ("GSM", "IRA", "UCS2"):
            self.settings.charset = values[0]
        else:
            raise CommandError("CME", 4)

    async def _cnmi(self, kind: str, args: str) -> None:
        if kind == "read":
            self.info("+CNMI: " + ",".join(map(str, self.settings.cnmi)))
        elif kind == "test":
            self.info("+CNMI: (0-2),(0-3),(0,2),(0-2),(0,1)")
        else:
            values = ints(args)
            limits = (2, 3, 3, 2, 1)
            if (
                not values
                or len(values) > 5
                or any(v > m for v, m in zip(values, limits, strict=False))
            ):
                raise CommandError("CMS", 303)
            padded = (*values, *self.settings.cnmi[len(values) :])
            self.settings.cnmi = (padded[0], padded[1], padded[2], padded[3], padded[4])

    def _cpms_counts(self) -> str:
        storages = [self.storage(i) for i in range(3)]
        return ",".join(f"{len(s.messages)},{s.capacity}" for s in storages)

    async def _cpms(self, kind: str, args: str) -> None:
        self._need_sim("CMS")
        names = sorted(self.sim.storages)
        if kind == "test":
            choice = "(" + ",".join(f'"{n}"' for n in names) + ")"
            self.info(f"+CPMS: {choice},{choice},{choice}")
        elif kind == "read":
            fields = [
                f'"{self.settings.cpms[i]}",{len(self.storage(i).messages)},{self.storage(i).capacity}'
                for i in range(3)
            ]
            self.info("+CPMS: " + ",".join(fields))
        else:
            values = quoted_values(args)
            if not 1 <= len(values) <= 3 or any(v not in self.sim.storages for v in values):
                raise CommandError("CMS", 302)
            chosen = (*values, *self.settings.cpms[len(values) :])
            self.settings.cpms = (chosen[0], chosen[1], chosen[2])
            self.info(f"+CPMS: {self._cpms_counts()}")

    async def _csms(self, kind: str, args: str) -> None:
        if kind == "read":
            self.info(f"+CSMS: {self.settings.csms},1,1,1")
        elif kind == "test":
            self.info("+CSMS: (0,1)")
        elif args in ("0", "1"):
            self.settings.csms = int(args)
            self.info("+CSMS: 1,1,1")
        else:
            raise CommandError("CMS", 303)

    async def _cmgs(self, kind: str, args: str) -> None:
        if kind == "test":
            return
        self._need_sim("CMS")
        if kind != "set" or not args.isdigit() or not 7 <= int(args) <= 164:
            raise CommandError("CMS", 304)
        self.host.write(b"\r\n> ")
        self._flush_interleave()
        pdu = await self.host.read_pdu()
        if pdu is None:
            return  # ESC: nothing is sent and the command ends with OK
        try:
            sms = decode_submit(pdu)
            if (len(pdu.strip()) // 2) - (int(pdu.strip()[:2], 16) + 1) != int(args):
                raise PduError("length does not match")
        except (PduError, ValueError):
            raise CommandError("CMS", 304) from None
        self.check_failure("AT+CMGS")
        if self.registration_stat() != 1:
            raise CommandError("CMS", 331)
        reference = await self.host.submit(sms, pdu.strip().upper())
        self.info(f"+CMGS: {reference}")

    def _index(self, args: str, storage: Storage) -> int:
        if not args.isdigit() or not 1 <= int(args) <= storage.capacity:
            raise CommandError("CMS", 321)
        return int(args)

    async def _cmgr(self, kind: str, args: str) -> None:
        if kind == "test":
            return
        self._need_sim("CMS")
        storage = self.storage(0)
        message = storage.messages.get(self._index(args, storage))
        if message is None:
            if self.profile.empty_read_ok:
                return
            raise CommandError("CMS", 321)
        self.info(f"+CMGR: {message.status.value},,{message.tpdu_length}")
        self.info(message.pdu)
        if message.status is MessageStatus.REC_UNREAD:
            message.status = MessageStatus.REC_READ

    async def _cmgl(self, kind: str, args: str) -> None:
        if kind == "test":
            self.info("+CMGL: (0-4)")
            return
        self._need_sim("CMS")
        if args not in ("", "0", "1", "2", "3", "4"):
            raise CommandError("CMS", 302)
        wanted = int(args or "0")
        for index, message in sorted(self.storage(0).messages.items()):
            if wanted == 4 or message.status.value == wanted:
                self.info(f"+CMGL: {index},{message.status.value},,{message.tpdu_length}")
                self.info(message.pdu)
                if message.status is MessageStatus.REC_UNREAD:
                    message.status = MessageStatus.REC_READ

    async def _cmgd(self, kind: str, args: str) -> None:
        storage = self.storage(0)
        if kind == "test":
            self.info(f"+CMGD: (1-{storage.capacity}),(0-4)")
            return
        self._need_sim("CMS")
        index_text, _, flag_text = args.partition(",")
        flag = int(flag_text) if flag_text.isdigit() else 0
        if flag_text and (not flag_text.isdigit() or flag > 4):
            raise CommandError("CMS", 302)
        storage.delete(self._index(index_text, storage) if flag == 0 else 0, flag)
        self.host.storage_changed()

    async def _cfun(self, kind: str, args: str) -> None:
        if kind == "read":
            self.info(f"+CFUN: {self.settings.functionality}")
        elif kind == "test":
            self.info("+CFUN: (0,1,4),(0-1)")
        elif args in ("1,1", "0,1", "4,1"):
            self._reset_requested = True
        elif args in ("0", "1", "4", "1,0", "0,0", "4,0"):
            self.settings.functionality = int(args[0])
        else:
            raise CommandError("CME", 3)

    async def _sysinfo(self, kind: str, args: str) -> None:
        # ^SYSINFO: srv_status, srv_domain, roam, sys_mode, sim_state, lock, submode
        sim = 1 if self.settings.pin_state is PinState.READY else 255
        if self.registration_stat() == 1:
            self.info(f"^SYSINFO: 2,3,0,5,{sim},,4")
        else:
            self.info(f"^SYSINFO: 0,0,0,0,{sim},,0")

    async def _curc(self, kind: str, args: str) -> None:
        if kind == "read":
            self.info(f"^CURC: {int(self.settings.curc)}")
        elif args in ("0", "1"):
            self.settings.curc = args == "1"
        elif kind != "test":
            raise CommandError()

    async def _qcfg(self, kind: str, args: str) -> None:
        values = args.split(",")
        if kind == "set" and len(values) == 1:
            self.info(f"+QCFG: {values[0]},0")
        elif kind != "set" and kind != "test":
            raise CommandError()

    async def _qurccfg(self, kind: str, args: str) -> None:
        if kind == "set" and args.upper() == '"URCPORT"':
            self.info('+QURCCFG: "urcport","usbat"')


class _Replied(Exception):
    """A fault already wrote the final result."""
