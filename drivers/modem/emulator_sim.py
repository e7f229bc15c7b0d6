"""The emulated SIM: PIN/PUK state with its attempt counters, and message storages.

This outlives a modem reboot or a replug, as a real SIM does: stored messages stay, and
a wrong PIN counts until the PUK. Pure state, no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = ["PIN_ATTEMPTS", "PUK_ATTEMPTS", "MessageStatus", "SimCard", "Storage", "StoredMessage"]

PIN_ATTEMPTS = 3
PUK_ATTEMPTS = 10


class MessageStatus(enum.IntEnum):
    """<stat> of AT+CMGL/+CMGR in PDU mode (TS 27.005 3.1)."""

    REC_UNREAD = 0
    REC_READ = 1
    STO_UNSENT = 2
    STO_SENT = 3


@dataclass(slots=True)
class StoredMessage:
    pdu: str  # hex, SMSC field included
    tpdu_length: int
    status: MessageStatus


@dataclass(slots=True)
class Storage:
    """One message memory ("SM" on the SIM, "ME" in the modem), indexes from 1."""

    capacity: int
    messages: dict[int, StoredMessage] = field(default_factory=dict)

    def free_index(self) -> int | None:
        return next((i for i in range(1, self.capacity + 1) if i not in self.messages), None)

    def put(self, pdu: str, tpdu_length: int, status: MessageStatus) -> int | None:
        index = self.free_index()
        if index is not None:
            self.messages[index] = StoredMessage(pdu, tpdu_length, status)
        return index

    def delete(self, index: int, flag: int) -> None:
        """AT+CMGD: flag 0 that index; 1 all read; 2 read and sent; 3 and unsent; 4 all."""
        if flag == 0:
            self.messages.pop(index, None)
            return
        doomed = {
            1: {MessageStatus.REC_READ},
            2: {MessageStatus.REC_READ, MessageStatus.STO_SENT},
            3: {MessageStatus.REC_READ, MessageStatus.STO_SENT, MessageStatus.STO_UNSENT},
        }.get(flag, set(MessageStatus))
        for i in [i for i, m in self.messages.items() if m.status in doomed]:
            del self.messages[i]


class PinState(enum.StrEnum):
    READY = "READY"
    SIM_PIN = "SIM PIN"
    SIM_PUK = "SIM PUK"


@dataclass(slots=True)
class SimCard:
    pin: str | None
    puk: str = "12345678"
    pin_attempts: int = PIN_ATTEMPTS
    puk_attempts: int = PUK_ATTEMPTS
    blocked: bool = False  # PUK tries used up: the SIM is dead
    storages: dict[str, Storage] = field(default_factory=dict)

    def state_at_boot(self) -> PinState:
        if self.pin is None:
            return PinState.READY
        return PinState.SIM_PUK if self.pin_attempts == 0 else PinState.SIM_PIN

    def try_pin(self, candidate: str) -> bool:
        if self.pin_attempts == 0:
            return False
        if candidate == self.pin:
            self.pin_attempts = PIN_ATTEMPTS
            return True
        self.pin_attempts -= 1
        return False

    def try_puk(self, candidate: str, new_pin: str) -> bool:
        if self.puk_attempts == 0:
            return False
        if candidate == self.puk:
            self.pin, self.pin_attempts, self.puk_attempts = new_pin, PIN_ATTEMPTS, PUK_ATTEMPTS
            return True
        self.puk_attempts -= 1
        self.blocked = self.puk_attempts == 0
        return False
