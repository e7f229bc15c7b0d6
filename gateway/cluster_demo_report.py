"""The carrier's record against what the gateways accepted, for `smsgw demo-cluster`.

Printed when the demo stops. The simulated carrier's submits come from its in-memory
`submitted` and `submit_log` (which node sent each: the bind's system_type); the
gateways' side from the shared PostgreSQL: every message accepted, its state, its
`possible_duplicate` flag, and `carrier_ids` (the carrier's id of each submit a node
recorded). A submit is tied to a message by its carrier id; one that no node recorded
(a node killed between the submit and its commit) by recipient and text to a submit
that was recorded. A message the carrier got more than once per part is a duplicate,
and shown with whether the gateways flagged it. Only counts, node names and message ids
are printed: never a number or a text.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from drivers.smpp.sim_records import SubmitRecord, SubmittedMessage

ROUTE = "carrier"


@dataclass(frozen=True)
class Accepted:
    id: str
    state: str
    segments: int
    possible_duplicate: bool


@dataclass
class Record:
    accepted: list[Accepted]
    submits_by_node: Counter[str] = field(default_factory=Counter)
    refused_by_node: Counter[str] = field(default_factory=Counter)
    duplicates: dict[str, list[str]] = field(default_factory=dict)  # message id -> nodes
    unmatched: int = 0  # submits tied to no accepted message
    peak_second: int = 0  # the most submits the carrier took in any 1 s window

    def lines(self, cap: float | None) -> list[str]:
        states = Counter(a.state for a in self.accepted)
        flagged = {a.id for a in self.accepted if a.possible_duplicate}
        out = ["", "The carrier's record (the SMSC simulator) against what the gateways accepted:"]
        nodes = sorted(set(self.submits_by_node) | set(self.refused_by_node))
        for node in nodes:
            refused = self.refused_by_node[node]
            more = f", {refused} refused (throttled)" if refused else ""
            out.append(f"  submits from {node}: {self.submits_by_node[node]}{more}")
        if not nodes:
            out.append("  no submit reached the carrier")
        shown = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none"
        out.append(f"  messages accepted: {len(self.accepted)} ({shown})")
        waiting = states["queued"] + states["sending"] + states["scheduled"]
        if waiting:
            out.append(f"  not sent yet when stopped: {waiting} (still in the shared queue)")
        if cap is not None:
            out.append(
                f"  busiest second at the carrier: {self.peak_second} submits"
                f" (the shared account's cap: {cap:g}/s plus its burst)"
            )
        if self.unmatched:
            out.append(f"  submits tied to no accepted message: {self.unmatched}")
        if not self.duplicates:
            out.append(f"  duplicates at the carrier: none ({len(flagged)} flagged possible)")
            return out
        out.append(f"  duplicates at the carrier: {len(self.duplicates)}")
        for mid, senders in sorted(self.duplicates.items()):
            mark = "flagged possible_duplicate" if mid in flagged else "NOT FLAGGED"
            out.append(f"    {mid}: sent by {', '.join(senders)} ({mark})")
        return out


def carrier_record(
    accepted: Sequence[Accepted],
    carrier_ids: dict[str, str],
    submitted: Sequence[SubmittedMessage],
    log: Sequence[SubmitRecord],
) -> Record:
    """`carrier_ids`: the carrier's id -> message id, as the nodes recorded them (route
    `carrier`). `submitted` and `log` are the simulator's, `log` one entry a submit
    (refused ones too), `submitted` one per accepted submit, in the same order."""
    record = Record(list(accepted))
    accepted_log = [r for r in log if r.status == 0]
    for r in log:
        (record.submits_by_node if r.status == 0 else record.refused_by_node)[r.system_type] += 1
    record.peak_second = _peak_second([r.at for r in accepted_log])
    known = {a.id: a for a in accepted}
    by_content: dict[tuple[str, str], str] = {}
    for s in submitted:
        mid = carrier_ids.get(s.message_id)
        if mid is not None:
            by_content.setdefault((s.destination, s.text), mid)
    sends: dict[str, list[str]] = defaultdict(list)  # message id -> the node of each submit
    for s, r in zip(submitted, accepted_log, strict=False):
        mid = carrier_ids.get(s.message_id) or by_content.get((s.destination, s.text))
        if mid is None or mid not in known:
            record.unmatched += 1
            continue
        sends[mid].append(r.system_type)
    record.duplicates = {
        mid: nodes for mid, nodes in sends.items() if len(nodes) > max(known[mid].segments, 1)
    }
    return record


def _peak_second(times: list[float]) -> int:
    peak, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= 1.0:
            start += 1
        peak = max(peak, end - start + 1)
    return peak
