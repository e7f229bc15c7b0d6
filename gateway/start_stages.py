"""What each stage of `smsgw run`'s start cost, from the process's exec to ready.

Wall, CPU (every thread of the process) and CPU wait (the time its threads were ready
to run but had no core: the machine's load, from `/proc/self/task/*/schedstat`) per
stage, logged once as `started` when the gateway is ready. The first stage,
`interpreter_and_imports`, runs from the kernel's start of the process (its `/proc`
start time) to the first mark, so the line covers what a supervisor waits for, not
only what the code after the imports does (issue 16: start-up with 100,000 queued
< 5 s).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field


def seconds_since_exec() -> float:
    """Wall seconds since the kernel started this process; 0.0 without `/proc`."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)


def cpu_wait_seconds() -> float:
    """Seconds the process's threads (those alive now) waited for a core so far."""
    total = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 0.0
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/schedstat", "rb") as f:
                total += int(f.read().split()[1])
        except (OSError, ValueError, IndexError):  # the thread ended meanwhile
            continue
    return total / 1e9


@dataclass
class StartStages:
    """Marks taken at the end of each stage; `mark(name)` closes the stage `name`."""

    stages: list[tuple[str, float, float, float]] = field(default_factory=list)
    _wall: float = field(default_factory=lambda: time.monotonic() - seconds_since_exec())
    _cpu: float = 0.0  # the process's CPU at exec
    _wait: float = 0.0
    _first: float = field(init=False)

    def __post_init__(self) -> None:
        self._first = self._wall

    def mark(self, stage: str) -> None:
        wall, cpu, wait = time.monotonic(), time.process_time(), cpu_wait_seconds()
        self.stages.append((stage, wall - self._wall, cpu - self._cpu, wait - self._wait))
        self._wall, self._cpu, self._wait = wall, cpu, wait

    @property
    def wall_s(self) -> float:
        return self._wall - self._first

    @property
    def cpu_s(self) -> float:
        return self._cpu

    def fields(self) -> dict[str, object]:
        """For the `started` log line: totals, and each stage's [wall, CPU, CPU wait] ms."""
        return {
            "wall_s": round(self.wall_s, 3),
            "cpu_s": round(self.cpu_s, 3),
            "cpu_wait_s": round(self._wait, 3),
            "stages": {
                name: [round(w * 1000), round(c * 1000), round(q * 1000)]
                for name, w, c, q in self.stages
            },
        }
