"""Inbound concatenated SMS, the pure part: how the texts of a set's parts become one.

Drivers hand the gateway every part as it arrives (`drivers.base.InboundPart`); the
store holds them (`gateway.store.inbound_parts`) and joins a set here once it is whole,
or, when the reassembly timeout has passed, joins what came with a marker where each
missing part belongs, so the message is stored flagged incomplete rather than lost.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["join_parts", "missing_marker"]


def missing_marker(seq: int, total: int) -> str:
    """What stands in an incomplete text where part `seq` of `total` is missing."""
    return f"[part {seq} of {total} missing]"


def join_parts(texts: Mapping[int, str], total: int) -> str:
    """The texts of parts 1..total in order, a marker for each one absent.

    A part present with an empty text stays empty: only an absent one is marked.
    """
    return "".join(
        texts[seq] if seq in texts else missing_marker(seq, total) for seq in range(1, total + 1)
    )
