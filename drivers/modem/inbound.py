"""Inbound concatenated SMS held on the modem: parts in, whole messages out, with the
storage indices to delete once the whole message is durable.

Unlike `drivers.smpp.concat.Reassembler`, a completed set is not remembered: a message
whose commit failed stays on the SIM and is read again later, and must complete again.
A part read twice (same storage index, or a rescan) counts once. A set older than
`timeout` is given up and returned as an incomplete text, with a marker per missing
part, so it can be stored rather than lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drivers.smpp.concat import missing_marker

_Key = tuple[str, int, bool, int]  # sender, reference, 16-bit reference, total


@dataclass(frozen=True, slots=True)
class Whole:
    """A message ready to store: its text and the storage indices of its parts."""

    key: _Key = field(repr=False)
    text: str = field(repr=False)
    indices: tuple[int, ...]
    complete: bool = True


@dataclass(slots=True)
class _Set:
    first_seen: float
    parts: dict[int, tuple[str, int | None]] = field(default_factory=dict)


class PartStore:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._sets: dict[_Key, _Set] = {}

    def __len__(self) -> int:
        return len(self._sets)

    def add(
        self,
        sender: str,
        reference: int,
        wide: bool,
        total: int,
        seq: int,
        text: str,
        index: int | None,
        now: float,
    ) -> Whole | None:
        """File a part; the whole message once every part is in."""
        key: _Key = (sender, reference, wide, total)
        entry = self._sets.setdefault(key, _Set(now))
        entry.parts.setdefault(seq, (text, index))
        if len(entry.parts) < total or not all(s in entry.parts for s in range(1, total + 1)):
            return None
        return self._whole(key, entry, complete=True)

    def stored(self, whole: Whole) -> None:
        """The message is durable: forget its set."""
        self._sets.pop(whole.key, None)

    def expired(self, now: float) -> list[Whole]:
        due = [k for k, s in self._sets.items() if s.first_seen + self.timeout <= now]
        return [self._whole(k, self._sets[k], complete=False) for k in due]

    @staticmethod
    def _whole(key: _Key, entry: _Set, *, complete: bool) -> Whole:
        total = key[3]
        text = "".join(
            entry.parts[seq][0] if seq in entry.parts else missing_marker(seq, total)
            for seq in range(1, total + 1)
        )
        indices = tuple(i for _, i in entry.parts.values() if i is not None)
        return Whole(key, text, indices, complete)
